"""Timed executor operations: the raw timings the runtime's framework overheads are fitted to.

Every function times one thing the executor does with real models (built by
`planner.executor.build`): a training step, the GKD loss, clipping + an AdamW step, FSDP2
forwards, DDP's gradient sync, a pipelined teacher forward, an on-policy generation. They return
seconds only; what the seconds mean is the compiled cost model's business (`planner.calibrate.cases`
builds the matching layouts, `planner.calibrate.fit` fits the knobs through them).
"""

from __future__ import annotations

import contextlib
import os

from planner.calibrate.hardware import cache_flusher, spawn_world, timeit


def widened(shape):
    """The same model at twice the width (hidden, heads, MLP): per-unit bytes about 4x."""
    return shape.model_copy(update={"name": shape.name + "-x2", "hidden": 2 * shape.hidden, "ffn": 2 * shape.ffn,
                                    "num_heads": 2 * shape.num_heads, "num_kv_heads": 2 * shape.kv_heads})


def _sync(device: str):
    import torch

    return torch.cuda.synchronize if device == "cuda" else (lambda: None)


def train_steps(shape, device: str, sizes: list[tuple[int, int]], reps: int = 3, dtype: str = "fp32") -> dict[str, float]:
    """Seconds of a training step (forward + backward, logits over every position) of a real model
    of `shape` at each (batch, sequence), keyed "BxS"; on a CPU the caches are swept before each."""
    import torch

    from planner.executor.build import build_model

    model = build_model(shape.name, shape, "fp32", seed=0).to(device)  # fp32 weights, as the executor holds them
    model.train()
    amp = torch.autocast(device, dtype={"bf16": torch.bfloat16, "fp16": torch.float16}[dtype]) if dtype != "fp32" else contextlib.nullcontext()
    out = {}
    for b, s in sizes:
        ids = torch.randint(0, shape.vocab, (b, s), device=device)

        def step():
            with amp:
                loss = model(input_ids=ids).logits.float().sum()
            loss.backward()

        out[f"{b}x{s}"] = timeit(step, _sync(device), reps, cache_flusher(device))
    return out


def loss_calls(vocab: int, device: str, sizes: list[tuple[int, int]], reps: int = 7) -> dict[str, float]:
    """Seconds of the executor's generalized JSD, forward + backward, over [b, s, vocabulary], keyed "BxS"."""
    import torch

    from planner.executor.loss import generalized_jsd

    out = {}
    for b, s in sizes:
        student = torch.randn(b, s, vocab, device=device, requires_grad=True)
        teacher = torch.randn(b, s, vocab, device=device)
        labels = torch.ones(b, s, dtype=torch.long, device=device)

        def step():
            generalized_jsd(student, teacher, labels, 0.5, 1.0, None).backward()

        out[f"{b}x{s}"] = timeit(step, _sync(device), reps, cache_flusher(device))
    return out


def optimizer_step(shape, device: str, reps: int = 7) -> float:
    """Seconds of gradient clipping + an AdamW step over a real model of `shape`."""
    import torch

    from planner.executor.build import build_model

    model = build_model(shape.name, shape, "fp32", seed=0).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.grad = torch.zeros_like(p)
    opt = torch.optim.AdamW(params, lr=1e-4)

    def step():
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()

    return timeit(step, _sync(device), reps)


def generations(shape, device: str, sizes: list[tuple[int, int, int]], reps: int = 3, dtype: str = "fp32") -> dict[str, float]:
    """Seconds of the executor's on-policy generation (`planner.executor.generate`: prefill, then one
    decode step per token with a KV cache) of b completions of c tokens after p-token prompts, keyed "Bxp+c"."""
    import torch

    from planner.executor.build import build_model
    from planner.executor.data import Batch
    from planner.executor.generate import generate

    model = build_model(shape.name, shape, "fp32", seed=0).to(device).eval()
    amp = torch.autocast(device, dtype={"bf16": torch.bfloat16, "fp16": torch.float16}[dtype]) if dtype != "fp32" else contextlib.nullcontext()
    out = {}
    for b, p, c in sizes:
        ids = torch.randint(0, shape.vocab, (b, p + c), device=device)
        batch = Batch(ids, torch.ones_like(ids), ids[:, p:])

        def run():
            with amp:
                generate(model, batch, p, 1.0, 0)

        out[f"{b}x{p}+{c}"] = timeit(run, _sync(device), reps, cache_flusher(device))
    return out


def _init(rank: int, world: int, port: int, threads: int) -> None:
    import torch
    import torch.distributed as dist

    torch.set_num_threads(threads)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)


def _fsdp_worker(rank: int, world: int, port: int, shapes: list, sizes: list[tuple[int, int]], threads: int, out) -> None:
    import torch
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    from planner.executor.build import build_model

    _init(rank, world, port, threads)
    mesh = init_device_mesh("cpu", (world,))
    results, optim = [], None
    for shape in shapes:
        model = build_model(shape.name, shape, "fp32", seed=0).eval()
        batches = [torch.randint(0, shape.vocab, (b, s)) for b, s in sizes]

        def forward_all():
            with torch.no_grad():
                for ids in batches:
                    model(input_ids=ids)
                    if hasattr(model, "reshard"):
                        model.reshard()

        dist.barrier()
        plain = timeit(forward_all, dist.barrier, 9)
        for layer in model.model.layers:
            fully_shard(layer, mesh=mesh)
        fully_shard(model, mesh=mesh)
        dist.barrier()
        results.append({"plain": plain, "sharded": timeit(forward_all, dist.barrier, 9), "passes": len(sizes)})
        if optim is None:  # the model's own shape: clip + AdamW step on its sharded (DTensor) parameters
            params = list(model.parameters())
            for q in params:
                q.grad = torch.zeros_like(q)
            opt = torch.optim.AdamW(params, lr=1e-4)

            def step():
                norm = torch.nn.utils.clip_grad_norm_(params, 1.0)
                norm.full_tensor() if hasattr(norm, "full_tensor") else norm
                opt.step()

            optim = timeit(step, dist.barrier, 7)
    if rank == 0:
        out.put((results, optim))
    dist.destroy_process_group()


def fsdp_forwards(shape, world: int, threads: int, seq: int = 64) -> tuple[dict, float]:
    """FSDP2 over `world` CPU processes: forwards of a real model of `shape` and of its widened copy
    (keys "x1", "x2"), each unsharded and sharded per layer ({plain, sharded, passes} seconds), and
    the seconds of clip + AdamW on the sharded parameters of `shape`."""
    results, optim = spawn_world(_fsdp_worker, world, [shape, widened(shape)], [(1, seq), (2, seq)], threads)
    return dict(zip(("x1", "x2"), results)), optim


def _ddp_worker(rank: int, world: int, port: int, shapes: list, seq: int, threads: int, out) -> None:
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    from planner.executor.build import build_model

    _init(rank, world, port, threads)
    flush = cache_flusher("cpu")
    results = []
    for shape in shapes:
        model = DDP(build_model(shape.name, shape, "fp32", seed=0).train())
        ids = torch.randint(0, shape.vocab, (2, seq))

        def micro_step():
            model(input_ids=ids, logits_to_keep=seq // 2 + 1).logits.sum().backward()

        def unsynced():
            with model.no_sync():
                micro_step()

        dist.barrier()
        results.append({"unsynced": timeit(unsynced, dist.barrier, 11, flush), "synced": timeit(micro_step, dist.barrier, 11, flush)})
    if rank == 0:
        out.put(results)
    dist.destroy_process_group()


def ddp_micro_steps(shape, world: int, threads: int, seq: int = 64) -> dict:
    """A training micro-step under DDP over `world` CPU processes, without and with the gradient
    sync, for `shape` and its widened copy (keys "x1", "x2"): {unsynced, synced} seconds."""
    return dict(zip(("x1", "x2"), spawn_world(_ddp_worker, world, [shape, widened(shape)], seq, threads)))


def _pipeline_worker(rank: int, world: int, port: int, shape, seq: int, batches: list[int], threads: int, out) -> None:
    import torch
    import torch.distributed as dist

    from planner.executor.build import build_model
    from planner.executor.data import Batch
    from planner.executor.teacher import Pipelined

    _init(rank, world, port, threads)
    group = dist.new_group(list(range(world)))
    piped = {}
    for b in batches:
        pipe = Pipelined(build_model(shape.name, shape, "fp32", seed=0).eval(), torch.device("cpu"), seq // 2, group, list(range(world)), b,
                         seq - seq // 2)
        ids = torch.randint(0, shape.vocab, (b, seq))
        batch = Batch(ids, torch.ones_like(ids), ids[:, seq // 2:])
        dist.barrier()
        piped[str(b)] = timeit(lambda: pipe.request(batch)(), dist.barrier, 9)
    if rank == 0:
        out.put(piped)
    dist.destroy_process_group()


def pipelined_forwards(shape, world: int, threads: int, seq: int = 64, batches: tuple[int, ...] = (1, 3)) -> dict:
    """The executor's forward-only pipelined teacher over `world` CPU processes, b samples per rank:
    {"seq": seq, "seconds": {b: seconds}}."""
    return {"seq": seq, "seconds": spawn_world(_pipeline_worker, world, shape, seq, list(batches), threads)}

"""Micro-benchmarks of the machine at hand, turned into a topology file.

Measured with torch (the executor's extra): dense matmul FLOP/s per dtype, device-memory
bandwidth (a large copy), and per collective the bandwidth and latency over the local world
(gloo on CPU, NCCL on GPU), fitted to the alpha-beta model t = alpha + bytes / bw by least squares
over message sizes. No cost formula lives here: the numbers go into the topology YAML that the
cost model reads.
"""

from __future__ import annotations

import contextlib
import os
import socket
import statistics
import time
from typing import Callable

import numpy as np


def _timeit(fn: Callable[[], None], sync: Callable[[], None], reps: int, before: Callable[[], None] | None = None) -> float:
    """Median seconds of `fn` over `reps` runs after one untimed run; `before` runs untimed ahead of each."""
    fn()
    sync()
    times = []
    for _ in range(reps):
        if before is not None:
            before()
            sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def cache_flusher(device: str, mib: int = 64) -> Callable[[], None] | None:
    """On a CPU, a function that sweeps `mib` MiB through the caches: in a GKD step the other
    model's pass runs between two passes of one model, so nothing it needs is still cached. On a
    GPU, None (weights of real models are far larger than its L2)."""
    if device != "cpu":
        return None
    import torch

    junk = torch.zeros(mib * 2**20 // 4)
    return lambda: junk.add_(1.0)


def _concurrent_worker(rank: int, world: int, port: int, threads: int, barrier, fn: Callable, args: tuple, out) -> None:
    import torch

    torch.set_num_threads(threads)
    barrier.wait()
    result = fn(*args)
    if rank == 0:
        out.put(result)


def on_every_process(world: int, threads: int, fn: Callable, *args):
    """Run `fn(*args)` in `world` processes at once, as the executor's ranks share a CPU, and return
    the first one's result (module-level `fn` only: the processes are spawned)."""
    import torch.multiprocessing as mp

    return _spawn_world(_concurrent_worker, world, threads, mp.get_context("spawn").Barrier(world), fn, args)


def matmul_tflops(dtype: str, device: str, n: int, reps: int = 5) -> float:
    import torch

    dt = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    a = torch.randn(n, n, device=device, dtype=dt)
    b = torch.randn(n, n, device=device, dtype=dt)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    t = _timeit(lambda: a @ b, sync, reps)
    return 2 * n**3 / t / 1e12


def memory_gb_per_s(device: str, mib: int, reps: int = 5) -> float:
    """Read + write bandwidth of a large copy."""
    import torch

    x = torch.empty(mib * 2**20 // 4, device=device, dtype=torch.float32)
    y = torch.empty_like(x)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    t = _timeit(lambda: y.copy_(x), sync, reps)
    return 2 * x.numel() * 4 / t / 1e9


def fit_alpha_beta(sizes: list[int], times: list[float], factor: float, steps: float = 1.0) -> tuple[float, float]:
    """Least squares t = steps*alpha + factor*bytes/bw -> (bw GB/s, alpha us per step), with the
    cost model's own factors (planner.cost.comm): e.g. all-reduce factor 2(n-1)/n, steps 2(n-1)."""
    A = np.stack([np.full(len(sizes), float(steps)), factor * np.array(sizes, dtype=float)], axis=1)
    t = np.array(times)
    # relative residuals: small messages (latency) count as much as large ones (bandwidth)
    (alpha, inv_bw), *_ = np.linalg.lstsq(A / t[:, None], np.ones_like(t), rcond=None)
    return float(1 / max(inv_bw, 1e-15) / 1e9), float(max(alpha, 0.0) * 1e6)


# collective -> (bytes factor, latency steps) for n ranks, as in planner.cost.comm
FACTORS = {
    "all_reduce": lambda n: (2 * (n - 1) / n, 2 * (n - 1)),
    "all_gather": lambda n: ((n - 1) / n, n - 1),
    "reduce_scatter": lambda n: ((n - 1) / n, n - 1),
    "p2p": lambda n: (1.0, 1.0),
}


def _collective_worker(rank: int, world: int, port: int, backend: str, sizes: list[int], out) -> None:
    import torch
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group(backend, rank=rank, world_size=world)
    device = f"cuda:{rank}" if backend == "nccl" else "cpu"
    sync = (lambda: torch.cuda.synchronize(device)) if backend == "nccl" else (lambda: None)
    res: dict[str, dict[int, float]] = {k: {} for k in FACTORS}
    for nbytes in sizes:
        full = torch.ones(nbytes // 4, device=device)
        part = torch.ones(nbytes // 4 // world, device=device)
        peer = (rank + 1) % world if rank % 2 == 0 else (rank - 1) % world

        def p2p():
            if rank % 2 == 0:
                dist.send(full, peer)
            else:
                dist.recv(full, peer)

        gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor  # what FSDP2 calls
        scatter = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor
        ops = {"all_reduce": lambda: dist.all_reduce(full),
               "all_gather": lambda: gather(full[: part.numel() * world], part),
               "reduce_scatter": lambda: scatter(part, full[: part.numel() * world]),
               "p2p": p2p}
        for name, op in ops.items():
            dist.barrier()
            res[name][nbytes] = _timeit(op, sync, 9)
    if rank == 0:
        out.put(res)
    dist.destroy_process_group()


def _link(bw_gb_per_s: float, latency_us: float) -> tuple[float, float]:
    """A calibrated (GB/s, us) pair as the cost model's (bytes/s, s) link for `planner.cost.comm`."""
    return bw_gb_per_s * 1e9, latency_us * 1e-6


def _fp32_param_bytes(shape) -> float:
    from planner.cost import params
    from planner.cost.symbols import S

    return 4 * float(params.total_params(S).subs(S.values(shape)))


def _adamw_seconds(numel: int, bandwidth_gb_per_s: float) -> float:
    """Memory traffic of clip + an fp32 AdamW step: weights, grads and two moments read and written."""
    return numel * 4 * 4 * 2 / (bandwidth_gb_per_s * 1e9)


def fit_per_tensor(seconds: float, numel: int, tensors: int, bandwidth_gb_per_s: float) -> float:
    """Fixed time per parameter tensor of clip + AdamW, microseconds: a timed step over `tensors`
    tensors of `numel` elements in all, minus its memory traffic at the measured bandwidth."""
    return max(0.0, (seconds - _adamw_seconds(numel, bandwidth_gb_per_s)) / tensors * 1e6)


def _spawn_world(target: Callable, world: int, *args):
    """Run `target(rank, world, port, *args, out)` in `world` spawned processes that form a
    torch.distributed group on a free local port; return what rank 0 puts on `out`."""
    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=target, args=(r, world, port, *args, q)) for r in range(world)]
    for p in procs:
        p.start()
    result = q.get(timeout=600)
    for p in procs:
        p.join(timeout=60)
    return result


def collective(world: int, backend: str, sizes: list[int]) -> dict[str, dict[int, float]]:
    """Median time per collective and message size over `world` local processes."""
    return _spawn_world(_collective_worker, world, backend, sizes)


def fit_collectives(res: dict[str, dict[int, float]], world: int) -> dict[str, tuple[float, float]]:
    """Per collective: (bandwidth GB/s, latency us per step)."""
    out = {}
    for name, times in res.items():
        sizes = sorted(times)
        factor, steps = FACTORS[name](world)
        out[name] = fit_alpha_beta(sizes, [times[s] for s in sizes], factor, steps)
    return out


def layer_costs(shape, device: str, sizes: list[tuple[int, int]], reps: int = 3, dtype: str = "fp32") -> dict:
    """Time a training step (forward + backward) of a real model of `shape` at (batch, sequence)
    sizes, for the fit t = 3 * (flops_fwd / F + L * overhead) (`fit_layer_costs`): per size, its
    FLOPs, layer passes and seconds.

    This is what the cost model's `compute_efficiency` and `layer_overhead_us` stand for; the FLOP
    count is the cost model's own (`planner.cost.params`). The fit weighs relative residuals, so
    small steps count as much as large ones; on a CPU the caches are swept before each step."""
    import torch

    from planner.cost import params
    from planner.cost.symbols import S
    from planner.executor.build import build_model

    model = build_model(shape.name, shape, "fp32", seed=0).to(device)  # fp32 weights, as the executor holds them
    model.train()
    amp = torch.autocast(device, dtype={"bf16": torch.bfloat16, "fp16": torch.float16}[dtype]) if dtype != "fp32" else contextlib.nullcontext()
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    flush = cache_flusher(device)
    rows, times = [], []
    vals = S.values(shape)
    for b, s in sizes:
        ids = torch.randint(0, shape.vocab, (b, s), device=device)

        def step():
            with amp:
                loss = model(input_ids=ids).logits.float().sum()
            loss.backward()

        times.append(_timeit(step, sync, reps, flush))
        fwd = float(params.forward_flops_per_token(S, s, 1).subs(vals)) * b * s
        rows.append((3 * fwd, 3 * shape.num_layers))
    return {f"{b}x{s}": {"flops": f, "layer_passes": n, "seconds": t} for (b, s), (f, n), t in zip(sizes, rows, times)}


def fit_layer_costs(points: dict) -> tuple[float, float]:
    """Least squares of `layer_costs`' points, on relative residuals: (F in TFLOP/s, overhead in us)."""
    pts = list(points.values())
    t = np.array([p["seconds"] for p in pts])
    A = np.array([[p["flops"], p["layer_passes"]] for p in pts]) / t[:, None]
    (inv_f, ov), *_ = np.linalg.lstsq(A, np.ones_like(t), rcond=None)
    return float(1 / max(inv_f, 1e-18) / 1e12), float(max(ov, 0.0) * 1e6)


def _fsdp_worker(rank: int, world: int, port: int, shapes: list, sizes: list[tuple[int, int]], threads: int, out) -> None:
    import torch
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    from planner.executor.build import build_model

    torch.set_num_threads(threads)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    mesh = init_device_mesh("cpu", (world,))
    results = []
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
        plain = _timeit(forward_all, dist.barrier, 9)
        for layer in model.model.layers:
            fully_shard(layer, mesh=mesh)
        fully_shard(model, mesh=mesh)
        dist.barrier()
        results.append((plain, _timeit(forward_all, dist.barrier, 9)))
        if len(results) == 1:  # the model's own shape: clip + AdamW step on its sharded (DTensor) parameters
            params = list(model.parameters())
            for q in params:
                q.grad = torch.zeros_like(q)
            opt = torch.optim.AdamW(params, lr=1e-4)

            def step():
                norm = torch.nn.utils.clip_grad_norm_(params, 1.0)
                norm.full_tensor() if hasattr(norm, "full_tensor") else norm
                opt.step()

            optim = (_timeit(step, dist.barrier, 7), len(params), sum(q.to_local().numel() for q in params))
    if rank == 0:
        out.put((results, optim))
    dist.destroy_process_group()


def widened(shape):
    """The same model at twice the width (hidden, heads, MLP): per-unit bytes about 4x."""
    return shape.model_copy(update={"name": shape.name + "-x2", "hidden": 2 * shape.hidden, "ffn": 2 * shape.ffn,
                                    "num_heads": 2 * shape.num_heads, "num_kv_heads": 2 * shape.kv_heads})


def shard_overheads(shape, world: int, all_gather: tuple[float, float], mem_bw: float, threads: int) -> tuple[dict, float]:
    """FSDP2's cost beyond the all-gather itself (copy-in/out, hooks, DTensor), fitted as a fixed
    time per unit gather plus a time per gathered byte: forward passes of a real model of `shape`
    and of the same model at twice the width, sharded over `world` CPU processes, minus the same
    unsharded, minus the fitted all-gather time; and clipping + an AdamW step on the sharded
    parameters, minus their bytes over the memory bandwidth, per parameter tensor. Returns
    ({model: {bytes per unit, extra seconds per unit gather}} for `fit_fixed_plus_per_byte`,
    microseconds per sharded parameter tensor of the optimizer)."""
    shapes, sizes = [shape, widened(shape)], [(1, 16), (2, 32)]
    results, optim = _spawn_world(_fsdp_worker, world, shapes, sizes, threads)
    seconds, tensors, local = optim
    points = {sh.name: fsdp_extra(sh, plain, sharded, world, all_gather, len(sizes)) for sh, (plain, sharded) in zip(shapes, results)}
    return points, fit_per_tensor(seconds, local, tensors, mem_bw)


def fsdp_extra(shape, plain: float, sharded: float, world: int, all_gather: tuple[float, float], passes: int) -> dict:
    """One point for `fit_fixed_plus_per_byte`: {bytes per FSDP unit, extra seconds per unit gather}
    from `passes` forwards timed unsharded (`plain`) and sharded, less the modelled all-gathers."""
    from planner.cost import comm

    units = shape.num_layers + 1
    param_bytes = _fp32_param_bytes(shape)
    modeled = passes * comm.all_gather(world, param_bytes, _link(*all_gather), calls=units)
    return {"bytes": param_bytes / units, "extra_s": max(0.0, sharded - plain - modeled) / (passes * units)}


def _ddp_worker(rank: int, world: int, port: int, shapes: list, seq: int, threads: int, out) -> None:
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    from planner.executor.build import build_model

    torch.set_num_threads(threads)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
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
        results.append((_timeit(unsynced, dist.barrier, 11, flush), _timeit(micro_step, dist.barrier, 11, flush)))
    if rank == 0:
        out.put(results)
    dist.destroy_process_group()


def ddp_sync_overheads(shape, world: int, all_reduce: tuple[float, float], threads: int, seq: int = 64) -> dict:
    """DDP's gradient sync beyond the all-reduce itself (bucket copies, the reducer, gloo's thread
    sharing the core with the backward), fitted as a fixed time per sync plus a time per gradient
    byte: a training micro-step of a real model of `shape` and of the same model at twice the width,
    under DDP over `world` CPU processes, with the sync minus without it, minus the fitted
    all-reduce. Returns {model: {gradient bytes, extra seconds per sync}} for `fit_fixed_plus_per_byte`."""
    shapes = [shape, widened(shape)]
    results = _spawn_world(_ddp_worker, world, shapes, seq, threads)
    return {sh.name: ddp_extra(sh, unsynced, synced, world, all_reduce) for sh, (unsynced, synced) in zip(shapes, results)}


def ddp_extra(shape, unsynced: float, synced: float, world: int, all_reduce: tuple[float, float]) -> dict:
    """One point for `fit_fixed_plus_per_byte`: {gradient bytes, extra seconds per sync} from a
    micro-step timed without and with DDP's sync, less the modelled all-reduce."""
    from planner.cost import comm

    grad_bytes = _fp32_param_bytes(shape)
    modeled = comm.all_reduce(world, grad_bytes, _link(*all_reduce))
    return {"bytes": grad_bytes, "extra_s": max(0.0, synced - unsynced - modeled)}


def fit_fixed_plus_per_byte(points: dict) -> tuple[float, float]:
    """Least squares extra = fixed + bytes / bw through {bytes, extra_s} points: (fixed in us, bw in
    GB/s or 0 where no per-byte cost was found), neither negative."""
    rows = [(1.0, p["bytes"]) for p in points.values()]
    extra = [p["extra_s"] for p in points.values()]
    (fixed, per_byte), *_ = np.linalg.lstsq(np.array(rows), np.array(extra), rcond=None)
    if per_byte * max(r[1] for r in rows) <= 1e-3 * max(max(extra), 1e-12):  # no per-byte cost: all of it fixed (the mean)
        return float(statistics.mean(extra) * 1e6), 0.0
    if fixed < 0:  # all of it per byte
        return 0.0, float(1 / (sum(e * r[1] for e, r in zip(extra, rows)) / sum(r[1] ** 2 for r in rows)) / 1e9)
    return float(fixed * 1e6), float(1 / per_byte / 1e9)


def _pipeline_worker(rank: int, world: int, port: int, shape, seq: int, batches: list[int], threads: int, out) -> None:
    import torch
    import torch.distributed as dist

    from planner.executor.build import build_model
    from planner.executor.data import Batch
    from planner.executor.teacher import Pipelined, Stage, layer_split

    torch.set_num_threads(threads)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    C = seq // 2
    model = build_model(shape.name, shape, "fp32", seed=0).eval()
    lo, hi = layer_split(shape.num_layers, world)[rank]
    stage = Stage(model, lo, hi, C)
    one = torch.randint(0, shape.vocab, (1, seq))
    hidden = torch.randn(1, seq, shape.hidden)
    x = one if lo == 0 else hidden
    with torch.no_grad():
        alone = _timeit(lambda: stage(x, torch.ones_like(one)), lambda: None, 15)
    group = dist.new_group(list(range(world)))
    piped = {}
    for b in batches:
        pipe = Pipelined(build_model(shape.name, shape, "fp32", seed=0).eval(), torch.device("cpu"), C, group, list(range(world)), b)
        ids = torch.randint(0, shape.vocab, (b, seq))
        batch = Batch(ids, torch.ones_like(ids), ids[:, C:])
        dist.barrier()
        piped[b] = _timeit(lambda: pipe.request(batch)(), dist.barrier, 9)
    slowest = [None] * world
    dist.all_gather_object(slowest, alone)
    if rank == 0:
        out.put((max(slowest), piped))
    dist.destroy_process_group()


def pipeline_tick_overhead(shape, world: int, p2p: tuple[float, float], threads: int, seq: int = 64) -> float:
    """Fixed time per pipeline tick beyond the stage's own forward and the activation send
    (`torch.distributed.pipelining`'s schedule, the gathers of the inputs and the scatter of the
    logits, spread over the ticks), microseconds: the executor's forward-only GPipe over `world`
    CPU processes at two batch sizes, minus (micro-batches + stages - 1) forwards of the slowest
    stage on one sample, minus the modelled sends."""
    stage, piped = _spawn_world(_pipeline_worker, world, shape, seq, [1, 3], threads)
    return fit_pipeline_tick(shape, world, seq, stage, piped, p2p)


def fit_pipeline_tick(shape, world: int, seq: int, stage: float, piped: dict[int, float], p2p: tuple[float, float]) -> float:
    """The fixed time per tick, microseconds, from the slowest stage's forward of one sample
    (`stage`, s) and the pipelined forward of b samples per rank (`piped[b]`, s), less the
    modelled sends of activations and logits, averaged over the batch sizes."""
    from planner.cost import comm

    link = _link(*p2p)
    act = comm.p2p(seq * shape.hidden * 4, link)
    per_tick = []
    for b, seconds in piped.items():
        m = world * b
        ticks = m + world - 1
        sends = (world - 1) + (m - 1)  # the cost model's activation sends (no overlap on gloo)
        logits = comm.p2p((world - 1) * b * (seq // 2) * shape.vocab * 4, link, calls=0)
        per_tick.append((seconds - ticks * stage - sends * act - logits) / ticks)
    return max(0.0, statistics.mean(per_tick) * 1e6)


def optimizer_tensor_overhead(shape, device: str, bandwidth_gb_per_s: float, reps: int = 7) -> float:
    """Fixed time per parameter tensor of gradient clipping + an AdamW step (foreach kernels,
    Python), microseconds: a timed `clip_grad_norm_` + `step` on a real model of `shape` minus its
    bytes over the measured memory bandwidth (fp32: weights, grads and two moments read and written)."""
    import torch

    from planner.executor.build import build_model

    model = build_model(shape.name, shape, "fp32", seed=0).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.grad = torch.zeros_like(p)
    opt = torch.optim.AdamW(params, lr=1e-4)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def step():
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()

    return fit_per_tensor(_timeit(step, sync, reps), sum(p.numel() for p in params), len(params), bandwidth_gb_per_s)


def loss_costs(vocab: int, device: str, reps: int = 7) -> dict:
    """The executor's generalized JSD, forward + backward, timed at two sizes of [tokens x
    vocabulary] for the fit t = call + elements * per_element (`fit_loss_costs`). Its exp/log work
    is compute-bound on a CPU, bandwidth-bound on a GPU."""
    import torch

    from planner.executor.loss import generalized_jsd

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    rows, times = [], []
    for b, s in ((1, 32), (4, 64)):
        student = torch.randn(b, s, vocab, device=device, requires_grad=True)
        teacher = torch.randn(b, s, vocab, device=device)
        labels = torch.ones(b, s, dtype=torch.long, device=device)

        def step():
            generalized_jsd(student, teacher, labels, 0.5, 1.0, None).backward()

        times.append(_timeit(step, sync, reps, cache_flusher(device)))
        rows.append((b * s * vocab, 1.0))
    return {str(n): {"elements": n, "seconds": t} for (n, _), t in zip(rows, times)}


def fit_loss_costs(points: dict) -> tuple[float, float]:
    """t = call + elements * per_element through `loss_costs`' points: (ns per element, us per call)."""
    pts = sorted(points.values(), key=lambda p: p["elements"])
    rows = np.array([[p["elements"], 1.0] for p in pts], dtype=float)
    (per_el, call), *_ = np.linalg.lstsq(rows, np.array([p["seconds"] for p in pts]), rcond=None)
    if call < 0 or per_el <= 0:
        return pts[-1]["seconds"] / pts[-1]["elements"] * 1e9, 0.0
    return float(per_el) * 1e9, float(call) * 1e6

"""Hardware micro-benchmarks of the machine at hand: what a topology file holds.

Measured with torch (the executor's extra): dense matmul FLOP/s per dtype, device-memory bandwidth
(a large copy), and per collective the bandwidth and latency over the local world (gloo on CPU,
NCCL on GPU), fitted to the alpha-beta model t = steps * alpha + factor * bytes / bw by least
squares over message sizes, with the ring factors of `planner.cost.comm`. The framework's own
costs (per-layer, per-call, per-unit overheads) are timed in `planner.calibrate.overheads` and
fitted through the compiled cost model (`planner.calibrate.cases`).
"""

from __future__ import annotations

import os
import socket
import statistics
import time
from typing import Callable

import numpy as np


def timeit(fn: Callable[[], None], sync: Callable[[], None], reps: int, before: Callable[[], None] | None = None) -> float:
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

    return spawn_world(_concurrent_worker, world, threads, mp.get_context("spawn").Barrier(world), fn, args)


def matmul_tflops(dtype: str, device: str, n: int, reps: int = 5) -> float:
    import torch

    dt = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    a = torch.randn(n, n, device=device, dtype=dt)
    b = torch.randn(n, n, device=device, dtype=dt)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    t = timeit(lambda: a @ b, sync, reps)
    return 2 * n**3 / t / 1e12


def speed_probe(device: str) -> float:
    """About a quarter second of fp32 matmuls on one thread, TFLOP/s (the best of three medians, so a
    blip of a few milliseconds does not count): how fast the machine runs right now. Taken before and
    after a calibration it shows a machine whose speed changed meanwhile (another job, a busy or
    throttled host, a disk still writing out a large install)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return max(matmul_tflops("fp32", device, 512 if device == "cpu" else 4096, reps=30) for _ in range(3))
    finally:
        torch.set_num_threads(threads)


def model_widths(shape, tokens: int) -> list[tuple[int, int, int, int]]:
    """The matmuls of one training step of `shape` at `tokens` tokens, as the executor's nn.Linear
    layers run them: (count per step, tokens, in features, out features) for the attention
    projections, the MLP and the LM head (hidden x hidden, hidden x intermediate, hidden x vocab)."""
    head = shape.head_dim or shape.hidden // shape.num_heads
    q, kv = shape.num_heads * head, shape.kv_heads * head
    mlp = [(shape.hidden, shape.ffn)] * (2 if shape.gated_mlp else 1) + [(shape.ffn, shape.hidden)]
    layer = [(shape.hidden, q), (shape.hidden, kv), (shape.hidden, kv), (q, shape.hidden)] + mlp
    return [(shape.num_layers, tokens, i, o) for i, o in layer] + [(1, tokens, shape.hidden, shape.vocab)]


def model_matmul_tflops(dtype: str, device: str, shape, tokens: int, reps: int = 5) -> float:
    """FLOP/s of the model's own matmuls (`model_widths`) as the executor runs them: fp32 weights,
    forward (x @ W^T) and backward (the input's and the weight's gradients), under torch.autocast for
    bf16/fp16 (so each call casts its weight, as in training); total FLOPs over total median time,
    each matmul weighted by how often a step runs it."""
    import contextlib

    import torch

    amp = torch.autocast(device, dtype={"bf16": torch.bfloat16, "fp16": torch.float16}[dtype]) if dtype != "fp32" else contextlib.nullcontext()
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    flops = seconds = 0.0
    for count, t, i, o in model_widths(shape, tokens):
        x = torch.randn(t, i, device=device, requires_grad=True)
        w = (torch.randn(o, i, device=device) / i**0.5).requires_grad_()
        g = torch.randn(t, o, device=device)

        def step():
            with amp:
                y = torch.nn.functional.linear(x, w)
            y.backward(g.to(y.dtype))

        seconds += count * timeit(step, sync, reps)
        flops += count * 3 * 2 * t * i * o  # forward + two backward matmuls
    return flops / seconds / 1e12


def memory_gb_per_s(device: str, mib: int, reps: int = 5) -> float:
    """Read + write bandwidth of a large copy."""
    import torch

    x = torch.empty(mib * 2**20 // 4, device=device, dtype=torch.float32)
    y = torch.empty_like(x)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    t = timeit(lambda: y.copy_(x), sync, reps)
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
            res[name][nbytes] = timeit(op, sync, 9)
    if rank == 0:
        out.put(res)
    dist.destroy_process_group()


def spawn_world(target: Callable, world: int, *args):
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
    return spawn_world(_collective_worker, world, backend, sizes)


def fit_collectives(res: dict[str, dict[int, float]], world: int) -> dict[str, tuple[float, float]]:
    """Per collective: (bandwidth GB/s, latency us per step)."""
    out = {}
    for name, times in res.items():
        sizes = sorted(times)
        factor, steps = FACTORS[name](world)
        out[name] = fit_alpha_beta(sizes, [times[s] for s in sizes], factor, steps)
    return out

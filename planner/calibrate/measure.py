"""Micro-benchmarks of the machine at hand, turned into a topology file.

Measured with torch (the executor's extra): dense matmul FLOP/s per dtype, device-memory
bandwidth (a large copy), and per collective the bandwidth and latency over the local world
(gloo on CPU, NCCL on GPU), fitted to the alpha-beta model t = alpha + bytes / bw by least squares
over message sizes. No cost formula lives here: the numbers go into the topology YAML that the
cost model reads.
"""

from __future__ import annotations

import os
import socket
import statistics
import time
from typing import Callable

import numpy as np


def _timeit(fn: Callable[[], None], sync: Callable[[], None], reps: int) -> float:
    fn()
    sync()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


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


def fit_alpha_beta(sizes: list[int], times: list[float], factor: float) -> tuple[float, float]:
    """Least squares t = steps*alpha + factor*bytes/bw -> (bw GB/s, alpha us per step)."""
    A = np.stack([np.ones(len(sizes)), factor * np.array(sizes, dtype=float)], axis=1)
    (alpha, inv_bw), *_ = np.linalg.lstsq(A, np.array(times), rcond=None)
    return float(1 / max(inv_bw, 1e-15) / 1e9), float(max(alpha, 0.0) * 1e6)


def _collective_worker(rank: int, world: int, port: int, backend: str, sizes: list[int], out) -> None:
    import torch
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group(backend, rank=rank, world_size=world)
    device = f"cuda:{rank}" if backend == "nccl" else "cpu"
    sync = (lambda: torch.cuda.synchronize(device)) if backend == "nccl" else (lambda: None)
    res = {}
    for nbytes in sizes:
        x = torch.ones(nbytes // 4, device=device)
        dist.barrier()
        res[nbytes] = _timeit(lambda: dist.all_reduce(x), sync, 5)
    if rank == 0:
        out.put(res)
    dist.destroy_process_group()


def collective(world: int, backend: str, sizes: list[int]) -> dict[int, float]:
    """Median all-reduce time per message size over `world` local processes."""
    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_collective_worker, args=(r, world, port, backend, sizes, q)) for r in range(world)]
    for p in procs:
        p.start()
    res = q.get(timeout=600)
    for p in procs:
        p.join(timeout=60)
    return res


def layer_costs(shape, device: str, sizes: list[tuple[int, int]], reps: int = 3) -> tuple[float, float]:
    """Fit a training step (forward + backward) of a real model of `shape` to
    t = 3 * (flops_fwd / F + L * overhead) over (batch, sequence) sizes: (F in TFLOP/s, overhead in us).

    This is what the cost model's `compute_efficiency` and `layer_overhead_us` stand for; the FLOP
    count is the cost model's own (`planner.cost.params`)."""
    import torch

    from planner.cost import params
    from planner.cost.symbols import S
    from planner.executor.build import build_model

    model = build_model(shape.name, shape, "fp32", seed=0).to(device)
    model.train()
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    rows, times = [], []
    vals = S.values(shape)
    for b, s in sizes:
        ids = torch.randint(0, shape.vocab, (b, s), device=device)

        def step():
            model(input_ids=ids).logits.float().sum().backward()

        times.append(_timeit(step, sync, reps))
        fwd = float(params.forward_flops_per_token(S, s, 1).subs(vals)) * b * s
        rows.append((3 * fwd, 3 * shape.num_layers))
    A = np.array([[f, layers] for f, layers in rows])
    (inv_f, ov), *_ = np.linalg.lstsq(A, np.array(times), rcond=None)
    return float(1 / max(inv_f, 1e-18) / 1e12), float(max(ov, 0.0) * 1e6)

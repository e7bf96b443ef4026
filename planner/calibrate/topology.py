"""Run the micro-benchmarks (`planner.calibrate.measure`) and turn them into a topology mapping.

`--repeat N` takes the median of N rounds for every figure, which matters on a shared machine.
"""

from __future__ import annotations

import os
import statistics
from typing import Callable


def measure_once(world: int, model: str | None, quick: bool, advance: Callable[[], None]) -> dict:
    """One round of every figure, raw (TFLOP/s, GB/s, seconds per collective and size, fits)."""
    import torch

    from planner.calibrate import measure

    cuda = torch.cuda.is_available()
    device, backend = ("cuda", "nccl") if cuda else ("cpu", "gloo")
    dtypes = ["fp32", "bf16"] + (["fp16"] if cuda else [])
    n = (2048 if quick else 4096) if cuda else (512 if quick else 1024)
    sizes = [2**k for k in (range(12, 23, 2) if quick else range(12, 25, 2))]
    raw: dict = {"device": device, "backend": backend, "world": world, "matmul_tflops": {}}
    for dt in dtypes:
        raw["matmul_tflops"][dt] = measure.matmul_tflops(dt, device, n)
    advance()
    raw["memory_gb_per_s"] = measure.memory_gb_per_s(device, 256 if quick else 1024)
    collectives = measure.collective(world, backend, sizes) if world > 1 else {}
    raw["collectives"] = {k: {"bw_gb_per_s": b, "latency_us": a} for k, (b, a) in measure.fit_collectives(collectives, world).items()} if collectives else {}
    advance()
    if model:
        from planner.inputs.load import load_model

        shape = load_model(model)
        fit = [(1, 16), (1, 64), (2, 64), (4, 64), (4, 128)] if not cuda else [(1, 128), (4, 512), (8, 1024), (16, 1024)]
        # CPU processes share the machine as the executor's ranks do: time them all at once
        at_once = (lambda fn, *a: measure.on_every_process(world, torch.get_num_threads(), fn, *a)) if not cuda and world > 1 else (lambda fn, *a: fn(*a))
        # raw timings only; the fits run on the per-figure medians of the rounds (to_topology)
        fit_dtype = "bf16" if cuda else "fp32"  # what students train in there
        raw["model_fit"] = {"model": shape.name, "dtype": fit_dtype, "train_steps": at_once(measure.layer_costs, shape, device, fit, 3, fit_dtype),
                            "optimizer_tensor_overhead_us": at_once(measure.optimizer_tensor_overhead, shape, device, raw["memory_gb_per_s"]),
                            "loss_calls": at_once(measure.loss_costs, shape.vocab, device)}
        if not cuda and world > 1 and raw["collectives"]:
            ag = raw["collectives"]["all_gather"]
            gathers, per_tensor = measure.shard_overheads(shape, world, (ag["bw_gb_per_s"], ag["latency_us"]),
                                                          raw["memory_gb_per_s"], torch.get_num_threads())
            raw["model_fit"] |= {"fsdp_gathers": gathers, "sharded_optimizer_tensor_overhead_us": per_tensor}
            ar = raw["collectives"]["all_reduce"]
            raw["model_fit"]["ddp_syncs"] = measure.ddp_sync_overheads(shape, world, (ar["bw_gb_per_s"], ar["latency_us"]), torch.get_num_threads())
            p2p = raw["collectives"]["p2p"]
            raw["model_fit"]["pipeline_tick_overhead_us"] = measure.pipeline_tick_overhead(
                shape, world, (p2p["bw_gb_per_s"], p2p["latency_us"]), torch.get_num_threads())
    advance()
    return raw


def median_of(rounds: list[dict]) -> dict:
    """The per-figure median of several rounds (numbers only; other values from the first round)."""
    first = rounds[0]
    out = {}
    for k, v in first.items():
        if isinstance(v, dict):
            out[k] = median_of([r[k] for r in rounds])
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[k] = statistics.median(r[k] for r in rounds)
        else:
            out[k] = v
    return out


def fitted(model_fit: dict) -> dict:
    """The cost model's figures from the (median) raw timings of `measure_once`'s model_fit."""
    from planner.calibrate import measure

    if not model_fit:
        return {}
    out = {k: v for k, v in model_fit.items() if isinstance(v, (int, float))}
    out["dtype"] = model_fit.get("dtype", "fp32")
    out["tflops"], out["layer_overhead_us"] = measure.fit_layer_costs(model_fit["train_steps"])
    out["loss_element_ns"], out["loss_call_overhead_us"] = measure.fit_loss_costs(model_fit["loss_calls"])
    if "fsdp_gathers" in model_fit:
        out["shard_unit_overhead_us"], out["shard_copy_gb_per_s"] = measure.fit_fixed_plus_per_byte(model_fit["fsdp_gathers"])
    if "ddp_syncs" in model_fit:
        out["ddp_sync_overhead_us"], out["ddp_copy_gb_per_s"] = measure.fit_fixed_plus_per_byte(model_fit["ddp_syncs"])
    return out


def to_topology(raw: dict, name: str, world: int) -> dict:
    """The topology mapping (validated by the caller) for a calibrated one-node machine."""
    import torch

    cuda = raw["device"] == "cuda"
    if cuda:
        props = torch.cuda.get_device_properties(0)
        dev_name, mem_gib = props.name, props.total_memory / 2**30
    else:
        dev_name = f"1 CPU process ({os.cpu_count()} cores shared)"
        mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30 / world
    fit = fitted(raw.get("model_fit", {}))
    ar = raw["collectives"].get("all_reduce", {"bw_gb_per_s": 1000.0, "latency_us": 1.0})
    link = {"bw_gb_per_s": round(ar["bw_gb_per_s"], 4), "latency_us": round(ar["latency_us"], 2), "efficiency": 1.0}
    return {
        "name": name, "description": f"measured by planner calibrate on {raw['device']} ({raw['backend']}, {world} processes)",
        "nodes": 1, "gpus_per_node": world,
        "gpu": {"name": dev_name, "mem_gib": round(mem_gib, 2), "reserved_mem_gib": round(min(1.0, mem_gib / 8), 2),
                "peak_tflops": {k: round(v, 5) for k, v in raw["matmul_tflops"].items()},
                "compute_efficiency": round(min(1.0, fit["tflops"] / raw["matmul_tflops"][fit.get("dtype", "fp32")]), 4) if fit else 1.0,
                "hbm_bw_gb_per_s": round(raw["memory_gb_per_s"], 3), "hbm_efficiency": 1.0,
                "layer_overhead_us": round(fit.get("layer_overhead_us", 0.0), 2),
                "shard_unit_overhead_us": round(fit.get("shard_unit_overhead_us", 0.0), 2),
                **({"shard_copy_gb_per_s": round(fit["shard_copy_gb_per_s"], 4)} if fit.get("shard_copy_gb_per_s") else {}),
                "optimizer_tensor_overhead_us": round(fit.get("optimizer_tensor_overhead_us", 0.0), 2),
                **({"sharded_optimizer_tensor_overhead_us": round(fit["sharded_optimizer_tensor_overhead_us"], 2)}
                   if "sharded_optimizer_tensor_overhead_us" in fit else {}),
                "pipeline_tick_overhead_us": round(fit.get("pipeline_tick_overhead_us", 0.0), 2),
                "ddp_sync_overhead_us": round(fit.get("ddp_sync_overhead_us", 0.0), 2),
                **({"ddp_copy_gb_per_s": round(fit["ddp_copy_gb_per_s"], 4)} if fit.get("ddp_copy_gb_per_s") else {}),
                "loss_element_ns": round(fit.get("loss_element_ns", 0.0), 3),
                "loss_call_overhead_us": round(fit.get("loss_call_overhead_us", 0.0), 2)},
        "intra_node": {"name": f"{raw['backend']}, measured", **link,
                       "collectives": {k: {kk: round(vv, 4) for kk, vv in c.items()} for k, c in raw["collectives"].items()}},
        "inter_node": {"name": "not measured (one node)", **link},
        "backend": raw["backend"], "comm_overlap": 1.0 if cuda else 0.0,
    }

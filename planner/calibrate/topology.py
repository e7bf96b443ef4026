"""Run the measurements and turn them into a topology (hardware) and a runtime (framework) mapping.

`measure_once` takes one round of raw timings: the hardware micro-benchmarks
(`planner.calibrate.hardware`) and, with a model, the executor's operations
(`planner.calibrate.overheads`). `--repeat N` takes the median of N rounds for every figure, which
matters on a shared machine. The topology gets what the hardware reached (FLOP rates, memory and
link bandwidths, the compute efficiency of training steps); the runtime gets the framework's
overheads, each fitted through the compiled cost model (`planner.calibrate.cases`).
"""

from __future__ import annotations

import json
import os
import statistics
from typing import Callable

from planner.inputs.machine import this_cpu


class Record:
    """The measurements of one round taken so far, by name ("matmul_tflops.bf16",
    "model_fit.train_steps"): `take` runs a measurement once, hands it to `save` as soon as it
    completes (the caller writes it to disk), and on a resumed round returns what an earlier run
    took without measuring again. `KD_PLANNER_CALIBRATE_FAIL_AFTER=N` raises after the N-th new
    measurement of the process (tests: a late failure keeps the completed ones)."""

    def __init__(self, done: dict | None = None, save: Callable[[dict], None] | None = None, counter: list[int] | None = None):
        self.done = dict(done or {})
        self.save = save or (lambda done: None)
        self.counter = counter if counter is not None else [0]
        self.reused: list[str] = []

    def take(self, key: str, fn: Callable, *args):
        if key in self.done:
            self.reused.append(key)
            return self.done[key]
        value = json.loads(json.dumps(fn(*args)))  # as it will be read back from disk (string keys, lists)
        self.done[key] = value
        self.save(self.done)
        self.counter[0] += 1
        fail = os.environ.get("KD_PLANNER_CALIBRATE_FAIL_AFTER")
        if fail and self.counter[0] >= int(fail):
            raise RuntimeError(f"KD_PLANNER_CALIBRATE_FAIL_AFTER={fail}: failing after {key} as asked")
        return value


def measure_once(world: int, shape, quick: bool, advance: Callable[[], None], record: Record | None = None) -> dict:
    """One round of every figure, raw (TFLOP/s, GB/s, seconds per collective and size, seconds per
    operation); `shape` (a ModelShape or None) adds the executor's operations on that model. Each
    measurement goes through `record` (written as it completes, skipped where a resumed round has it)."""
    import torch

    from planner.calibrate import hardware, overheads

    rec = record or Record()
    cuda = torch.cuda.is_available()
    device, backend = ("cuda", "nccl") if cuda else ("cpu", "gloo")
    dtypes = ["fp32", "bf16"] + (["fp16"] if cuda else [])
    n = (2048 if quick else 4096) if cuda else (512 if quick else 1024)
    sizes = [2**k for k in (range(12, 23, 2) if quick else range(12, 25, 2))]
    raw: dict = {"device": device, "backend": backend, "world": world, "matmul_tflops": {}}
    if not cuda:
        raw["measured_on"] = this_cpu(torch.backends.cpu.get_cpu_capability()).model_dump()
    threads = torch.get_num_threads()
    # CPU processes share the machine as the executor's ranks do: time them all at once
    at_once = (lambda fn, *a: hardware.on_every_process(world, threads, fn, *a)) if not cuda and world > 1 else (lambda fn, *a: fn(*a))
    seq = 1024 if cuda else 64  # the model fit's sequence length
    tokens = 4 * seq  # and its largest batch (4 samples)
    for dt in dtypes:
        if shape is None:  # hardware only: one square matmul
            raw["matmul_tflops"][dt] = rec.take(f"matmul_tflops.{dt}", at_once, hardware.matmul_tflops, dt, device, n)
        else:  # the model's own widths under autocast, as the executor runs them
            raw["matmul_tflops"][dt] = rec.take(f"matmul_tflops.{dt}", at_once, hardware.model_matmul_tflops, dt, device, shape, tokens)
    if shape is not None:
        raw["matmul_shapes"] = {"model": shape.name, "tokens": tokens, "autocast": True}
    advance()
    raw["memory_gb_per_s"] = rec.take("memory_gb_per_s", at_once, hardware.memory_gb_per_s, device, 256 if quick else 1024)

    def collectives():
        res = hardware.collective(world, backend, sizes) if world > 1 else {}
        return {k: {"bw_gb_per_s": b, "latency_us": a} for k, (b, a) in hardware.fit_collectives(res, world).items()} if res else {}

    raw["collectives"] = rec.take("collectives", collectives)
    advance()
    if shape is not None:
        # one model shape and one sequence length (64 tokens on CPU): only the batch varies; the
        # validation (bench/validation_report.py) predicts other shapes and lengths out of sample
        batches = (1, 4) if quick else (1, 2, 4, 8)
        fit_dtype = "bf16" if cuda else "fp32"  # what students train in there
        fit = raw["model_fit"] = {"model": shape.name, "shape": shape.model_dump(mode="json"), "dtype": fit_dtype}
        fit["train_steps"] = rec.take("model_fit.train_steps", at_once, overheads.train_steps, shape, device,
                                      [(b, seq) for b in batches], 3, fit_dtype)
        fit["optimizer_step_s"] = rec.take("model_fit.optimizer_step_s", at_once, overheads.optimizer_step, shape, device)
        fit["loss_calls"] = rec.take("model_fit.loss_calls", at_once, overheads.loss_calls, shape.vocab, device, [(1, seq), (4, seq)])
        fit["generations"] = rec.take("model_fit.generations", at_once, overheads.generations, shape, device,
                                      [(b, seq // 2, seq // 2) for b in (1, 4)], 3, fit_dtype)
        if not cuda and world > 1:
            gathers, optim = rec.take("model_fit.fsdp", overheads.fsdp_forwards, shape, world, threads, seq)
            fit |= {"fsdp_gathers": gathers, "sharded_optimizer_step_s": optim,
                    "ddp_syncs": rec.take("model_fit.ddp_syncs", overheads.ddp_micro_steps, shape, world, threads, seq),
                    "pipeline": rec.take("model_fit.pipeline", overheads.pipelined_forwards, shape, world, threads, seq)}
    advance()
    return raw


STEADY = 0.2  # the largest change of the speed probe over a calibration that is taken as a steady machine


def speed_change(probe: dict) -> float | None:
    """The relative change of the speed probe (`hardware.speed_probe`) from before a calibration to
    after it, where it exceeds `STEADY`; None for a steady machine (or no probe)."""
    if not probe or not probe.get("before"):
        return None
    change = probe["after"] / probe["before"] - 1
    return change if abs(change) > STEADY else None


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


def to_topology(raw: dict, name: str, world: int, compute_efficiency: float = 1.0) -> dict:
    """The topology mapping (validated by the caller) for a calibrated one-node machine: hardware only."""
    cuda = raw["device"] == "cuda"
    if cuda:
        import torch

        props = torch.cuda.get_device_properties(0)
        dev_name, mem_gib = props.name, props.total_memory / 2**30
    else:
        dev_name = f"1 CPU process ({os.cpu_count()} cores shared)"
        mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30 / world
    ar = raw["collectives"].get("all_reduce", {"bw_gb_per_s": 1000.0, "latency_us": 1.0})
    link = {"bw_gb_per_s": round(ar["bw_gb_per_s"], 4), "latency_us": round(ar["latency_us"], 2), "efficiency": 1.0}
    return {
        "name": name, "description": f"measured by planner calibrate on {raw['device']} ({raw['backend']}, {world} processes)",
        "nodes": 1, "gpus_per_node": world,
        "gpu": {"name": dev_name, "mem_gib": round(mem_gib, 2), "reserved_mem_gib": round(min(1.0, mem_gib / 8), 2),
                "peak_tflops": {k: round(v, 5) for k, v in raw["matmul_tflops"].items()},
                "compute_efficiency": round(compute_efficiency, 4),
                "hbm_bw_gb_per_s": round(raw["memory_gb_per_s"], 3), "hbm_efficiency": 1.0},
        "intra_node": {"name": f"{raw['backend']}, measured", **link,
                       "collectives": {k: {kk: round(vv, 4) for kk, vv in c.items()} for k, c in raw["collectives"].items()}},
        "inter_node": {"name": "not measured (one node)", **link},
        "backend": raw["backend"], "comm_overlap": 1.0 if cuda else 0.0,
    } | ({} if cuda else {"measured_on": raw.get("measured_on") or this_cpu().model_dump()})


def calibrated(raw: dict, name: str, world: int, base_runtime: str = "kd-planner") -> tuple[dict, dict | None, dict]:
    """(topology mapping, runtime mapping or None without a model fit, the fitted knobs by symbol).
    The runtime is `base_runtime`'s file with this backend's overheads replaced by the fitted ones."""
    from planner.calibrate import cases
    from planner.calibrate.overheads import widened
    from planner.inputs.cluster import Cluster
    from planner.inputs.load import _find, load_model
    from planner.inputs.model import ModelShape
    from planner.inputs.yamlio import read_mapping

    fit = raw.get("model_fit")
    if not fit:
        return to_topology(raw, name, world), None, {}
    hardware = Cluster(**to_topology(raw, name, world))
    shape = ModelShape(**fit["shape"]) if "shape" in fit else load_model(fit["model"])
    knobs = cases.fit_runtime(fit, {"x1": shape, "x2": widened(shape)}, hardware, world)
    eff = float(min(1.0, knobs["F_S"] / (raw["matmul_tflops"][fit.get("dtype", "fp32")] * 1e12)))
    runtime = read_mapping(_find(base_runtime, "runtimes", None))
    fields = cases.as_fields(knobs)
    decode = fields.pop("generation.layer_overhead_us", None)
    over = fields | ({"decode_layer_overhead_us": decode} if decode is not None else {})
    runtime |= {"name": f"{name}-runtime", "description": f"{runtime.get('name')} with the overheads planner calibrate fitted on {raw['device']}",
                "overheads": dict(runtime.get("overheads") or {}) | {raw["backend"]: over}}
    return to_topology(raw, name, world, eff), runtime, knobs

"""Timed executor operations as cost-model cases, and the runtime knobs fitted through them.

Each measurement of `planner.calibrate.overheads` (a training step, the loss, the optimizer step,
FSDP gathers, DDP's sync, a pipelined forward, a generation) is the compiled model's prediction of
one layout: `case` builds that layout's symbol values from the model shape, the measured hardware
(`cluster`) and the outputs that stand for the operation, and `fit_runtime` fits the knobs in
order, each by `planner.calibrate.fit.fit` with the knobs fitted before held at their values and
the others at zero. No cost formula lives here.
"""

from __future__ import annotations

from planner.calibrate.fit import Case, fit
from planner.cost import bind
from planner.inputs.cluster import Cluster
from planner.inputs.load import Job, load_runtime
from planner.inputs.workload import Workload
from planner.strategy import Strategy

# knob symbol -> (runtime field, factor from the symbol's unit to the field's, a typical CPU size
# for the fitter's steps); "per byte" knobs are written as a rate (GB/s), the inverse.
KNOBS = {
    "ov": ("layer_overhead_us", 1e6, 1e-4),
    "loss_el": ("loss_element_ns", 1e9, 1e-8),
    "ov_loss": ("loss_call_overhead_us", 1e6, 1e-4),
    "ov_opt": ("optimizer_tensor_overhead_us", 1e6, 1e-5),
    "ov_opt_sh": ("sharded_optimizer_tensor_overhead_us", 1e6, 1e-5),
    "ov_sh": ("shard_unit_overhead_us", 1e6, 1e-4),
    "ov_shb": ("shard_copy_gb_per_s", None, 1e-9),
    "ov_dd": ("ddp_sync_overhead_us", 1e6, 1e-4),
    "ov_ddb": ("ddp_copy_gb_per_s", None, 1e-9),
    "ov_pp": ("pipeline_tick_overhead_us", 1e6, 1e-4),
    "ov_dec": ("generation.layer_overhead_us", 1e6, 1e-4),
}


def _size(key: str) -> list[int]:
    """"4x64" -> [4, 64]; "2x32+32" -> [2, 32, 32]."""
    b, rest = key.split("x")
    return [int(b), *(int(p) for p in rest.split("+"))]


def case(shape, cluster: Cluster, outputs: tuple[str, ...], measured: float, *, b: int = 1, prompt: int, completion: int,
         student: str = "ddp", teacher: str = "replicate", world: int = 1, dtype: str = "fp32", knobs: dict | None = None,
         label: str = "", **symbols) -> Case:
    """The case of one timed operation: `shape` as student and teacher on `world` ranks (the
    teacher split's degree is `world`), micro-batch `b`, every rank one micro-step per step."""
    deg = {"shard": {"t_sh": world}, "pipeline": {"pp": world}}.get(teacher, {})
    st = Strategy(teacher=teacher, student=student, placement="colocated", n_T=world, n_S=world, s_sh=world, b=b, **deg)
    work = Workload(global_batch=b * world, micro_batch_max=b, prompt_len=prompt, completion_len=completion, lmbda=0.0,
                    student_dtype=dtype, teacher_dtype=dtype, flash_attention=cluster.backend == "nccl")
    job = Job(teacher=shape, student=shape, workload=work)
    values = bind.job_values(job, cluster, load_runtime("kd-planner")) | bind.strategy_values(st, cluster)
    values |= {"ext": 0.0, "chunked": 0.0, "ovl": 0.0} | {k: 0.0 for k in KNOBS} | (knobs or {}) | symbols
    values["F_T"] = values["F_S"]
    return Case(values, outputs, measured, label)


def fit_runtime(model_fit: dict, shapes: dict, cluster: Cluster, world: int, overrides: dict | None = None) -> dict[str, float]:
    """Every knob from `measure_once`'s raw `model_fit` (median timings): symbol name -> value, and
    "F_S" the FLOP rate the training steps reach. `shapes` maps "x1", "x2" to the model and its
    widened copy; `overrides` sets other symbols in every case (tests)."""
    shape, dtype = shapes["x1"], model_fit.get("dtype", "fp32")
    k: dict[str, float] = {}

    def make(*args, **kw) -> Case:  # every case of this fit, with the overrides
        return case(*args, **kw, **(overrides or {}))

    def run(cases, names, inverse=()):
        k.update(fit(cases, {n: KNOBS[n][2] if n in KNOBS else 1 / (cluster.gpu.peak_tflops[dtype] * 1e12) for n in names}, inverse))

    train = [make(shape, cluster, ("time.student_forward", "time.student_backward"), t, b=bs[0], prompt=bs[1] - bs[1] // 2,
                  completion=bs[1] // 2, dtype=dtype, ext=1.0, label=f"train step {key}")
             for key, t in model_fit["train_steps"].items() for bs in [_size(key)]]
    run(train, ["F_S", "ov"], inverse={"F_S"})
    fixed = {"F_S": k["F_S"], "ov": k["ov"]}
    loss = [make(shape, cluster, ("time.loss",), t, b=_size(key)[0], prompt=1, completion=_size(key)[1], dtype=dtype, knobs=fixed,
                 label=f"loss {key}") for key, t in model_fit["loss_calls"].items()]
    run(loss, ["loss_el", "ov_loss"])
    run([make(shape, cluster, ("time.optimizer",), model_fit["optimizer_step_s"], prompt=32, completion=32, dtype=dtype,
              knobs=fixed, label="clip + AdamW")], ["ov_opt"])
    if "sharded_optimizer_step_s" in model_fit:
        run([make(shape, cluster, ("time.optimizer",), model_fit["sharded_optimizer_step_s"], prompt=32, completion=32, dtype=dtype,
                  student="zero3", world=world, knobs=fixed, label="clip + AdamW, FSDP2")], ["ov_opt_sh"])
    if "fsdp_gathers" in model_fit:
        run([make(shapes[w], cluster, ("time.teacher_gather_exposed",), (p["sharded"] - p["plain"]) / p["passes"], prompt=32,
                  completion=32, dtype=dtype, teacher="shard", world=world, knobs=fixed, label=f"FSDP2 gathers, width {w}")
             for w, p in model_fit["fsdp_gathers"].items()], ["ov_sh", "ov_shb"])
    if "ddp_syncs" in model_fit:
        run([make(shapes[w], cluster, ("time.grad_sync",), p["synced"] - p["unsynced"], prompt=32, completion=32, dtype=dtype,
                  world=world, knobs=fixed, label=f"DDP sync, width {w}") for w, p in model_fit["ddp_syncs"].items()], ["ov_dd", "ov_ddb"])
    if "pipeline" in model_fit:
        seq = model_fit["pipeline"]["seq"]
        run([make(shape, cluster, ("time.teacher_forward", "time.teacher_bubble", "time.teacher_comm"), t, b=int(b), prompt=seq - seq // 2,
                  completion=seq // 2, dtype=dtype, teacher="pipeline", world=world, knobs=fixed, label=f"pipelined forward, b={b}")
             for b, t in model_fit["pipeline"]["seconds"].items()], ["ov_pp"])
    if "generations" in model_fit:
        run([make(shape, cluster, ("time.generation",), t, b=_size(key)[0], prompt=_size(key)[1], completion=_size(key)[2], dtype=dtype,
                  knobs=fixed, lam=1.0, gen=1.0, label=f"generation {key}") for key, t in model_fit["generations"].items()], ["ov_dec"])
    return k


def as_fields(knobs: dict[str, float]) -> dict[str, float]:
    """The fitted symbol values as the runtime's fields (microseconds, nanoseconds, GB/s; a
    per-byte cost of zero is left out: no copy cost was found)."""
    out = {}
    for sym, v in knobs.items():
        if sym not in KNOBS:
            continue
        name, factor, _ = KNOBS[sym]
        if factor is None:
            if v > 0:
                out[name] = round(float(1 / (v * 1e9)), 4)
        else:
            out[name] = round(float(v * factor), 3)
    return out

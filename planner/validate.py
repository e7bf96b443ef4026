"""Predicted vs measured: the cost model's figures for a plan next to the executor's metrics.

Nothing is predicted here: the figures come from `planner.search.rank.score` (the compiled cost
model) on the given cluster, the measurements from the executor's metrics JSON.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from planner.inputs.cluster import Cluster
from planner.inputs.errors import InputError, from_validation
from planner.inputs.load import Job
from planner.inputs.model import Strict
from planner.inputs.runtime import Runtime
from planner.plan import Plan, fingerprint
from planner.search import plans, rank

STEP_TOLERANCE = 0.15  # issue 8: mean relative step-time error after calibration
STATE_TOLERANCE = 0.01  # model-state bytes against the executor's exact count


@dataclass
class Row:
    what: str
    predicted: float
    measured: float
    tolerance: float | None  # None: shown for information, not judged

    @property
    def rel_error(self) -> float:
        return (self.predicted - self.measured) / self.measured if self.measured else float("inf")

    @property
    def ok(self) -> bool | None:
        return None if self.tolerance is None else abs(self.rel_error) <= self.tolerance


def _not_bool(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("expected a number, got true/false")
    return value


Number = Annotated[float, BeforeValidator(_not_bool), Field(ge=0)]


class Metrics(Strict):
    """What `validate` reads of the metrics JSON that `planner run --metrics-out` writes (its other
    keys are kept and not read). NaN and infinity are refused like every input's."""

    model_config = ConfigDict(extra="allow")

    plan_fingerprint: str = Field(description="`planner.plan.fingerprint` of the plan that ran.")
    step_times_s: list[Annotated[float, Field(gt=0)]] = Field(min_length=1, description="Seconds per optimizer step.")
    warmup_steps: int = Field(0, ge=0, description="Leading steps left out of samples/s.")
    samples_per_s: Annotated[float, Field(gt=0)] | None = Field(None, description="Measured samples/s.")
    device: str = Field("", description="torch device of the first student rank.")
    peak_memory_bytes: dict[str, dict[str, Number]] = Field(description="Bytes per rank, by term.")
    roles: dict[str, Literal["teacher", "student", "both"]] = Field(description="Each rank's role.")
    phase_times_s: list[dict[str, Number]] | None = Field(None, description="Seconds per phase, per step.")

    @model_validator(mode="after")
    def _ranks(self) -> "Metrics":
        if set(self.roles) != set(self.peak_memory_bytes):
            raise ValueError("roles and peak_memory_bytes must name the same ranks")
        if all(r == "teacher" for r in self.roles.values()):
            raise ValueError("roles: no student rank")
        return self


# Recorded next to the fingerprint by the executor: what a reader can compare in words.
_RECORDED = (("placement", lambda p: p.placement), ("world", lambda p: p.world),
             ("teacher.ref", lambda p: p.teacher.ref), ("teacher.strategy", lambda p: p.teacher.strategy),
             ("teacher.pp", lambda p: p.teacher.pp), ("teacher.shard", lambda p: p.teacher.shard),
             ("teacher.ranks", lambda p: p.teacher.ranks), ("student.ref", lambda p: p.student.ref),
             ("student.strategy", lambda p: p.student.strategy), ("student.shard", lambda p: p.student.shard),
             ("student.ranks", lambda p: p.student.ranks), ("global_batch", lambda p: p.workload.global_batch),
             ("micro_batch", lambda p: p.micro_batch), ("grad_accum", lambda p: p.grad_accum),
             ("seq_len", lambda p: p.workload.seq_len))


def check_metrics(plan: Plan, data: Any, source: str) -> dict:
    """`data` if it is the metrics of a run of `plan`, else one `InputError` line: the wrong shape
    (a key missing, a wrong type, NaN), or metrics measured with another plan (which field differs)."""
    if not isinstance(data, dict):
        raise InputError(f"{source}: expected a JSON object (the file `planner run --metrics-out` writes), got {type(data).__name__}")
    try:
        Metrics.model_validate(data)
    except ValidationError as e:
        lines = from_validation(e, source).lines
        more = f" (and {len(lines) - 2} more)" if len(lines) > 2 else ""
        raise InputError("; ".join(lines[:2]) + more + "; give the file `planner run --metrics-out` wrote") from None
    if data["plan_fingerprint"] != fingerprint(plan):
        differ = []
        for key, get in _RECORDED:
            where = data
            for part in key.split("."):
                where = where.get(part) if isinstance(where, dict) else None
            if where is not None and where != get(plan):
                differ.append(f"{key} {where!r} there, {get(plan)!r} in the plan")
        why = ": " + ", ".join(differ[:3]) if differ else " (a model shape or workload field differs)"
        raise InputError(f"{source}: measured with another plan{why}; give the metrics of a run of this plan "
                         "(`planner validate PLAN --run`)")
    return data


def job_of(plan: Plan) -> Job:
    return Job(name=plan.job, teacher=plan.teacher.shape, student=plan.student.shape, teacher_ref=plan.teacher.ref,
               student_ref=plan.student.ref, workload=plan.workload)


def predict(plan: Plan, cluster: Cluster, runtime: Runtime | None = None) -> rank.Scored:
    """The compiled model's figures for `plan` on `cluster`, under `runtime` (default: the plan's)."""
    from planner.inputs.load import load_runtime
    return rank.score([plans.strategy_of(plan)], [None], job_of(plan), cluster, runtime or load_runtime(plan.runtime))[0]


def split_time(sc: rank.Scored) -> dict[str, float]:
    """Predicted step time on the teacher's side (its forward, bubble, gathers, transfers, the wait
    for a remote teacher), of on-policy generation, and on the student's (forward, loss, backward,
    gradient sync, optimizer): what the executor's `--phases` measure as `teacher`, `generation`
    and the other phases."""
    terms = sc.time_terms()
    teacher = sum(v for k, v in terms.items() if k.startswith("teacher_"))
    generation = terms.get("generation", 0.0)
    return {"teacher": teacher, "generation": generation, "student": sum(terms.values()) - teacher - generation}


def measured_sides(phases: list[dict[str, float]]) -> dict[str, float]:
    """Median seconds per step on each side of `split_time` from the executor's phase times; a run
    without a `generation` phase (off-policy, or an older executor that timed it with the teacher)
    has no generation side of its own."""
    sides = ("teacher", "generation", "student") if any("generation" in p for p in phases) else ("teacher", "student")
    side_of = lambda k: k if k in sides else "student"  # noqa: E731
    return {side: statistics.median(sum(v for k, v in step.items() if side_of(k) == side) for step in phases) for side in sides}


def _max_over(metrics: dict, role: str, key: str) -> float:
    mem, roles = metrics["peak_memory_bytes"], metrics["roles"]
    vals = [m.get(key, 0) for r, m in mem.items() if role in roles[r] or roles[r] == "both"]
    return float(max(vals)) if vals else 0.0


def compare(plan: Plan, metrics: dict, cluster: Cluster, runtime: Runtime | None = None) -> list[Row]:
    """Rows of predicted vs measured: step time, samples/s, and model-state bytes per device."""
    sc = predict(plan, cluster, runtime)
    warm = metrics.get("warmup_steps", 0)
    steady = metrics["step_times_s"][warm:] or metrics["step_times_s"]
    f = sc.figures
    rows = [
        Row("step time (s)", f["step_time"], statistics.median(steady), STEP_TOLERANCE),
    ]
    if metrics.get("samples_per_s"):
        rows.append(Row("samples/s", f["samples_per_s"], metrics["samples_per_s"], None))
    state = (("student_weights", "student", "student_params"), ("student_grads", "student", "student_grads"),
             ("student_optimizer", "student", "student_optimizer"), ("teacher_weights", "teacher", "teacher_params"))
    for term, role, key in state:
        measured = _max_over(metrics, role, key)
        if measured:
            rows.append(Row(f"{term} (bytes)", f[f"mem.{term}"], measured, STATE_TOLERANCE))
    if metrics.get("phase_times_s"):
        measured = measured_sides(metrics["phase_times_s"][warm:] or metrics["phase_times_s"])
        predicted = split_time(sc)
        if "generation" not in measured:
            predicted["teacher"] += predicted.pop("generation")
        for side, value in predicted.items():
            rows.append(Row(f"{side} side of the step (s)", value, measured[side], None))
    peak_key = "cuda_max_allocated" if "cuda" in str(metrics.get("device", "")) else "peak_rss"
    peak = max(m.get(peak_key, 0) for m in metrics["peak_memory_bytes"].values())
    if peak:
        rows.append(Row(f"peak memory (bytes, vs {peak_key})", f["mem_peak"], peak, None))
    return rows


def verdict(rows: list[Row]) -> str:
    bad = [r.what for r in rows if r.ok is False]
    if not bad:
        return "agrees: every judged figure is within its tolerance"
    return "disagrees on " + ", ".join(bad)

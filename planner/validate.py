"""Predicted vs measured: the cost model's figures for a plan next to the executor's metrics.

Nothing is predicted here: the figures come from `planner.search.rank.score` (the compiled cost
model) on the given cluster, the measurements from the executor's metrics JSON.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from planner.inputs.cluster import Cluster
from planner.inputs.load import Job
from planner.plan import Plan
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


def job_of(plan: Plan) -> Job:
    return Job(name=plan.job, teacher=plan.teacher.shape, student=plan.student.shape, teacher_ref=plan.teacher.ref,
               student_ref=plan.student.ref, workload=plan.workload)


def predict(plan: Plan, cluster: Cluster) -> rank.Scored:
    from planner.inputs.load import load_runtime
    return rank.score([plans.strategy_of(plan)], [None], job_of(plan), cluster, load_runtime(plan.runtime))[0]


def split_time(sc: rank.Scored) -> dict[str, float]:
    """Predicted step time on the teacher's side (its forward, bubble, gathers, transfers, the wait
    for a remote teacher, and on-policy generation, which the executor times with the teacher's
    request) and on the student's (forward, loss, backward, gradient sync, optimizer): what the
    executor's `--phases` measure as `teacher` and as the other phases."""
    terms = sc.time_terms()
    teacher = sum(v for k, v in terms.items() if k.startswith("teacher_") or k == "generation")
    return {"teacher": teacher, "student": sum(terms.values()) - teacher}


def _max_over(metrics: dict, role: str, key: str) -> float:
    mem, roles = metrics["peak_memory_bytes"], metrics["roles"]
    vals = [m.get(key, 0) for r, m in mem.items() if role in roles[r] or roles[r] == "both"]
    return float(max(vals)) if vals else 0.0


def compare(plan: Plan, metrics: dict, cluster: Cluster) -> list[Row]:
    """Rows of predicted vs measured: step time, samples/s, and model-state bytes per device."""
    sc = predict(plan, cluster)
    warm = metrics.get("warmup_steps", 0)
    steady = metrics["step_times_s"][warm:] or metrics["step_times_s"]
    f = sc.figures
    rows = [
        Row("step time (s)", f["step_time"], statistics.median(steady), STEP_TOLERANCE),
        Row("samples/s", f["samples_per_s"], metrics["samples_per_s"] or 0.0, None),
    ]
    state = (("student_weights", "student", "student_params"), ("student_grads", "student", "student_grads"),
             ("student_optimizer", "student", "student_optimizer"), ("teacher_weights", "teacher", "teacher_params"))
    for term, role, key in state:
        measured = _max_over(metrics, role, key)
        if measured:
            rows.append(Row(f"{term} (bytes)", f[f"mem.{term}"], measured, STATE_TOLERANCE))
    if metrics.get("phase_times_s"):
        phases = metrics["phase_times_s"][warm:] or metrics["phase_times_s"]
        measured = {side: statistics.median(sum(v for k, v in step.items() if (k == "teacher") == (side == "teacher")) for step in phases)
                    for side in ("teacher", "student")}
        for side, predicted in split_time(sc).items():
            rows.append(Row(f"{side} side of the step (s)", predicted, measured[side], None))
    peak_key = "cuda_max_allocated" if "cuda" in str(metrics.get("device", "")) else "peak_rss"
    rows.append(Row(f"peak memory (bytes, vs {peak_key})", f["mem_peak"], max(m.get(peak_key, 0) for m in metrics["peak_memory_bytes"].values()), None))
    return rows


def verdict(rows: list[Row]) -> str:
    bad = [r.what for r in rows if r.ok is False]
    if not bad:
        return "agrees: every judged figure is within its tolerance"
    return "disagrees on " + ", ".join(bad)

"""From scored candidates to plan files (the grammar and the plan's fields are `Strategy`'s)."""

from __future__ import annotations

from planner.inputs.cluster import Cluster
from planner.inputs.load import Job
from planner.plan import Plan, Predicted
from planner.search import output
from planner.search.rank import Scored, speedup
from planner.strategy import Strategy

strategy_of = Strategy.from_plan  # kept for callers that predate `Strategy.from_plan`


def predicted(sc: Scored, baseline: Scored | None, baseline_name: str | None = None) -> Predicted:
    """The plan's predictions, with its speed-up over `baseline` (named `baseline_name`: the strongest that fits)."""
    ratio = speedup(sc, baseline)
    return Predicted(samples_per_s=sc.samples_per_s, step_time_s=sc.figures["step_time"],
                     memory_bytes_per_device=sc.figures["mem_peak"], memory_bytes=sc.memory_terms(), memory_bytes_by_side=sc.memory_sides(),
                     time_s=sc.time_terms(), speedup_vs_baseline=ratio, baseline=baseline_name if ratio is not None else None)


def to_plan(sc: Scored, job: Job, cluster: Cluster, cluster_ref: str, baseline: Scored | None, runtime: str = "kd-planner",
            baseline_name: str | None = None) -> Plan:
    """The plan file for one scored candidate: its strategy's layout, its teacher output in the
    plan's workload, and the predictions."""
    job = output.with_output(job, sc.output)
    return sc.strategy.to_plan(job, cluster, cluster_ref, runtime, predicted(sc, baseline, baseline_name))

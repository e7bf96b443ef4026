"""From scored candidates to plan files (the grammar and the plan's fields are `Strategy`'s)."""

from __future__ import annotations

from planner.inputs.cluster import Cluster
from planner.inputs.load import Job
from planner.plan import Plan, Predicted
from planner.search.rank import Scored, speedup
from planner.search.strategy import Strategy

strategy_of = Strategy.from_plan  # kept for callers that predate `Strategy.from_plan`


def predicted(sc: Scored, baseline: Scored | None) -> Predicted:
    return Predicted(samples_per_s=sc.samples_per_s, step_time_s=sc.figures["step_time"],
                     memory_bytes_per_device=sc.figures["mem_peak"], memory_bytes=sc.memory_terms(), memory_bytes_by_side=sc.memory_sides(),
                     time_s=sc.time_terms(), speedup_vs_baseline=speedup(sc, baseline))


def to_plan(sc: Scored, job: Job, cluster: Cluster, cluster_ref: str, baseline: Scored | None, runtime: str = "kd-planner") -> Plan:
    """The plan file for one scored candidate: its strategy's layout and the predictions."""
    return sc.strategy.to_plan(job, cluster, cluster_ref, runtime, predicted(sc, baseline))

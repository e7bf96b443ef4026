"""Named regimes (the recommended plan, TRL's baselines, any strategy) and the crossings that bound
the user's job."""

from __future__ import annotations

from dataclasses import dataclass, replace

from planner.cost import bind
from planner.inflection.crossing import VARIABLES, Crossing, Variable, crossings, substitutions
from planner.inputs.cluster import Cluster
from planner.inputs.errors import InputError
from planner.inputs.load import Job
from planner.search import rank
from planner.search.strategy import GRAMMAR, Strategy


@dataclass(frozen=True)
class Regime:
    name: str
    strategy: Strategy
    runtime: str = "kd-planner"  # TRL's baselines run under trl-gkd


def resolve(text: str, job: Job, cluster: Cluster, res: rank.SearchResult) -> Regime:
    """`best`, `trl-zero3`, `trl-ddp`, or a strategy (`Strategy.parse`: `shard:16/zero3/colocated/4`)."""
    if text == "best":
        if not res.ranked:
            raise InputError("best: no plan fits in memory on this cluster")
        return Regime(f"best ({res.ranked[0].strategy})", res.ranked[0].strategy, res.runtime)
    if text in res.baselines:
        sc = res.baselines[text]
        if sc is None:
            raise InputError(f"{text}: no micro-batch reaches the global batch on this cluster")
        return Regime(text, sc.strategy, res.baseline_runtime)
    if "/" not in text:
        raise InputError(f"--between: '{text}' is not best, trl-zero3, trl-ddp or {GRAMMAR}")
    st = Strategy.parse(text, cluster, "--between")
    return Regime(str(st), st)


def _subs(st: Strategy, job: Job, cluster: Cluster, var: Variable, runtime: str = "kd-planner") -> dict:
    from planner.inputs.load import load_runtime

    values = bind.job_values(job, cluster, load_runtime(runtime)) | bind.strategy_values(st, cluster)
    inter = {group: where in ("inter_node", "one_nic") for group, where in st.links(cluster).items()}
    return substitutions(var, values, inter, cluster)


def job_value(var: Variable, job: Job, cluster: Cluster, st: Strategy) -> float:
    return {"inter_bw": cluster.inter_node.bw_gb_per_s, "micro_batch": st.b, "completion_len": job.workload.completion_len,
            "teacher_layers": job.teacher.num_layers, "nodes": cluster.nodes}[var.name]


def between(a: Regime, b: Regime, var: Variable, job: Job, cluster: Cluster) -> list[Crossing]:
    if var.name == "micro_batch":
        a, b = replace(a, strategy=replace(a.strategy, b=1)), replace(b, strategy=replace(b.strategy, b=1))
    return crossings(a.name, _subs(a.strategy, job, cluster, var, a.runtime), b.name, _subs(b.strategy, job, cluster, var, b.runtime), var)


def memory_boundary(a: Regime, var: Variable, job: Job, cluster: Cluster, reserve: rank.Reserve = rank.Reserve()) -> list[Crossing]:
    """Where regime A's peak memory reaches the most the search lets a plan use (the usable device
    memory less the reserve)."""
    return crossings(a.name, _subs(a.strategy, job, cluster, var, a.runtime), "out of memory", {}, var, what="mem_peak",
                     limit=reserve.limit(cluster))


def default_pairs(res: rank.SearchResult) -> list[tuple[str, str]]:
    """The crossings that bound the winner: against TRL's baselines and the best plan of every other
    teacher strategy."""
    pairs = [("best", "trl-zero3")]
    if res.ranked:
        seen = {res.ranked[0].strategy.teacher}
        for sc in res.ranked[1:]:
            if sc.strategy.teacher not in seen:
                seen.add(sc.strategy.teacher)
                pairs.append(("best", str(sc.strategy)))
    return pairs


def variable(name: str) -> Variable:
    if name not in VARIABLES:
        raise InputError(f"--in: '{name}' is not one of {', '.join(VARIABLES)}")
    return VARIABLES[name]

"""Named regimes (the recommended plan, TRL's baselines, any strategy) and the crossings that bound
the user's job."""

from __future__ import annotations

from dataclasses import dataclass, replace

from planner.cost import bind
from planner.inflection.crossing import VARIABLES, Crossing, Variable, crossings, substitutions
from planner.inputs.cluster import Cluster
from planner.inputs.errors import InputError
from planner.inputs.load import Job
from planner.search import plans, rank


@dataclass(frozen=True)
class Regime:
    name: str
    strategy: bind.Strategy
    runtime: str = "kd-planner"  # TRL's baselines run under trl-gkd


def label(st: bind.Strategy) -> str:
    place = st.placement if st.placement == "colocated" else f"disaggregated:{st.n_T}"
    return f"{st.teacher_label}/{st.student_label}/{place}/b={st.b}"


def resolve(text: str, job: Job, cluster: Cluster, res: rank.SearchResult) -> Regime:
    """`best`, `trl-zero3`, `trl-ddp`, or `TEACHER/STUDENT[/PLACEMENT[/MICRO_BATCH]]`."""
    if text == "best":
        if not res.ranked:
            raise InputError("best: no plan fits in memory on this cluster")
        return Regime("best (" + label(res.ranked[0].strategy) + ")", res.ranked[0].strategy, res.runtime)
    if text in res.baselines:
        sc = res.baselines[text]
        if sc is None:
            raise InputError(f"{text}: no micro-batch reaches the global batch on this cluster")
        return Regime(text, sc.strategy, res.baseline_runtime)
    parts = text.split("/")
    if len(parts) < 2:
        raise InputError(f"--between: '{text}' is not best, trl-zero3, trl-ddp or TEACHER/STUDENT[/PLACEMENT[/MICRO_BATCH]]")
    b = parts[3] if len(parts) > 3 else "1"
    if not b.isdigit() or int(b) < 1:
        raise InputError(f"--between: '{text}': micro-batch must be a whole number of at least 1")
    st = plans.parse_strategy(parts[0], parts[1], parts[2] if len(parts) > 2 else "colocated", int(b), cluster)
    return Regime(label(st), st)


def _subs(st: bind.Strategy, job: Job, cluster: Cluster, var: Variable, runtime: str = "kd-planner") -> dict:
    from planner.inputs.load import load_runtime

    values = bind.job_values(job, cluster, load_runtime(runtime)) | bind.strategy_values(st, cluster)
    inter = {"T": bind.tier_for(st.pp * st.tp * st.t_sh, cluster) == "inter_node",
             "S": bind.tier_for(st.s_sh, cluster) == "inter_node",
             "X": st.n_T + st.n_S > cluster.gpus_per_node, "R": True}
    return substitutions(var, values, inter, cluster)


def job_value(var: Variable, job: Job, cluster: Cluster, st: bind.Strategy) -> float:
    return {"inter_bw": cluster.inter_node.bw_gb_per_s, "micro_batch": st.b, "completion_len": job.workload.completion_len,
            "teacher_layers": job.teacher.num_layers, "nodes": cluster.nodes}[var.name]


def between(a: Regime, b: Regime, var: Variable, job: Job, cluster: Cluster) -> list[Crossing]:
    if var.name == "micro_batch":
        a, b = replace(a, strategy=replace(a.strategy, b=1)), replace(b, strategy=replace(b.strategy, b=1))
    return crossings(a.name, _subs(a.strategy, job, cluster, var, a.runtime), b.name, _subs(b.strategy, job, cluster, var, b.runtime), var)


def memory_boundary(a: Regime, var: Variable, job: Job, cluster: Cluster) -> list[Crossing]:
    """Where regime A's peak memory reaches the usable device memory."""
    out = crossings(a.name, _subs(a.strategy, job, cluster, var, a.runtime), "out of memory", {}, var, what="mem_peak",
                    limit=bind.usable_bytes(cluster))
    return out


def default_pairs(res: rank.SearchResult) -> list[tuple[str, str]]:
    """The crossings that bound the winner: against TRL's baselines and the best plan of every other
    teacher strategy."""
    pairs = [("best", "trl-zero3")]
    if res.ranked:
        seen = {res.ranked[0].strategy.teacher}
        for sc in res.ranked[1:]:
            if sc.strategy.teacher not in seen:
                seen.add(sc.strategy.teacher)
                st = sc.strategy
                place = "colocated" if st.placement == "colocated" else f"disaggregated:{st.n_T}"
                deg = st.pp * st.tp * st.t_sh
                pairs.append(("best", f"{st.teacher}:{deg}/{st.student}/{place}/{st.b}" if deg > 1 else f"{st.teacher}/{st.student}/{place}/{st.b}"))
    return pairs


def variable(name: str) -> Variable:
    if name not in VARIABLES:
        raise InputError(f"--in: '{name}' is not one of {', '.join(VARIABLES)}")
    return VARIABLES[name]

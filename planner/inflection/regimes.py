"""Named regimes (the recommended plan, TRL's baselines, any strategy) and the crossings that bound
the user's job."""

from __future__ import annotations

from dataclasses import dataclass, replace

from planner.cost import bind
from planner.inflection.crossing import VARIABLES, Crossing, Variable, crossings, substitutions
from planner.inputs.cluster import Cluster
from planner.inputs.errors import InputError
from planner.inputs.load import Job
from planner.search import baselines as trl
from planner.search import output as outputs
from planner.search import rank
from planner.strategy import GRAMMAR, Strategy


@dataclass(frozen=True)
class Regime:
    name: str
    strategy: Strategy
    runtime: str = "kd-planner"  # each TRL baseline runs under its own (planner.search.baselines)
    output: str | None = None  # the teacher output (planner.search.output); None: the job's


def resolve(text: str, job: Job, cluster: Cluster, res: rank.SearchResult) -> Regime:
    """`best`, a baseline (`trl-gkd-zero3`, `trl-distill-ddp`, `trl-server`, ...; the old `trl-zero3`
    and `trl-ddp` too), or a strategy (`Strategy.parse`: `shard:16/zero3/colocated/4`) with an
    optional teacher output (`+topk`, `+cached`, `+logits`)."""
    if text == "best":
        if not res.ranked:
            raise InputError("best: no plan fits in memory on this cluster")
        first = res.ranked[0]
        return Regime(f"best ({first.strategy}{outputs.suffix(first.output)})", first.strategy, res.runtime, first.output)
    name = trl.resolve(text)
    if name in res.baselines:
        sc = res.baselines[name]
        if sc is None:
            raise InputError(f"{text}: no configuration reaches the global batch on this cluster")
        return Regime(name, sc.strategy, sc.runtime, sc.output)
    if "/" not in text:
        raise InputError(f"--between: '{text}' is not best, {', '.join(res.baselines)} or {GRAMMAR}[+topk|+cached]")
    strategy, output = outputs.split(text, "--between")
    outputs.choose(job, output, "--between")
    st = Strategy.parse(strategy, cluster, "--between")
    return Regime(str(st) + outputs.suffix(output or "logits"), st, output=output)


def _subs(st: Strategy, job: Job, cluster: Cluster, var: Variable, runtime: str = "kd-planner", output: str | None = None) -> dict:
    from planner.inputs.load import load_runtime

    from planner.search.space import engine_columns, engine_rejection

    job = outputs.with_output(job, output) if output else job
    rt = load_runtime(runtime)
    if why := engine_rejection(st, rt):
        raise InputError(f"--between: {st}: {why}")
    engine = {k: float(v[0]) for k, v in engine_columns([st], rt, cluster).items()}  # the strategy's rollout engine, not the runtime's own
    values = bind.job_values(job, cluster, rt) | bind.strategy_values(st, cluster) | engine
    inter = {group: where in ("inter_node", "one_nic") for group, where in st.links(cluster).items()}
    return substitutions(var, values, inter, cluster)


def job_value(var: Variable, job: Job, cluster: Cluster, st: Strategy) -> float:
    return {"inter_bw": cluster.inter_node.bw_gb_per_s, "micro_batch": st.b, "completion_len": job.workload.completion_len,
            "teacher_layers": job.teacher.num_layers, "nodes": cluster.nodes, "vocab": job.teacher.vocab}[var.name]


def between(a: Regime, b: Regime, var: Variable, job: Job, cluster: Cluster) -> list[Crossing]:
    if var.name == "micro_batch":
        a, b = replace(a, strategy=replace(a.strategy, b=1)), replace(b, strategy=replace(b.strategy, b=1))
    return crossings(a.name, _subs(a.strategy, job, cluster, var, a.runtime, a.output),
                     b.name, _subs(b.strategy, job, cluster, var, b.runtime, b.output), var)


def memory_boundary(a: Regime, var: Variable, job: Job, cluster: Cluster, reserve: rank.Reserve = rank.Reserve()) -> list[Crossing]:
    """Where regime A's peak memory reaches the most the search lets a plan use (the usable device
    memory less the reserve)."""
    return crossings(a.name, _subs(a.strategy, job, cluster, var, a.runtime, a.output), "out of memory", {}, var, what="mem_peak",
                     limit=reserve.limit(cluster))


def default_pairs(res: rank.SearchResult) -> list[tuple[str, str]]:
    """The crossings that bound the winner: against the strongest baseline that fits (else TRL's
    GKD ZeRO-3), the best plan of every other teacher strategy, and the winner's own layout with
    every other teacher output the search tried (where top-k overtakes full logits)."""
    pairs = [("best", res.strongest or "trl-gkd-zero3")]
    if res.ranked:
        first = res.ranked[0]
        seen = {first.strategy.teacher}
        for sc in res.ranked[1:]:
            if sc.strategy.teacher not in seen:
                seen.add(sc.strategy.teacher)
                pairs.append(("best", str(sc.strategy) + outputs.suffix(sc.output)))
        for out in sorted({sc.output for sc in res.ranked} - {first.output}, key=outputs.OUTPUT_ORDER.get):
            pairs.append(("best", f"{first.strategy}+{out}"))
    return pairs


def variable(name: str) -> Variable:
    if name not in VARIABLES:
        raise InputError(f"--in: '{name}' is not one of {', '.join(VARIABLES)}")
    return VARIABLES[name]

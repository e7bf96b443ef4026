"""Evaluate candidates with the compiled model, judge memory against a reserve, rank, group the
plans that tie with the fastest, and explain the choice."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace

import numpy as np

from planner.cost import bind
from planner.cost.compile import evaluate
from planner.cost.names import STUDENT_TERMS, TEACHER_TERMS
from planner.inputs.cluster import Cluster
from planner.inputs.load import DEFAULT_RUNTIME, Job, load_runtime
from planner.inputs.runtime import Runtime
from planner.search import baselines as trl
from planner.search import output as outputs
from planner.search import rollout_tp, space
from planner.search.rollout_tp import RolloutTP
from planner.strategy import TEACHER_WORDS, Strategy

TERM_LABELS = {
    "generation": "on-policy generation",
    "teacher_gather_exposed": "teacher all-gather not hidden by compute",
    "student_fsdp_exposed": "student ZeRO-3 gathers not hidden by compute",
    "teacher_bubble": "teacher pipeline fill/drain bubble",
    "teacher_comm": "teacher pipeline/tensor-parallel transfers",
    "teacher_wait": "students waiting for the teacher",
    "grad_sync": "student gradient synchronisation",
    "loss": "the loss over the vocabulary",
    "teacher_transfer": "teacher outputs sent to the students",
    "teacher_cache_pass": "the one-time teacher pass that writes the cache",
}


SERVED_TOPK = "a served teacher returns top-k log-probs only"
TIE_MARGIN = 0.01  # plans within 1% of the fastest tie: the model is off by 15% on average (README)


@dataclass(frozen=True)
class Reserve:
    """Memory every device must keep free beyond the plan's predicted peak: a fraction of the usable
    memory plus a fixed amount. The topology's `reserved_mem_gib` already holds back the runtime's
    fixed cost (CUDA context, NCCL buffers: 3-6 GiB in the bundled topologies); what it does not
    cover grows with the allocations themselves (the caching allocator's fragmentation, allocator
    rounding, a longer batch than the plan's), hence a fraction, 5% by default."""

    fraction: float = 0.05
    gib: float = 0.0

    def bytes(self, cluster: Cluster) -> float:
        return self.fraction * bind.usable_bytes(cluster) + self.gib * 2**30

    def limit(self, cluster: Cluster) -> float:
        """The most a plan may use per device: the usable memory less the reserve."""
        return bind.usable_bytes(cluster) - self.bytes(cluster)

    def describe(self, cluster: Cluster) -> str:
        parts = ([f"{self.fraction:.0%}"] if self.fraction else []) + ([f"{self.gib:g} GiB"] if self.gib else [])
        return f"{' + '.join(parts) or 'no'} reserve ({self.bytes(cluster) / 2**30:.1f} GiB)"


@dataclass
class Scored:
    """One evaluated candidate: its strategy and its figures (bytes, seconds); `free` is what the
    busiest device keeps beyond the predicted peak (bytes)."""

    strategy: Strategy
    figures: dict[str, float]
    feasible: bool
    reason: str | None = None
    free: float = 0.0
    output: str = "logits"  # the teacher output it trains from (planner.search.output)
    runtime: str = DEFAULT_RUNTIME  # the runtime it is costed under

    @property
    def samples_per_s(self) -> float:
        return self.figures["samples_per_s"]

    def memory_terms(self) -> dict[str, float]:
        """Every memory term. A disaggregated plan holds the student terms on the student ranks and
        the teacher terms on the teacher ranks (`memory_sides`); colocated, all on one device."""
        return {k: self.figures[f"mem.{k}"] for k in STUDENT_TERMS + TEACHER_TERMS}

    @property
    def apart(self) -> bool:
        """Teacher and student terms never share a device at once: a disaggregated plan, or a cached
        one (its teacher terms are the one-time pass that writes the cache)."""
        return self.strategy.placement == "disaggregated" or self.output == "cached"

    def busiest_terms(self) -> dict[str, float]:
        """Terms of the busiest device (a disaggregated or cached plan: the fuller side only)."""
        f = self.figures
        names = STUDENT_TERMS + TEACHER_TERMS
        if self.apart:
            names = TEACHER_TERMS if f["mem_teacher_side"] > f["mem_student_side"] else STUDENT_TERMS
        return {k: f[f"mem.{k}"] for k in names}

    def memory_sides(self) -> dict[str, float]:
        """Bytes per device on the student ranks and on the teacher ranks (the same device when colocated)."""
        f = self.figures
        if self.output == "cached":  # no teacher while training; the teacher alone during the pass
            return {"student_ranks": f["mem_student_side"], "teacher_pass": f["mem_teacher_side"]}
        if self.strategy.placement == "disaggregated":
            return {"student_ranks": f["mem_student_side"], "teacher_ranks": f["mem_teacher_side"]}
        return {"student_ranks": f["mem_peak"], "teacher_ranks": f["mem_peak"]}

    def time_terms(self) -> dict[str, float]:
        return {k[5:]: v for k, v in self.figures.items() if k.startswith("time.")}


@dataclass
class SearchResult:
    ranked: list[Scored]
    baselines: dict[str, Scored | None]
    rejected: dict[str, int]
    evaluated: int
    closest: Scored | None = None  # smallest-memory candidate when nothing fits
    usable_bytes: float = 0.0
    reserve_bytes: float = 0.0  # of the usable bytes, kept free by every plan
    tied: int = 0  # ranked[:tied] are within `margin` of the fastest, the recommended one first
    margin: float = TIE_MARGIN
    why_first: str = ""  # why ranked[0] is the one recommended among the tied
    notes: list[str] = field(default_factory=list)
    runtime: str = DEFAULT_RUNTIME  # what the ranked plans run under (each baseline: its own `Scored.runtime`)
    rollout_tp: RolloutTP | None = None  # the rollout servers' TP degree chosen per rollout GPU count, with the times tried

    @property
    def strongest(self) -> str | None:
        """The name of the fastest baseline that fits, or None."""
        return strongest(self.baselines)


def score(cands: list[Strategy], reasons: list[str | None], job: Job, cluster: Cluster,
          runtime: Runtime | None = None, reserve: Reserve = Reserve()) -> list[Scored]:
    """Evaluate candidates (run by `runtime`, default the bundled executor, with the job's teacher
    output: full logits under auto) in one vectorised call and attach feasibility: a plan must
    leave the `reserve` free."""
    if not cands:
        return []
    runtime = runtime or load_runtime(DEFAULT_RUNTIME)
    values = bind.job_values(job, cluster, runtime)
    res = evaluate(values | space.columns(cands, cluster) | space.engine_columns(cands, runtime, cluster))
    usable, limit = bind.usable_bytes(cluster), reserve.limit(cluster)
    keys = list(res)
    table = np.stack([np.asarray(res[k], dtype=float) for k in keys], axis=1)
    out = []
    for i, (st, why) in enumerate(zip(cands, reasons)):
        figs = dict(zip(keys, table[i].tolist()))
        s = Scored(st, figs, feasible=False, reason=why, free=usable - figs["mem_peak"], output=outputs.of(job), runtime=runtime.name)
        if why is None:
            if figs["rollout_gpu_shortfall"] > 0:
                s.reason = "out of memory on the rollout GPUs (the engine's copy of the student does not fit its share)"
            elif figs["mem_peak"] > usable:
                terms = s.busiest_terms()
                s.reason = f"out of memory (largest term: {max(terms, key=terms.get)})"
            elif figs["mem_peak"] > limit:
                s.reason = f"out of memory with the {reserve.describe(cluster)} kept free"
            else:
                s.feasible = True
        out.append(s)
    return out


def recommend_order(tied: list[Scored]) -> list[Scored]:
    """Plans that tie on speed, the recommended first: the least machinery in placement and teacher
    split (colocated before disaggregated; a replicated teacher before a sharded, tensor-parallel or
    pipelined one), then the most free memory (the student's ZeRO stage and the micro-batch trade
    memory for nothing once speed ties), then speed."""
    return sorted(tied, key=lambda s: (outputs.OUTPUT_ORDER[s.output], s.strategy.machinery[:2], -s.free, -s.samples_per_s))


def why_recommended(tied: list[Scored], margin: float, reserve: float) -> str:
    """Why tied[0] (ordered by `recommend_order`) is the one recommended, in words."""
    first = tied[0]
    if len(tied) == 1:
        return "the fastest plan; no other is within " + f"{margin:.0%}"
    st = first.strategy
    simplest = [s for s in tied if (s.output, s.strategy.machinery[:2]) == (first.output, st.machinery[:2])]
    layout = (f"{st.placement} with {TEACHER_WORDS[st.teacher]}" + (" and expert parallelism" if st.ep > 1 else "")
              + ("" if first.output == "logits" else f" and {outputs.WORDS[first.output]}"))
    free = f"{first.free / 2**30:.1f} GiB per device (the reserve is {reserve / 2**30:.1f} GiB)"
    if len(simplest) == len(tied):
        return f"all are {layout}; it keeps the most memory free: {free}"
    if len(simplest) == 1:
        return f"the simplest layout among them ({layout}); it keeps {free} free"
    return (f"{layout} is the simplest layout among them ({len(simplest)} plans); of those it keeps the most memory "
            f"free: {free}")


def best_baseline(scored: list[Scored]) -> Scored | None:
    """TRL's best micro-batch that fits; if none fits, the smallest-memory one (marked infeasible)."""
    if not scored:
        return None
    fit = [s for s in scored if s.feasible]
    if fit:
        return max(fit, key=lambda s: s.samples_per_s)
    return min(scored, key=lambda s: s.figures["mem_peak"])


def baselines(job: Job, cluster: Cluster, reserve: Reserve = Reserve()) -> dict[str, Scored | None]:
    """What people run today (`planner.search.baselines`), each under its own runtime and teacher
    output, best configuration each, judged against the same memory reserve as the plans."""
    out = {}
    for base in trl.BASELINES:
        rt = load_runtime(base.runtime)
        own = rt.generation.engine  # its own engine, asleep as its runtime says
        cands = [replace(c, rollout=own, sleep=rt.generation.sleeps()[-1]) for c in trl.layouts(base, job, cluster)]
        out[base.name] = best_baseline(score(cands, [None] * len(cands), outputs.with_output(job, base.output), cluster, rt, reserve))
    return out


def teacher_gpus_why(res: SearchResult) -> str:
    """Why the recommended plan gives the teacher that many GPUs: the fastest plan that fits with each
    other teacher GPU count (colocated: every GPU holds both), in samples/s."""
    if not res.ranked:
        return ""
    best: dict[str, float] = {}
    for sc in res.ranked:
        key = "colocated" if sc.strategy.placement == "colocated" else f"{sc.strategy.n_T} of {sc.strategy.world}"
        best[key] = max(best.get(key, 0.0), sc.samples_per_s)
    first = res.ranked[0].strategy
    mine = "colocated" if first.placement == "colocated" else f"{first.n_T} of {first.world}"
    if len(best) < 2:
        return f"{mine}, the only split that fits"
    order = sorted(best, key=lambda k: (k != "colocated", int(k.split()[0]) if k != "colocated" else 0))
    return "fastest plan that fits with each: " + ", ".join(f"{k} {best[k]:.2f}" + (" (this one)" if k == mine else "") for k in order) + " samples/s"


def rollout_gpus_why(res: SearchResult) -> str:
    """Why the recommended plan generates where it does: the fastest plan that fits on the trainer's
    GPUs and with each count of rollout GPUs of their own, in samples/s ('' when no plan has any)."""
    if not res.ranked:
        return ""
    best: dict[int, float] = {}
    for sc in res.ranked:
        best[sc.strategy.n_R] = max(best.get(sc.strategy.n_R, 0.0), sc.samples_per_s)
    if set(best) == {0}:
        return ""
    mine = res.ranked[0].strategy.n_R
    words = lambda n: "on the trainer's" if n == 0 else f"{n} of their own"  # noqa: E731
    return "fastest plan that fits with each: " + ", ".join(f"{words(n)} {best[n]:.2f}" + (" (this one)" if n == mine else "")
                                                           for n in sorted(best)) + " samples/s"


def strongest(base: dict[str, Scored | None]) -> str | None:
    """The fastest baseline that fits (the one a plan's speed-up is against), or None."""
    fit = {name: sc for name, sc in base.items() if sc is not None and sc.feasible}
    return max(fit, key=lambda name: fit[name].samples_per_s) if fit else None


def search(job: Job, cluster: Cluster, objective: str = "throughput", runtime: Runtime | None = None,
           reserve: Reserve = Reserve(), margin: float = TIE_MARGIN) -> SearchResult:
    """Every candidate layout run by `runtime` (default the bundled executor), a sharded student
    gathered for generation each way the runtime can (`space.gathers`), ranked, against TRL's
    layouts run by TRL. Only plans that keep the `reserve` free count. By throughput, the plans
    within `margin` of the fastest tie and come first, the recommended one (`recommend_order`)
    first of all; the others follow by speed. By memory, the smallest peak first."""
    runtime = runtime or load_runtime(DEFAULT_RUNTIME)
    scored, gathers = [], space.gathers(job, runtime)
    engines, servings = space.rollout_engines(job, cluster, runtime), space.teacher_servings(job, runtime)
    tps = rollout_tp.choose(outputs.with_output(job, job.workload.outputs[0]), cluster, runtime,
                            space.dedicated_counts(engines, runtime, cluster, job.workload), score)
    for out in job.workload.outputs:  # every teacher output the job allows, each layout with each
        cands, reasons = space.enumerate_candidates(job, cluster, gathers, engines, servings, runtime, tps.chosen)
        reasons = [why or outputs.rejection(out, st.disaggregated) or (SERVED_TOPK if st.served and out != "topk" else None)
                   or runtime.cannot_run(st.teacher, st.placement, st.ep, out, st.gather if st.gathers(job) else None,
                                         bool(job.teacher.num_experts))
                   or space.engine_rejection(st, runtime)
                   for st, why in zip(cands, reasons)]
        scored += score(cands, reasons, outputs.with_output(job, out), cluster, runtime, reserve)
    set_aside_dominated_gathers(scored)
    base = baselines(job, cluster, reserve=reserve)
    fit = [s for s in scored if s.feasible]
    tied, why = len(fit[:1]), ""
    if objective == "memory":
        fit.sort(key=lambda s: (s.figures["mem_peak"], -s.samples_per_s))
    elif fit:
        top = max(s.samples_per_s for s in fit)
        group = recommend_order([s for s in fit if s.samples_per_s >= (1 - margin) * top])
        rest = sorted((s for s in fit if s.samples_per_s < (1 - margin) * top),
                      key=lambda s: (-s.samples_per_s, s.strategy.machinery, -s.free))
        fit, tied, why = group + rest, len(group), why_recommended(group, margin, reserve.bytes(cluster))
    rejected = Counter(s.reason for s in scored if not s.feasible)
    skipped = space.unreachable(job, cluster, gathers, engines, servings, runtime, tps.chosen) * len(job.workload.outputs)
    if skipped:
        rejected[space.UNREACHABLE] += skipped
    runnable = [s for s in scored if s.reason is None or s.reason.startswith("out of memory")]
    closest = None if fit or not runnable else min(runnable, key=lambda s: s.figures["mem_peak"])
    notes = [n for n in (expert_note(scored, fit, runtime),) if n]
    return SearchResult(fit, base, dict(rejected.most_common()), len(scored) + skipped, closest, bind.usable_bytes(cluster),
                        reserve.bytes(cluster), tied, margin, why, notes, runtime=runtime.name, rollout_tp=tps)


DOMINATED_GATHER = "the same layout gathers its student the other way as fast in no more memory"


def set_aside_dominated_gathers(scored: list[Scored]) -> None:
    """The plan chooses how its sharded student is gathered for generation: of two feasible twins
    that differ only in that (`Strategy.gather`), one at least as fast in no more memory sets the
    other aside (the reason `DOMINATED_GATHER`); a faster twin that needs more memory leaves both."""
    by_layout: dict[tuple, list[Scored]] = {}
    for s in scored:
        if s.feasible and s.strategy.student_shards[2]:
            by_layout.setdefault((replace(s.strategy, gather="once"), s.output), []).append(s)
    for twins in (t for t in by_layout.values() if len(t) > 1):
        for s in twins:
            if any(o is not s and o.feasible and o.samples_per_s >= s.samples_per_s and o.figures["mem_peak"] <= s.figures["mem_peak"]
                   for o in twins):
                s.feasible, s.reason = False, DOMINATED_GATHER


def expert_note(scored: list[Scored], ranked: list[Scored], runtime: Runtime) -> str | None:
    """What became of the expert-parallel candidates (an MoE teacher only), so that a user sees
    that expert parallelism was considered, and why none is ranked when the runtime cannot run it."""
    ep = [s for s in scored if s.strategy.ep > 1]
    if not ep:
        return None
    if not runtime.expert_parallel:
        refused = [s for s in ep if s.reason == runtime.cannot_run(s.strategy.teacher, s.strategy.placement, s.strategy.ep)]
        fit = sum(1 for s in refused if s.free >= 0)
        return (f"Expert parallelism: {len(ep)} expert-parallel teacher layouts considered, none ranked: the {runtime.name} "
                f"runtime cannot run them ({fit} would fit in the usable memory); `--runtime megatron-ep` models a runtime that can.")
    fits = [i for i, s in enumerate(ranked) if s.strategy.ep > 1]
    best = f"; the best is #{fits[0] + 1} ({ranked[fits[0]].strategy})" if fits else ""
    return f"Expert parallelism: {len(ep)} expert-parallel teacher layouts considered, {len(fits)} fit{best}."


def speedup(plan: Scored, baseline: Scored | None) -> float | None:
    if baseline is None or not baseline.feasible:
        return None
    return plan.samples_per_s / baseline.samples_per_s


def why_it_wins(winner: Scored, baseline: Scored | None, cluster: Cluster, name: str = "TRL's layout") -> str:
    """One line naming the term the winner saves most against the baseline (`name`); that a top-k
    winner's loss is an approximation is `planner.search.output.note`'s line."""
    if baseline is None:
        return "no baseline (TRL, verl) reaches the global batch on this cluster"
    if not baseline.feasible and winner.samples_per_s <= baseline.samples_per_s:
        return f"it fits in memory; {name} ({baseline.strategy}) would be faster but does not fit: {baseline.reason}"
    bt, wt = baseline.time_terms(), winner.time_terms()
    if baseline.feasible and winner.samples_per_s < 0.99 * baseline.samples_per_s:  # the runtime's plans lose: say where
        term = max(wt, key=lambda k: wt[k] - bt.get(k, 0.0))
        return (f"it does not: {name} is {baseline.samples_per_s / winner.samples_per_s - 1:.0%} faster, mostly in "
                f"{TERM_LABELS.get(term, term.replace('_', ' '))} ({wt[term] - bt.get(term, 0.0):.3g} s more a step here)")
    if baseline.feasible and winner.samples_per_s < 1.01 * baseline.samples_per_s:
        top = max(wt, key=wt.get)
        return (f"within 1% of {name}: {TERM_LABELS.get(top, top.replace('_', ' '))} is "
                f"{wt[top] / winner.figures['step_time']:.0%} of the step and costs every layout about the same")
    term = max(bt, key=lambda k: bt[k] - wt.get(k, 0.0))
    share = bt[term] / baseline.figures["step_time"]
    tier = cluster.inter_node.name if baseline.strategy.n_T > cluster.gpus_per_node else cluster.intra_node.name
    label = TERM_LABELS.get(term, term.replace("_", " "))
    where = f" over {tier}" if "gather" in term or "sync" in term else ""
    fits = "" if baseline.feasible else " (and the baseline does not even fit in memory)"
    return f"{label}{where}: {share:.0%} of the baseline's step{fits}"

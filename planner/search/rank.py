"""Evaluate candidates with the compiled model, judge memory, rank, and explain the winner."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from planner.cost import bind
from planner.cost.compile import evaluate
from planner.cost.names import STUDENT_TERMS, TEACHER_TERMS
from planner.inputs.cluster import Cluster
from planner.inputs.load import BASELINE_RUNTIME, DEFAULT_RUNTIME, Job, load_runtime
from planner.inputs.runtime import Runtime
from planner.search import space
from planner.search.strategy import Strategy

TERM_LABELS = {
    "generation": "on-policy generation",
    "teacher_gather_exposed": "teacher all-gather not hidden by compute",
    "student_fsdp_exposed": "student ZeRO-3 gathers not hidden by compute",
    "teacher_bubble": "teacher pipeline fill/drain bubble",
    "teacher_comm": "teacher pipeline/tensor-parallel transfers",
    "teacher_wait": "students waiting for the teacher",
    "grad_sync": "student gradient synchronisation",
}


@dataclass
class Scored:
    """One evaluated candidate: its strategy and its figures (bytes, seconds)."""

    strategy: Strategy
    figures: dict[str, float]
    feasible: bool
    reason: str | None = None

    @property
    def samples_per_s(self) -> float:
        return self.figures["samples_per_s"]

    def memory_terms(self) -> dict[str, float]:
        """Every memory term. A disaggregated plan holds the student terms on the student ranks and
        the teacher terms on the teacher ranks (`memory_sides`); colocated, all on one device."""
        return {k: self.figures[f"mem.{k}"] for k in STUDENT_TERMS + TEACHER_TERMS}

    def busiest_terms(self) -> dict[str, float]:
        """Terms of the busiest device (a disaggregated plan: the fuller side only)."""
        f = self.figures
        names = STUDENT_TERMS + TEACHER_TERMS
        if self.strategy.placement == "disaggregated":
            names = TEACHER_TERMS if f["mem_teacher_side"] > f["mem_student_side"] else STUDENT_TERMS
        return {k: f[f"mem.{k}"] for k in names}

    def memory_sides(self) -> dict[str, float]:
        """Bytes per device on the student ranks and on the teacher ranks (the same device when colocated)."""
        f = self.figures
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
    notes: list[str] = field(default_factory=list)
    runtime: str = DEFAULT_RUNTIME  # what the ranked plans run under
    baseline_runtime: str = BASELINE_RUNTIME  # what the baselines run under


def score(cands: list[Strategy], reasons: list[str | None], job: Job, cluster: Cluster,
          runtime: Runtime | None = None) -> list[Scored]:
    """Evaluate candidates (run by `runtime`, default the bundled executor) in one vectorised call
    and attach feasibility."""
    if not cands:
        return []
    res = evaluate(bind.job_values(job, cluster, runtime) | space.columns(cands, cluster))
    usable = bind.usable_bytes(cluster)
    keys = list(res)
    table = np.stack([np.asarray(res[k], dtype=float) for k in keys], axis=1)
    out = []
    for i, (st, why) in enumerate(zip(cands, reasons)):
        figs = dict(zip(keys, table[i].tolist()))
        s = Scored(st, figs, feasible=False, reason=why)
        if why is None:
            if figs["mem_peak"] > usable:
                terms = s.busiest_terms()
                s.reason = f"out of memory (largest term: {max(terms, key=terms.get)})"
            else:
                s.feasible = True
        out.append(s)
    return out


def complexity(st: Strategy) -> tuple[int, int, int]:
    """How much machinery a plan needs (placement, teacher, student): breaks near-ties."""
    return st.machinery


def best_baseline(scored: list[Scored]) -> Scored | None:
    """TRL's best micro-batch that fits; if none fits, the smallest-memory one (marked infeasible)."""
    if not scored:
        return None
    fit = [s for s in scored if s.feasible]
    if fit:
        return max(fit, key=lambda s: s.samples_per_s)
    return min(scored, key=lambda s: s.figures["mem_peak"])


def baselines(job: Job, cluster: Cluster, runtime: Runtime | None = None) -> dict[str, Scored | None]:
    """TRL's layouts (`space.baselines`) run by TRL's runtime (default `trl-gkd`), best micro-batch each."""
    rt = runtime or load_runtime(BASELINE_RUNTIME)
    return {name: best_baseline(score(c, [None] * len(c), job, cluster, rt)) for name, c in space.baselines(job, cluster).items()}


def search(job: Job, cluster: Cluster, objective: str = "throughput", runtime: Runtime | None = None) -> SearchResult:
    """Every candidate layout run by `runtime` (default the bundled executor), ranked, against TRL's
    layouts run by TRL."""
    runtime = runtime or load_runtime(DEFAULT_RUNTIME)
    cands, reasons = space.enumerate_candidates(job, cluster)
    scored = score(cands, reasons, job, cluster, runtime)
    base = baselines(job, cluster)
    fit = [s for s in scored if s.feasible]
    if objective == "memory":
        fit.sort(key=lambda s: (s.figures["mem_peak"], -s.samples_per_s))
    elif fit:
        top = max(s.samples_per_s for s in fit)
        # within 1% of each other plans tie; then the simpler one ranks first
        fit.sort(key=lambda s: (-round(s.samples_per_s / top, 2), complexity(s.strategy), -s.samples_per_s))
    rejected = Counter(s.reason for s in scored if not s.feasible)
    runnable = [s for s in scored if s.reason is None or s.reason.startswith("out of memory")]
    closest = None if fit or not runnable else min(runnable, key=lambda s: s.figures["mem_peak"])
    return SearchResult(fit, base, dict(rejected.most_common()), len(scored), closest, bind.usable_bytes(cluster),
                        runtime=runtime.name)


def speedup(plan: Scored, baseline: Scored | None) -> float | None:
    if baseline is None or not baseline.feasible:
        return None
    return plan.samples_per_s / baseline.samples_per_s


def why_it_wins(winner: Scored, baseline: Scored | None, cluster: Cluster) -> str:
    """One line naming the term the winner saves most against the baseline."""
    if baseline is None:
        return "no TRL baseline reaches the global batch on this cluster"
    bt, wt = baseline.time_terms(), winner.time_terms()
    if baseline.feasible and winner.samples_per_s < 1.01 * baseline.samples_per_s:
        top = max(wt, key=wt.get)
        return (f"within 1% of TRL's layout: {TERM_LABELS.get(top, top.replace('_', ' '))} is "
                f"{wt[top] / winner.figures['step_time']:.0%} of the step and costs every layout about the same")
    term = max(bt, key=lambda k: bt[k] - wt.get(k, 0.0))
    share = bt[term] / baseline.figures["step_time"]
    tier = cluster.inter_node.name if baseline.strategy.n_T > cluster.gpus_per_node else cluster.intra_node.name
    label = TERM_LABELS.get(term, term.replace("_", " "))
    where = f" over {tier}" if "gather" in term or "sync" in term else ""
    fits = "" if baseline.feasible else " (and the baseline does not even fit in memory)"
    return f"{label}{where}: {share:.0%} of the baseline's step{fits}"

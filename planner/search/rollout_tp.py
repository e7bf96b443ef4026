"""The tensor-parallel degree of the rollout servers on GPUs of their own, chosen once per rollout
GPU count before the trainer's layouts are built.

On rollout GPUs of their own, the rollout role's two terms (`timeline.terms` with `ded` = 1: the
step's generation on n_R GPUs as n_R/tp servers, and the weight refresh into them) depend on the
engine, n_R and tp, not on how the trainer splits the teacher and the student (the trainer's own
share of the refresh, a sharded student's gather, does not depend on tp), and whether the engine
fits its GPUs (`rollout_gpu_shortfall`) depends on the engine alone. A synchronous step is the
trainer's time plus both terms: the degree with the smallest sum is the fastest whatever the trainer
does. One step ahead, the step is the refresh plus the longer of the generation and the trainer:
a degree can win by a shorter refresh while its generation hides behind the trainer, so every degree
that no other beats on both terms stays (usually one or two). The search builds the trainer's
layouts with those degrees only, instead of with every degree (3x the candidates on 8-GPU nodes).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from planner.inputs.cluster import Cluster
from planner.inputs.load import Job
from planner.inputs.runtime import Runtime
from planner.strategy import ROLLOUT_HEADS, Strategy


@dataclass(frozen=True)
class RolloutTP:
    """Per (engine, rollout GPUs): the (generation, refresh) seconds per step at each degree tried
    (None: the engine does not fit its GPUs at that degree); per (engine, rollout GPUs, one step
    ahead): the degrees kept."""

    seconds: dict[tuple[str, int], dict[int, tuple[float, float] | None]]
    chosen: dict[tuple[str, int, bool], tuple[int, ...]]

    def reason(self, st: Strategy) -> str:
        """Why the plan's servers have their degree ('' for a plan without rollout GPUs of their own or with one degree tried)."""
        tried = self.seconds.get((st.rollout, st.n_R), {})
        if len(tried) < 2:
            return ""
        cells = ", ".join(f"tp {k} " + ("does not fit" if s is None else f"{s[0]:.3g} + {s[1]:.3g} s") for k, s in sorted(tried.items()))
        return f"{st.n_R // st.g_tp} server(s) of tp {st.g_tp} on the {st.n_R} rollout GPUs (generation + weight refresh per step: {cells})"


def kept(tried: dict[int, tuple[float, float] | None], ahead: bool) -> tuple[int, ...]:
    """The degrees the search keeps: synchronous, the one with the shortest generation + refresh;
    one step ahead, each that no other beats on both; the smaller degree on ties; every degree
    where none fits (the plans say out of memory)."""
    fits = {k: s for k, s in tried.items() if s is not None}
    if not fits:
        return tuple(sorted(tried))
    if not ahead:
        return (min(fits, key=lambda k: (sum(fits[k]), k)),)
    beaten = lambda k: any(o != k and all(a <= b for a, b in zip(fits[o], fits[k])) and (fits[o] != fits[k] or o < k)  # noqa: E731
                           for o in fits)
    return tuple(sorted(k for k in fits if not beaten(k)))


def choose(job: Job, cluster: Cluster, runtime: Runtime, counts: dict[str, dict[int, tuple[int, ...]]], score: Callable) -> RolloutTP:
    """`counts`: per dedicated engine, each rollout GPU count with the degrees to try there. Each
    (engine, count, degree) is scored once (`score`: `rank.score`) on the simplest trainer beside it
    (a replicated teacher and a DDP student on the other GPUs: it only has to exist, its time is not read)."""
    probes, keys = [], []
    for engine, by_count in counts.items():
        for n_R, tps in by_count.items():
            if len(tps) < 2:
                continue
            W = cluster.world - n_R
            for k in tps:
                probe = Strategy("replicate", "ddp", "colocated", W, W, s_sh=W, rollout=engine, n_R=n_R, g_tp=k)
                if k > 1 and probe.rejection(job) == ROLLOUT_HEADS:  # a degree vLLM cannot split the student over: never kept
                    continue
                probes.append(probe)
                keys.append((engine, n_R, k))
    seconds: dict[tuple[str, int], dict[int, tuple[float, float] | None]] = {}
    for (engine, n_R, k), sc in zip(keys, score(probes, [None] * len(probes), job, cluster, runtime) if probes else []):
        f = sc.figures
        seconds.setdefault((engine, n_R), {})[k] = None if f["rollout_gpu_shortfall"] > 0 else (f["time.generation"], f["time.weight_sync"])
    chosen = {(e, n, a): kept(tried, a) for (e, n), tried in seconds.items() for a in (False, True)}
    return RolloutTP(seconds, chosen)

"""The partition space: every teacher split x student split x placement x micro-batch on a cluster.

Candidates that cannot run are not dropped silently: each carries the reason it was rejected
(degree does not divide, batch not reachable); memory is judged after evaluation.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from planner.cost.bind import Strategy, strategy_values
from planner.inputs.cluster import Cluster
from planner.inputs.load import Job


def _divisors(n: int) -> list[int]:
    return [k for k in range(1, n + 1) if n % k == 0]


def teacher_splits(n_T: int, job: Job, cluster: Cluster) -> list[tuple[Strategy, str | None]]:
    """Teacher strategies on n_T ranks: (partial strategy, rejection reason or None)."""
    G, t = cluster.gpus_per_node, job.teacher
    out: list[tuple[Strategy, str | None]] = [(Strategy("replicate", "ddp", "", n_T, 0), None)]
    for k in _divisors(n_T)[1:]:
        out.append((Strategy("shard", "ddp", "", n_T, 0, t_sh=k), None))
        name = "hybrid" if k <= G and n_T > k and n_T > G else "pipeline"
        why = None if k <= t.num_layers else "pipeline degree exceeds teacher layers"
        out.append((Strategy(name, "ddp", "", n_T, 0, pp=k), why))
        if k <= G:
            why = None if t.num_heads % k == 0 and t.kv_heads % k == 0 else "tensor-parallel degree does not divide the teacher heads"
            out.append((Strategy("tp", "ddp", "", n_T, 0, tp=k), why))
    return out


def student_splits(n_S: int, cluster: Cluster) -> list[tuple[str, int, int]]:
    """(strategy, shard group, replicas) for the student on n_S ranks."""
    if n_S == 1:
        return [("ddp", 1, 1)]  # nothing to shard over
    out = [(s, n_S, 1) for s in ("ddp", "zero1", "zero2", "zero3")]
    G = cluster.gpus_per_node
    if n_S > G and n_S % G == 0:
        out.append(("hsdp", G, n_S // G))
    return out


def placements(cluster: Cluster) -> list[tuple[str, int, int]]:
    """(placement, n_T, n_S): colocated on all ranks, or the teacher on whole nodes (or, on one
    node, on a divisor of the node) and the student on the rest."""
    W, G = cluster.world, cluster.gpus_per_node
    out = [("colocated", W, W)]
    teacher_sizes = [k * G for k in range(1, cluster.nodes)] if cluster.nodes > 1 else [k for k in _divisors(G) if k < G]
    out += [("disaggregated", n_T, W - n_T) for n_T in teacher_sizes]
    return out


def enumerate_candidates(job: Job, cluster: Cluster) -> tuple[list[Strategy], list[str | None]]:
    """Every candidate with its rejection reason (None = runnable, subject to memory)."""
    w = job.workload
    cands: list[Strategy] = []
    reasons: list[str | None] = []
    for placement, n_T, n_S in placements(cluster):
        for t, t_why in teacher_splits(n_T, job, cluster):
            for s_name, s_sh, r_S in student_splits(n_S, cluster):
                for b in range(w.micro_batch_min, w.micro_batch_max + 1):
                    st = replace(t, student=s_name, placement=placement, n_S=n_S, s_sh=s_sh, r_S=r_S, b=b)
                    why = t_why
                    if why is None and w.global_batch % (b * n_S):
                        why = "global batch not divisible by micro-batch x student ranks"
                    cands.append(st)
                    reasons.append(why)
    return cands, reasons


def columns(cands: list[Strategy], cluster: Cluster) -> dict[str, np.ndarray]:
    """Strategy symbol values as arrays over the candidates (one column per symbol); a column
    that is the same for every candidate stays a scalar, so numpy broadcasts instead of computing."""
    rows = [strategy_values(c, cluster) for c in cands]
    cols = {k: np.array([r[k] for r in rows], dtype=float) for k in rows[0]} if rows else {}
    return {k: (float(v[0]) if len(v) > 1 and np.all(v == v[0]) else v) for k, v in cols.items()}


def baselines(job: Job, cluster: Cluster) -> dict[str, list[Strategy]]:
    """TRL 1.16 as users run it: both models ZeRO-3 over one world (`trl-zero3`), or a full teacher
    replica per rank with DDP (`trl-ddp`); one candidate per micro-batch that reaches the batch."""
    W, w = cluster.world, job.workload
    bs = [b for b in range(w.micro_batch_min, w.micro_batch_max + 1) if w.global_batch % (b * W) == 0]
    return {
        "trl-zero3": [Strategy("shard", "zero3", "colocated", W, W, t_sh=W, s_sh=W, b=b) for b in bs],
        "trl-ddp": [Strategy("replicate", "ddp", "colocated", W, W, s_sh=W, b=b) for b in bs],
    }

"""The partition space: every teacher split x student split x placement x micro-batch on a cluster.

Candidates that cannot run are not dropped silently: each carries the reason it was rejected
(`Strategy.rejection`: too many stages, heads not divisible, batch not reachable); memory is judged
after evaluation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from planner.cost.bind import engine_values, strategy_values
from planner.inputs.cluster import Cluster
from planner.inputs.load import Job
from planner.inputs.runtime import Runtime
from planner.strategy import STUDENT_SHARDS, Strategy


def _divisors(n: int) -> list[int]:
    return [k for k in range(1, n + 1) if n % k == 0]


def teacher_splits(n_T: int, cluster: Cluster, experts: int = 0) -> list[tuple[str, dict[str, int]]]:
    """Teacher splits on n_T ranks: (name, degrees), every divisor of n_T as the degree; a
    pipeline of k < n_T ranks is replicated n_T/k times (inside a node or across nodes, as k says);
    tensor parallelism stays in a node. A teacher with `experts` routed experts per MoE layer (0:
    dense, none of these) also gets expert parallelism over every ep > 1 that divides both its
    experts and the ranks: with the rest replicated (`replicate+ep`), sharded over a group holding
    whole EP groups (`shard:K+ep`), or in pipeline stages of ep ranks (`pipeline:K+ep`)."""
    G = cluster.gpus_per_node
    out: list[tuple[str, dict[str, int]]] = [("replicate", {})]
    for k in _divisors(n_T)[1:]:
        out.append(("shard", {"t_sh": k}))
        out.append(("pipeline", {"pp": k}))
        if k <= G:
            out.append(("tp", {"tp": k}))
    for ep in (e for e in _divisors(n_T)[1:] if experts and experts % e == 0):
        out.append(("replicate", {"ep": ep}))
        out += [("shard", {"t_sh": k, "ep": ep}) for k in _divisors(n_T) if k % ep == 0]
        out += [("pipeline", {"pp": k, "ep": ep}) for k in _divisors(n_T // ep)[1:]]
    return out


def student_splits(n_S: int, cluster: Cluster, gathers: Sequence[str] = ("once",)) -> list[tuple[str, int, int, str]]:
    """(strategy, shard group, replicas, gather) for the student on n_S ranks: a student whose
    parameters are sharded (zero3, hsdp) once per way of gathering it for generation in `gathers`
    (those the runtime can, when the job generates), the others `once` (they hold their weights)."""
    if n_S == 1:
        return [("ddp", 1, 1, "once")]  # nothing to shard over
    G = cluster.gpus_per_node
    groups = [(s, n_S, 1) for s in ("ddp", "zero1", "zero2", "zero3")] + ([("hsdp", G, n_S // G)] if n_S > G and n_S % G == 0 else [])
    return [(s, k, r, g) for s, k, r in groups for g in (gathers if STUDENT_SHARDS[s][2] else ("once",))]


def gathers(job: Job, runtime: Runtime) -> tuple[str, ...]:
    """How the search gathers a sharded student for generation: every way the runtime can when the
    job generates (lmbda > 0), else `once` (nothing is generated: the choice costs nothing)."""
    return tuple(runtime.generation.sharded_gather) if job.workload.lmbda > 0 else ("once",)


def placements(cluster: Cluster, rollout_gpus: int = 0) -> list[tuple[str, int, int]]:
    """(placement, n_T, n_S): colocated on all ranks, or the teacher on whole nodes (or, on one
    node, on a divisor of the node) and the student on the rest; `rollout_gpus` of the cluster's
    GPUs (the last) are the rollout's own and hold neither."""
    W, G = cluster.world - rollout_gpus, cluster.gpus_per_node
    out = [("colocated", W, W)]
    teacher_sizes = [k * G for k in range(1, cluster.nodes)] if cluster.nodes > 1 else [k for k in _divisors(G) if k < G]
    out += [("disaggregated", n_T, W - n_T) for n_T in teacher_sizes if W - n_T >= 1]
    return out


def rollout_gpu_counts(cluster: Cluster, tp: int = 1) -> list[int]:
    """The rollout GPU counts the search tries for vLLM servers of the student on GPUs of their own:
    whole tp groups, doubling from one group, at most half the cluster (the trainer keeps the rest)."""
    out, n = [], tp
    while n <= cluster.world // 2:
        out.append(n)
        n *= 2
    return out


def _dedicated_engines(engines: Sequence[str], runtime: Runtime, workload) -> list[str]:
    """The engines of `engines` the runtime can run on rollout GPUs of their own, unless the job fixes the rollouts on the trainer's."""
    gen = runtime.generation
    known = (gen.engine, *gen.other_engines)
    own = [e for e in engines if e in SERVING and e in known and gen.costs(e).serving and gen.costs(e).dedicated]
    return [] if workload is not None and (workload.rollout_placement == "colocated" or workload.lmbda == 0) else own


def dedicated_counts(engines: Sequence[str], runtime: Runtime, cluster: Cluster, workload=None) -> dict[str, dict[int, tuple[int, ...]]]:
    """Per engine that can run on rollout GPUs of their own: each rollout GPU count the search tries
    (`rollout_gpu_counts`), with the servers' tensor-parallel degrees it can be split into
    (`EngineCosts.dedicated_tps`: whole servers)."""
    out: dict[str, dict[int, tuple[int, ...]]] = {}
    for e in _dedicated_engines(engines, runtime, workload):
        by: dict[int, tuple[int, ...]] = {}
        for k in runtime.generation.costs(e).dedicated_tps(cluster.gpus_per_node):
            for n in rollout_gpu_counts(cluster, k):
                by[n] = (*by.get(n, ()), k)
        out[e] = dict(sorted(by.items()))
    return out


def layouts(engines: Sequence[str], runtime: Runtime | None, cluster: Cluster, workload=None,
            tps: Mapping[tuple[str, int, bool], tuple[int, ...]] | None = None) -> list[tuple[int, list[tuple[str, bool, bool, int]]]]:
    """(rollout GPUs, [(engine, sleep, ahead, server TP)]) for each way the rollout role is placed: on
    the trainer's GPUs (0) with every engine variant (`rollout_variants`), and, for a vllm engine the
    runtime can run on GPUs of its own (`EngineCosts.dedicated`), on each count of
    `dedicated_counts`, awake, in each schedule the runtime allows (`EngineCosts.schedules`), with
    each server TP degree there, or those `tps` kept for (engine, count, ahead) (`rollout_tp.choose`); a
    `workload` (the job's) may fix the placement (`rollout_placement`) and the schedule."""
    here = [(e, z, False, k) for e, z in rollout_variants(engines, runtime, cluster.backend)
            for k in (runtime.generation.costs(e).colocated_tps(cluster.gpus_per_node)
                      if runtime is not None and e in (runtime.generation.engine, *runtime.generation.other_engines) else (1,))]
    if runtime is None:
        return [(0, here)]
    gen, out = runtime.generation, []
    own = dedicated_counts(engines, runtime, cluster, workload)
    if not any(gen.costs(e).dedicated_only for e in own) and (workload is None or workload.rollout_placement != "dedicated"
                                                              and workload.schedule != "async"):
        out.append((0, here))
    for e, by_count in own.items():
        c = gen.costs(e)
        ahead = [a for a in c.schedules() if workload is None or workload.schedule == "auto" or a == (workload.schedule == "async")]
        for n, ks in by_count.items():
            out += [(n, [(e, False, a, k)]) for a in ahead for k in (tps or {}).get((e, n, a), ks)]
    return out


UNREACHABLE = "global batch not divisible by micro-batch x student ranks"


def _micro_batches(job: Job, n_S: int) -> tuple[list[int], int]:
    """The micro-batches that reach the global batch on n_S student ranks, and how many do not
    (counted, never built: a wide micro-batch range must not cost a candidate each)."""
    w = job.workload
    lo, hi = w.micro_batch_min, min(w.micro_batch_max, w.global_batch // n_S)
    ok = [b for b in range(lo, hi + 1) if w.global_batch % (b * n_S) == 0]
    return ok, (w.micro_batch_max - w.micro_batch_min + 1) - len(ok)


SERVING = ("vllm",)  # rollout engines that are serving engines beside the trainer (bind.engine_values: eng)


def rollout_engines(job: Job, cluster: Cluster, runtime: Runtime) -> tuple[str, ...]:
    """The rollout engines the search tries: the one `workload.rollout_engine` fixes, else the
    runtime's own and, when the job generates on a backend whose decode host time the runtime does
    not fix (`overheads.decode_layer_overhead_us`: the CPU fits), its `generation.other_engines`."""
    fixed, gen = job.workload.rollout_engine, runtime.generation
    if fixed != "auto":
        return (fixed,)
    if job.workload.lmbda == 0 or runtime.overheads_on(cluster.backend).decode_layer_overhead_us is not None:
        return (gen.engine,)
    return (gen.engine, *(e for e in gen.other_engines if e != gen.engine))


def engine_rejection(st: Strategy, runtime: Runtime) -> str | None:
    """Why a runtime cannot run the candidate's rollout engine (a fixed workload.rollout_engine it
    lacks, or one it cannot run beside a teacher on ranks of its own in its world) or its teacher and
    student ranks (`Runtime.teacher_ranks_divide_students`), or None."""
    engine, gen = st.rollout, runtime.generation
    if engine != gen.engine and engine not in gen.other_engines:
        return f"the {runtime.name} runtime has no {engine} rollout engine (workload.rollout_engine)"
    if st.disaggregated and not st.served and not st.n_R and runtime.teacher_engine == "pytorch" and not gen.costs(engine).beside_teacher_ranks:
        return f"the {runtime.name} runtime does not run a {engine} rollout beside a teacher on ranks of its own"
    if st.disaggregated and not st.served and runtime.teacher_ranks_divide_students and st.n_S % st.n_T:
        return f"the {runtime.name} runtime needs a teacher on ranks of its own to have a number of ranks that divides the student's"
    return None


def _engine_key(c: Strategy) -> tuple[str, bool, int | None]:
    """(engine, sleep, tensor-parallel degree: a dedicated server's or a colocated engine's over K > 1
    ranks, None for the runtime's own)."""
    return c.rollout, c.sleep, c.g_tp if c.n_R or c.g_tp > 1 else None


def engine_columns(cands: list[Strategy], runtime: Runtime, cluster: Cluster) -> dict[str, np.ndarray]:
    """The symbols of each candidate's rollout engine, its sleep and its TP degree (a dedicated
    server's, or a colocated engine's over K > 1 trainer GPUs; `bind.engine_values`), as columns, where the candidates differ from the runtime's own engine as
    the job's values hold it."""
    own = (runtime.generation.engine, runtime.generation.sleeps()[-1], None)
    keys = [_engine_key(c) for c in cands]
    if all(k == own for k in keys):
        return {}
    index = {k: i for i, k in enumerate(dict.fromkeys(keys))}  # a handful of distinct engines: bound once each
    which = np.fromiter((index[k] for k in keys), dtype=np.intp, count=len(keys))
    rows = [engine_values(runtime, k[0], cluster, k[1], k[2]) for k in index]
    return {s: np.array([r[s] for r in rows], dtype=float)[which] for s in rows[0]}


def rollout_variants(engines: Sequence[str], runtime: Runtime | None, backend: str = "nccl") -> list[tuple[str, bool]]:
    """(engine, sleep) for each rollout engine the search tries: a vllm engine asleep and awake where
    the runtime lets the plan choose (`sleep: choose`) on GPUs (vLLM's CPU backend has no sleep
    mode: awake), else as the runtime runs it."""
    if runtime is None:
        return [(e, False) for e in engines]
    gen = runtime.generation
    known = (gen.engine, *gen.other_engines)
    return [(e, z) for e in engines for z in (gen.costs(e).sleeps() if e in known and backend == "nccl" else (False,))]


def teacher_servings(job: Job, runtime: Runtime) -> tuple[bool, ...]:
    """Whether the search tries the teacher in-process (False) and/or behind vLLM servers of its own
    (True): what `workload.teacher_serving` fixes, else both where the runtime can serve it."""
    fixed = job.workload.teacher_serving
    if fixed == "in-process" or not runtime.serves_teacher:
        return (False,)
    return (True,) if fixed == "vllm-server" else (False, True)


def enumerate_candidates(job: Job, cluster: Cluster, gathers: Sequence[str] = ("once",),
                         engines: Sequence[str] = ("hf-eager",), servings: Sequence[bool] = (False,),
                         runtime: Runtime | None = None, tps: Mapping[tuple[str, int, bool], tuple[int, ...]] | None = None) -> tuple[list[Strategy], list[str | None]]:
    """Every candidate whose micro-batch reaches the global batch, a sharded student once per way of
    gathering it in `gathers`, each with every rollout engine in `engines`, a disaggregated teacher
    that vLLM can serve (replicate, tp) also served where `servings` says, with its rejection reason
    (None = runnable, subject to memory), a vllm engine asleep and awake where `runtime` lets the plan
    choose, rollout servers on GPUs of their own with the TP degree `tps` chose (else each); `unreachable`
    counts the others."""
    cands: list[Strategy] = []
    for n_R, variants in layouts(engines, runtime, cluster, job.workload, tps):
        for placement, n_T, n_S in placements(cluster, n_R):
            bs, _ = _micro_batches(job, n_S)
            for t_name, degree in teacher_splits(n_T, cluster, job.teacher.num_experts):
                servable = placement == "disaggregated" and t_name in ("replicate", "tp") and degree.get("ep", 1) == 1
                for served in (x for x in servings if servable or not x):
                    for s_name, s_sh, r_S, gather in student_splits(n_S, cluster, gathers):
                        for b in bs:
                            # a serving engine gets the weights in the step's refresh, gathered once: it has no per-step gather
                            cands += [Strategy(t_name, s_name, placement, n_T, n_S, s_sh=s_sh, r_S=r_S, b=b, gather=gather, rollout=e,
                                               served=served, sleep=z, n_R=n_R, ahead=a, g_tp=k, **degree)
                                      for e, z, a, k in variants if (gather == "once" or e not in SERVING) and (n_R or n_S % k == 0)]
    return cands, [c.rejection(job) for c in cands]


def unreachable(job: Job, cluster: Cluster, gathers: Sequence[str] = ("once",), engines: Sequence[str] = ("hf-eager",),
                servings: Sequence[bool] = (False,), runtime: Runtime | None = None, tps: Mapping[tuple[str, int, bool], tuple[int, ...]] | None = None) -> int:
    """Candidates `enumerate_candidates` leaves out because their micro-batch cannot reach the
    global batch: every teacher split (served too where it can be), student split and rollout
    engine of that placement, as it would have built them."""
    total = 0
    for n_R, variants in layouts(engines, runtime, cluster, job.workload, tps):
        for placement, n_T, n_S in placements(cluster, n_R):
            bad = _micro_batches(job, n_S)[1]
            if not bad:
                continue
            students = sum(1 for *_, g in student_splits(n_S, cluster, gathers) for e, _, _, k in variants
                           if (g == "once" or e not in SERVING) and (n_R or n_S % k == 0))
            for t_name, degree in teacher_splits(n_T, cluster, job.teacher.num_experts):
                servable = placement == "disaggregated" and t_name in ("replicate", "tp") and degree.get("ep", 1) == 1
                total += bad * students * sum(1 for x in servings if servable or not x)
    return total


def columns(cands: list[Strategy], cluster: Cluster) -> dict[str, np.ndarray]:
    """Strategy symbol values as arrays over the candidates (one column per symbol); a column
    that is the same for every candidate stays a scalar, so numpy broadcasts instead of computing."""
    links: dict = {}
    rows = [strategy_values(c, cluster, links) for c in cands]
    cols = {k: np.array([r[k] for r in rows], dtype=float) for k in rows[0]} if rows else {}
    return {k: (float(v[0]) if len(v) > 1 and np.all(v == v[0]) else v) for k, v in cols.items()}

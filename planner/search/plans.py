"""Between strategies, plan files and the words users type (`pipeline:8`, `zero2`, `disaggregated:8`)."""

from __future__ import annotations

from planner.cost import bind
from planner.inputs.cluster import Cluster
from planner.inputs.errors import InputError
from planner.inputs.load import Job
from planner.plan import Plan, Predicted, StudentPlan, TeacherPlan
from planner.search.rank import Scored, speedup

TEACHER_NAMES = ("replicate", "shard", "pipeline", "tp", "hybrid")
STUDENT_NAMES = ("ddp", "zero1", "zero2", "zero3", "fsdp", "hsdp")


def _split(text: str, flag: str) -> tuple[str, int | None]:
    name, _, deg = text.partition(":")
    if deg and not deg.isdigit():
        raise InputError(f"{flag}: '{text}': the degree after ':' must be a whole number")
    if deg and int(deg) < 1:
        raise InputError(f"{flag}: '{text}': the degree after ':' must be at least 1")
    return name, int(deg) if deg else None


def parse_strategy(teacher: str, student: str, placement: str, micro_batch: int, cluster: Cluster) -> bind.Strategy:
    """A strategy from CLI words; degrees default to the natural choice (shard/pipeline over the
    teacher's ranks capped at one node for pipeline and tp)."""
    W, G = cluster.world, cluster.gpus_per_node
    pname, n_T = _split(placement, "--placement")
    if pname not in ("colocated", "disaggregated"):
        raise InputError(f"--placement: '{placement}' is not colocated or disaggregated[:TEACHER_GPUS]")
    if pname == "disaggregated":
        n_T = n_T or max(G * (cluster.nodes // 2), G // 2 if cluster.nodes == 1 else G)
        if not 0 < n_T < W:
            raise InputError(f"--placement: teacher GPUs must be between 1 and {W - 1}, got {n_T}")
    else:
        n_T = W
    n_S = W if pname == "colocated" else W - n_T
    tname, k = _split(teacher, "--teacher-split")
    if tname not in TEACHER_NAMES:
        raise InputError(f"--teacher-split: '{teacher}' is not one of {', '.join(TEACHER_NAMES)} (with :DEGREE)")
    k = k or {"replicate": 1, "shard": n_T}.get(tname, min(G, n_T))
    if n_T % k:
        raise InputError(f"--teacher-split: degree {k} does not divide the {n_T} teacher GPUs")
    degrees = {"shard": {"t_sh": k}, "tp": {"tp": k}, "pipeline": {"pp": k}, "hybrid": {"pp": k}}.get(tname, {})
    sname, s_k = _split(student, "--student-split")
    sname = "zero3" if sname == "fsdp" else sname
    if sname not in STUDENT_NAMES:
        raise InputError(f"--student-split: '{student}' is not one of {', '.join(STUDENT_NAMES)}")
    if s_k is not None and sname != "hsdp":
        raise InputError(f"--student-split: '{student}': only hsdp takes a degree (hsdp:SHARD); {sname} uses all {n_S} student GPUs")
    s_sh, r_S = n_S, 1
    if sname == "hsdp":  # shard within a group of s_sh ranks (default: one node), replicate across groups
        s_sh = s_k or min(G, n_S)
        if n_S % s_sh:
            raise InputError(f"--student-split: hsdp shard degree {s_sh} does not divide the {n_S} student GPUs"
                             + ("" if s_k else "; give one that does, e.g. hsdp:" + str(max(d for d in range(1, s_sh + 1) if n_S % d == 0))))
        r_S = n_S // s_sh
    return bind.Strategy(tname, sname, pname, n_T, n_S, s_sh=s_sh, r_S=r_S, b=micro_batch, **degrees)


def strategy_of(plan: Plan) -> bind.Strategy:
    t, s = plan.teacher, plan.student
    r_S = len(s.ranks) // s.shard if s.strategy == "hsdp" else 1
    s_sh = s.shard if s.strategy in ("hsdp",) else len(s.ranks)
    return bind.Strategy(t.strategy, s.strategy, plan.placement, len(t.ranks), len(s.ranks), pp=t.pp, tp=t.tp,
                         t_sh=t.shard, s_sh=s_sh, r_S=r_S, b=plan.micro_batch)


def predicted(sc: Scored, baseline: Scored | None) -> Predicted:
    return Predicted(samples_per_s=sc.samples_per_s, step_time_s=sc.figures["step_time"],
                     memory_bytes_per_device=sc.figures["mem_peak"], memory_bytes=sc.memory_terms(), memory_bytes_by_side=sc.memory_sides(),
                     time_s=sc.time_terms(), speedup_vs_baseline=speedup(sc, baseline))


def to_plan(sc: Scored, job: Job, cluster: Cluster, cluster_ref: str, baseline: Scored | None, runtime: str = "kd-planner") -> Plan:
    """The plan file for one scored candidate: rank layout, tiers and predictions."""
    st, W = sc.strategy, cluster.world
    t_ranks = list(range(st.n_T))
    s_ranks = t_ranks if st.placement == "colocated" else list(range(st.n_T, W))
    teacher = TeacherPlan(ref=job.teacher_ref or job.teacher.name, shape=job.teacher, strategy=st.teacher,
                          pp=st.pp, tp=st.tp, shard=st.t_sh, ranks=t_ranks,
                          group_tier=bind.tier_for(st.pp * st.tp * st.t_sh, cluster))
    student = StudentPlan(ref=job.student_ref or job.student.name, shape=job.student, strategy=st.student,
                          shard=st.s_sh if st.student != "ddp" else 1, ranks=s_ranks,
                          group_tier=bind.tier_for(st.n_S, cluster))
    ga = job.workload.global_batch // (st.b * st.n_S)
    return Plan(version=1, job=job.name, cluster=cluster_ref, nodes=cluster.nodes, gpus_per_node=cluster.gpus_per_node,
                backend=cluster.backend, placement=st.placement, teacher=teacher, student=student,
                micro_batch=st.b, grad_accum=ga, workload=job.workload, runtime=runtime, predicted=predicted(sc, baseline))

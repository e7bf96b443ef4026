"""The strategy: how the teacher and the student are split, where, and with which micro-batch.

One value object with one spelling (as torchtitan's `ParallelDims`):

    TEACHER[:DEGREE][+ep:EP]/STUDENT[:SHARD][+per_step]/PLACEMENT[:TEACHER_GPUS]/MICRO_BATCH
    shard:2/zero3/disaggregated:8/4      pipeline:8/hsdp:8/colocated/2      replicate/ddp/colocated/1
    shard:16+ep:8/zero3/colocated/1      (a mixture-of-experts teacher: experts split over groups of 8)
    shard:16/zero3+per_step/colocated/1  (a ZeRO-3 student gathered layer by layer at every decode step)
    tp:2/zero2/served:8/1+vllm:dedicated:2+async  (rollouts on 2 GPUs of their own, one step ahead)
    replicate/zero3/served:4/1+vllm:dedicated:4:tp:2  (rollouts on 4 GPUs of their own: 2 servers of tp 2)

`str(s)` writes it with every degree spelled out and `Strategy.parse(text, cluster)` reads it
back (`parse(str(s)) == s`); `recommend` prints it, `estimate --strategy` and `inflection
--between` read it, `planner.plan.plan_of`/`strategy_of` map it to a plan file's fields (this module stands below
both the plan and the search and imports neither). The rules live here
once: which names exist, which degrees each takes (`problems`), which groups cross which network
tier (`tier`, `links`), which student state each split shards (`student_shards`), and what a job
or a cluster rules out (`rejection`). The cost model reads the numbers (`bind.strategy_values`)
and knows none of the names.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from planner.inputs.errors import InputError
from planner.inputs.runtime import GATHERS

if TYPE_CHECKING:  # the executor imports this module: keep it free of the search's numpy and the cost model
    from planner.inputs.cluster import Cluster
    from planner.inputs.load import Job
    from planner.plan import Plan, Predicted

TEACHER_SPLITS = ("replicate", "shard", "pipeline", "tp")
STUDENT_SPLITS = ("ddp", "zero1", "zero2", "zero3", "hsdp")
PLACEMENTS = ("colocated", "disaggregated")
STUDENT_ALIASES = {"fsdp": "zero3"}  # accepted by `parse`, never written
# `hybrid` was a second name for `pipeline:k` with k < the teacher GPUs: pipelines of k ranks,
# replicated. Its cost, memory and executor were pipeline's, so it is one split now; the group's
# tier (in a node or across nodes) follows from k. Old plans and flags that say hybrid still load.
TEACHER_ALIASES = {"hybrid": "pipeline"}
GRAMMAR = "TEACHER[:DEGREE][+ep:EP]/STUDENT[:SHARD][+per_step]/PLACEMENT[:TEACHER_GPUS]/MICRO_BATCH[+ROLLOUT_ENGINE[:sleep][:tp:K]|+vllm:dedicated:N[:tp:K]][+async]"
ROLLOUT_ENGINES = ("hf-eager", "hf-static", "vllm")  # planner.plan.RolloutEngine; hf-eager is written without a suffix
ROLLOUT_HEADS = "the rollout engine's tensor-parallel degree does not divide the student's heads"  # a `rejection`
# How a student whose parameters are sharded (zero3, hsdp) is gathered for on-policy generation:
# `once` per generation (the default, never written: TRL's ds3_gather_for_generation) or `per_step`,
# layer by layer at every decode step (FSDP2's hooks), written `+per_step` after the student part.

# The teacher's one degree field per split; a pipeline of pp < n_T ranks is replicated n_T/pp times.
TEACHER_DEGREE = {"replicate": None, "shard": "t_sh", "pipeline": "pp", "tp": "tp"}
# What each student split shards over its group: (optimizer state, gradients, parameters), the ZeRO
# stages of Rajbhandari et al. 2020; HSDP is ZeRO-3 inside a group, replicated across groups.
STUDENT_SHARDS = {"ddp": (0, 0, 0), "zero1": (1, 0, 0), "zero2": (1, 1, 0), "zero3": (1, 1, 1), "hsdp": (1, 1, 1)}
# How much machinery a split needs, for breaking ties (fewer moving parts first).
TEACHER_MACHINERY = {"replicate": 0, "shard": 1, "tp": 2, "pipeline": 3}
STUDENT_MACHINERY = {"ddp": 0, "zero1": 1, "zero2": 2, "zero3": 3, "hsdp": 4}
TEACHER_WORDS = {"replicate": "a replicated teacher", "shard": "a sharded teacher", "tp": "a tensor-parallel teacher",
                 "pipeline": "a pipelined teacher"}


def tier(group: int, cluster: Cluster) -> str:
    """The network tier of a group of `group` consecutive ranks: `none` alone, `intra_node` when it
    fits in (and tiles) a node, else `inter_node`."""
    if group <= 1:
        return "none"
    return "intra_node" if group <= cluster.gpus_per_node and cluster.gpus_per_node % group == 0 else "inter_node"


def _degree(word: str) -> tuple[str, int | None]:
    name, colon, deg = word.partition(":")
    if colon and not deg.isdigit():
        raise ValueError(f"'{word}': the number after ':' must be a whole number")
    if colon and int(deg) < 1:
        raise ValueError(f"'{word}': the number after ':' must be at least 1")
    return name, int(deg) if colon else None


def _gather(student: str, mod: str) -> str:
    """The gather after '+' in a student part (`zero3+per_step`)."""
    if mod not in GATHERS:
        raise ValueError(f"'{student}': after '+' only {' or '.join(GATHERS)} may follow (how a sharded student is gathered for generation)")
    return mod


def _engine_degree(word: str, k: str, cluster: Cluster) -> int | None:
    """`tp:K` after a vllm engine: K, where it divides a node (vLLM's tensor parallelism runs inside one), else None."""
    G = cluster.gpus_per_node
    return int(k) if word == "tp" and k.isdigit() and 0 < int(k) <= G and G % int(k) == 0 else None


def _expert_degree(teacher: str, mod: str) -> int:
    """The EP degree after '+' in a teacher part (`shard:16+ep:8`)."""
    name, ep = _degree(mod)
    if name != "ep" or ep is None:
        raise ValueError(f"'{teacher}': after '+' only ep:DEGREE may follow (expert parallelism, e.g. shard:16+ep:8)")
    return ep


@dataclass(frozen=True)
class Strategy:
    """One layout: teacher and student split, placement and micro-batch, as the cost model's
    numbers (every field is a rank count or a degree). Built only if its structure holds
    (`problems`); whether a job or a cluster can run it is `rejection`."""

    teacher: str  # TEACHER_SPLITS
    student: str  # STUDENT_SPLITS
    placement: str  # PLACEMENTS
    n_T: int  # teacher GPUs (colocated: every GPU)
    n_S: int  # student GPUs
    pp: int = 1  # teacher pipeline stages
    tp: int = 1  # teacher tensor-parallel degree
    t_sh: int = 1  # ranks one teacher copy is sharded over
    s_sh: int = 1  # ranks the student state is sharded over (hsdp: the shard group; else all n_S)
    r_S: int = 1  # student replicas of that shard group (hsdp)
    b: int = 1  # micro-batch per student rank
    ep: int = 1  # expert parallelism: an MoE teacher's experts split over groups of ep consecutive ranks (1 = none)
    gather: str = "once"  # GATHERS: a zero3/hsdp student gathered for generation once, or per decode step
    rollout: str = "hf-eager"  # the engine that generates on-policy completions, colocated (planner.plan.RolloutEngine)
    served: bool = False  # disaggregated: the teacher behind vLLM servers of its own (replicas x tp), outside the trainer's world
    sleep: bool = False  # a vllm rollout engine sleeps while the trainer runs (written `+vllm:sleep`)
    n_R: int = 0  # rollout GPUs of their own (vLLM servers of the student, outside the trainer's world); 0: on the trainer's GPUs
    g_tp: int = 1  # tensor-parallel degree of a vllm rollout engine: each server on rollout GPUs of their own, or (> 1) each engine
    # over K consecutive trainer ranks (written `:tp:K` after `+vllm[:sleep]` or `+vllm:dedicated:N`); 1 on the trainer's GPUs: the runtime's
    ahead: bool = False  # rollouts of step n+1 generated while step n trains (schedule async; written `+async`); the cost
    # model overlaps them with training only on rollout GPUs of their own (on the trainer's GPUs they share its devices)

    def __post_init__(self) -> None:
        if why := self.problems():
            raise InputError(f"strategy {self._raw()}: " + "; ".join(why))

    def _raw(self) -> str:
        return (f"{self.teacher}(pp={self.pp}, tp={self.tp}, shard={self.t_sh}, ep={self.ep})/{self.student}(shard={self.s_sh}, "
                f"replicas={self.r_S}, gather={self.gather})/{self.placement}({self.n_T} teacher, {self.n_S} student GPUs)/{self.b}")

    def problems(self) -> list[str]:
        """The structural rules: known names, one teacher degree that divides its GPUs, a student
        group that tiles its GPUs, colocated models on the same GPUs."""
        out = []
        for what, value, names in (("teacher split", self.teacher, TEACHER_SPLITS), ("student split", self.student, STUDENT_SPLITS),
                                   ("placement", self.placement, PLACEMENTS), ("gather", self.gather, GATHERS)):
            if value not in names:
                out.append(f"{what} '{value}' is not one of {', '.join(names)}")
        if out:
            return out
        if min(self.n_T, self.n_S, self.pp, self.tp, self.t_sh, self.s_sh, self.r_S, self.b, self.ep) < 1:
            return ["every count and degree must be at least 1"]
        own = TEACHER_DEGREE[self.teacher]
        others = [f for f in ("pp", "tp", "t_sh") if f != own and getattr(self, f) != 1]
        if others:
            names = {"pp": "pp", "tp": "tp", "t_sh": "shard"}
            out.append(f"a {self.teacher} teacher has {'no degree' if own is None else 'one degree, ' + names[own]}, "
                       f"but {', '.join(f'{names[f]}={getattr(self, f)}' for f in others)} is set")
        elif self.ep > 1 and self.teacher == "tp":
            out.append(f"a tp teacher does not combine with expert parallelism (ep={self.ep})")
        elif self.ep > 1 and self.teacher == "shard" and self.t_sh % self.ep:
            out.append(f"expert-parallel degree {self.ep} does not divide the shard degree {self.t_sh}")
        elif self.n_T % self.teacher_degree:
            out.append(f"teacher degree {self.teacher_degree} does not divide the {self.n_T} teacher GPUs")
        if self.student == "hsdp" and self.s_sh * self.r_S != self.n_S:
            out.append(f"hsdp shard degree {self.s_sh} x {self.r_S} replicas is not the {self.n_S} student GPUs")
        if self.student != "hsdp" and (self.s_sh, self.r_S) != (self.n_S, 1):
            out.append(f"{self.student} shards over all {self.n_S} student GPUs (only hsdp takes a shard degree)")
        if self.gather != "once" and not self.student_shards[2]:
            out.append(f"a {self.student} student holds its whole weights; only zero3 and hsdp are gathered {self.gather}")
        if self.placement == "colocated" and self.n_T != self.n_S:
            out.append(f"colocated models share their GPUs, but {self.n_T} teacher and {self.n_S} student GPUs are given")
        if self.sleep and self.rollout != "vllm":
            out.append(f"only a vllm rollout engine sleeps, not {self.rollout}")
        if self.n_R < 0:
            out.append(f"rollout GPUs must be 0 or more, got {self.n_R}")
        if self.g_tp < 1 or (self.g_tp > 1 and self.rollout != "vllm"):
            out.append(f"a rollout tensor-parallel degree ({self.g_tp}) is a vllm engine's (+vllm:tp:K, +vllm:dedicated:N:tp:K), not {self.rollout}'s")
        elif self.n_R % self.g_tp:
            out.append(f"rollout tensor-parallel degree {self.g_tp} does not divide the {self.n_R} rollout GPUs")
        elif not self.n_R and self.n_S % self.g_tp:
            out.append(f"rollout tensor-parallel degree {self.g_tp} does not divide the {self.n_S} trainer GPUs it shares")
        if self.n_R and (self.rollout != "vllm" or self.sleep):
            out.append(f"rollout GPUs of their own run vLLM servers that stay awake (+vllm:dedicated:N), not {self.rollout}{' asleep' if self.sleep else ''}")
        if self.served and (self.placement != "disaggregated" or self.teacher not in ("replicate", "tp") or self.ep > 1):
            out.append(f"a served teacher runs on GPUs of its own as vLLM replicas or tp groups, not {self.teacher_part} {self.placement}")
        return out

    # -- the grammar --------------------------------------------------------------------------------

    @property
    def teacher_degree(self) -> int:
        """Ranks in one teacher group (pipeline stages, tensor-parallel or shard degree; with expert
        parallelism, the ep ranks of each stage, or the shard group that holds the EP groups)."""
        return self.pp * self.tp * max(self.t_sh, self.ep)

    @property
    def teacher_part(self) -> str:
        own = "" if self.teacher == "replicate" else f":{self.pp * self.tp * self.t_sh}"
        return f"{self.teacher}{own}" + (f"+ep:{self.ep}" if self.ep > 1 else "")

    @property
    def student_part(self) -> str:
        return (f"hsdp:{self.s_sh}" if self.student == "hsdp" else self.student) + ("" if self.gather == "once" else f"+{self.gather}")

    @property
    def placement_part(self) -> str:
        return "colocated" if self.placement == "colocated" else f"{'served' if self.served else 'disaggregated'}:{self.n_T}"

    @property
    def world(self) -> int:
        """Cluster GPUs the layout uses: the trainer's (with an in-process or served teacher's of its own) and the rollout's."""
        return (self.n_S if self.placement == "colocated" else self.n_T + self.n_S) + self.n_R

    def __str__(self) -> str:
        engine = "" if self.rollout == "hf-eager" else f"+{self.rollout}" + (":sleep" if self.sleep else "")
        engine += f":dedicated:{self.n_R}" if self.n_R else ""  # then the TP degree (`:tp:K`)
        engine += f":tp:{self.g_tp}" if self.g_tp > 1 else ""
        return f"{self.teacher_part}/{self.student_part}/{self.placement_part}/{self.b}{engine}" + ("+async" if self.ahead else "")

    @classmethod
    def parse(cls, text: str, cluster: Cluster, flag: str = "strategy") -> "Strategy":
        """`TEACHER[:DEGREE][+ep:EP]/STUDENT[:SHARD][+per_step][/PLACEMENT[:TEACHER_GPUS][/MICRO_BATCH]]` on `cluster`
        (placement colocated and micro-batch 1 when left out). A degree left out takes the natural
        value: shard over all teacher GPUs; pipeline and tp over one node; hsdp one node;
        disaggregated gives the teacher half the nodes (half the node on one)."""
        head, plus, engine = text.rpartition("+")
        if plus and engine == "async":  # rollouts one step ahead (costed ahead on rollout GPUs of their own only)
            return replace(cls.parse(head, cluster, flag), ahead=True)
        name, colon, mode = engine.partition(":")
        kind, _, count = mode.partition(":")
        if plus and name == "vllm" and kind == "dedicated":
            count, has_tp, tp_part = count.partition(":")
            if not count.isdigit() or not 0 < int(count) < cluster.world:
                raise InputError(f"{flag}: '{text}': +vllm:dedicated:N needs N rollout GPUs, a whole number from 1 to {cluster.world - 1}")
            k = _engine_degree(*tp_part.partition(":")[::2], cluster) if has_tp else 1
            if k is None or int(count) % k:
                raise InputError(f"{flag}: '{text}': after +vllm:dedicated:{count} only :tp:K may follow, K servers' GPUs that divide "
                                 f"both the {count} rollout GPUs and a node's {cluster.gpus_per_node} (vLLM's tensor parallelism runs inside one node)")
            inner = head.split("/")
            if not 2 <= len(inner) <= 4 or not all(inner):
                raise InputError(f"{flag}: '{text}' is not {GRAMMAR} (e.g. shard:16/zero3/colocated/4)")
            inner += ["colocated", "1"][len(inner) - 2:]
            st = cls.from_words(*inner, cluster, flags=(f"{flag}: '{text}'",) * 4, rollout_gpus=int(count))
            return replace(st, rollout="vllm", g_tp=k)
        if plus and name == "vllm" and (kind == "tp" or mode.startswith("sleep:tp")):  # +vllm:tp:K, +vllm:sleep:tp:K
            sleep = mode.startswith("sleep:")
            if (k := _engine_degree(*mode.removeprefix("sleep:").partition(":")[::2], cluster)) is None:
                raise InputError(f"{flag}: '{text}': +vllm:tp:K needs K GPUs per engine that divide a node's {cluster.gpus_per_node} "
                                 "(vLLM's tensor parallelism runs inside one node)")
            return replace(cls.parse(head, cluster, flag), rollout="vllm", sleep=sleep, g_tp=k)
        if plus and name in ROLLOUT_ENGINES and (not colon or (name == "vllm" and mode == "sleep")):
            return replace(cls.parse(head, cluster, flag), rollout=name, sleep=bool(colon))
        parts = text.split("/")
        if not 2 <= len(parts) <= 4 or not all(parts):
            raise InputError(f"{flag}: '{text}' is not {GRAMMAR} (e.g. shard:16/zero3/colocated/4)")
        parts += ["colocated", "1"][len(parts) - 2:]
        return cls.from_words(*parts, cluster, flags=(f"{flag}: '{text}'",) * 4)

    @classmethod
    def from_words(cls, teacher: str, student: str, placement: str, micro_batch: str | int, cluster: Cluster,
                   flags: tuple[str, str, str, str] = ("teacher", "student", "placement", "micro-batch"),
                   rollout_gpus: int = 0) -> "Strategy":
        """The four parts of the grammar, each as a word (`estimate --teacher-split` etc.); an error
        names the part by its entry in `flags`. `rollout_gpus` GPUs (the last ones) are the rollout's
        own: the placement shares out the others."""
        W, G = cluster.world - rollout_gpus, cluster.gpus_per_node
        part = 0
        try:
            part = 2
            pname, n_T = _degree(placement)
            served = pname == "served"  # the teacher on GPUs of its own behind vLLM servers
            pname = "disaggregated" if served else pname
            if pname not in PLACEMENTS:
                raise ValueError(f"'{placement}' is not colocated, disaggregated[:TEACHER_GPUS] or served[:TEACHER_GPUS]")
            if pname == "colocated" and n_T is not None:
                raise ValueError(f"'{placement}': colocated takes no number (both models use all {W} GPUs)")
            if pname == "disaggregated":
                n_T = n_T or max(G * (cluster.nodes // 2), G // 2 if cluster.nodes == 1 else G)
                if not 0 < n_T < W:
                    raise ValueError(f"'{placement}': teacher GPUs must be between 1 and {W - 1}, got {n_T}")
            n_T = W if pname == "colocated" else n_T
            n_S = W if pname == "colocated" else W - n_T
            part = 0
            base, plus, mod = teacher.partition("+")
            tname, k = _degree(base)
            tname = TEACHER_ALIASES.get(tname, tname)
            if tname not in TEACHER_SPLITS:
                raise ValueError(f"'{teacher}' is not one of {', '.join(TEACHER_SPLITS)} (with :DEGREE)")
            ep = _expert_degree(teacher, mod) if plus else 1
            own = TEACHER_DEGREE[tname]
            if own is None and k not in (None, 1):
                raise ValueError(f"'{teacher}': replicate takes no degree (a full copy on every teacher GPU)")
            k = 1 if own is None else k or (n_T if tname == "shard" else min(G, n_T))
            group = k * ep if tname in ("replicate", "pipeline") else k
            if ep > 1 and tname == "tp":
                raise ValueError(f"'{teacher}': a tp teacher does not combine with expert parallelism")
            if served and (tname not in ("replicate", "tp") or ep > 1):
                raise ValueError(f"'{teacher}': a served teacher runs as vLLM replicas or tp groups (replicate or tp:K)")
            if ep > 1 and k % ep and tname == "shard":
                raise ValueError(f"'{teacher}': expert-parallel degree {ep} does not divide the shard degree {k}")
            if n_T % group:
                raise ValueError(f"'{teacher}': {'group' if ep > 1 else 'degree'} {group} does not divide the {n_T} teacher GPUs")
            part = 1
            sbase, splus, smod = student.partition("+")
            gather = _gather(student, smod) if splus else "once"
            sname, s_k = _degree(sbase)
            sname = STUDENT_ALIASES.get(sname, sname)
            if sname not in STUDENT_SPLITS:
                raise ValueError(f"'{student}' is not one of {', '.join(STUDENT_SPLITS)} (fsdp = zero3)")
            if gather != "once" and not STUDENT_SHARDS[sname][2]:
                raise ValueError(f"'{student}': a {sname} student holds its whole weights; only zero3 and hsdp are gathered {gather}")
            if s_k is not None and sname != "hsdp":
                raise ValueError(f"'{student}': only hsdp takes a degree (hsdp:SHARD); {sname} uses all {n_S} student GPUs")
            s_sh = n_S
            if sname == "hsdp":  # shard within a group of s_sh ranks (default: one node), replicate across groups
                s_sh = s_k or min(G, n_S)
                if n_S % s_sh:
                    hint = "" if s_k else f"; give one that does, e.g. hsdp:{max(d for d in range(1, s_sh + 1) if n_S % d == 0)}"
                    raise ValueError(f"'{student}': hsdp shard degree {s_sh} does not divide the {n_S} student GPUs{hint}")
            part = 3
            b = int(micro_batch) if str(micro_batch).isdigit() else 0
            if b < 1:
                raise ValueError(f"micro-batch '{micro_batch}' must be a whole number of at least 1")
        except ValueError as e:
            raise InputError(f"{flags[part]}: {e}") from None
        degree = {own: k} if own else {}
        return cls(tname, sname, pname, n_T, n_S, s_sh=s_sh, r_S=n_S // s_sh, b=b, ep=ep, gather=gather, served=served,
                   n_R=rollout_gpus, rollout="vllm" if rollout_gpus else "hf-eager", **degree)

    # -- rules that need a job -----------------------------------------------------------------

    def rejection(self, job: Job) -> str | None:
        """Why the job cannot run this strategy, or None (memory is judged after evaluation, by the
        search)."""
        t, w = job.teacher, job.workload
        if self.pp > t.num_layers:
            return "pipeline degree exceeds teacher layers"
        if t.num_heads % self.tp or t.kv_heads % self.tp:
            return "tensor-parallel degree does not divide the teacher heads"
        s, k = job.student, self.g_tp
        if k > 1 and (s.num_heads % k or (s.kv_heads % k and k % s.kv_heads)):  # vLLM: heads split, KV heads split or replicated
            return ROLLOUT_HEADS
        if w.global_batch % (self.b * self.n_S):
            return "global batch not divisible by micro-batch x student ranks"
        if self.ep > 1 and not t.num_experts:
            return "expert parallelism needs a mixture-of-experts teacher"
        if self.ep > 1 and t.num_experts % self.ep:
            return "expert-parallel degree does not divide the teacher's experts"
        return None

    @property
    def disaggregated(self) -> bool:
        return self.placement == "disaggregated"

    @property
    def student_shards(self) -> tuple[int, int, int]:
        """(optimizer state, gradients, parameters): 1 where the student split shards it."""
        return STUDENT_SHARDS[self.student]

    def gathers(self, job: Job) -> bool:
        """Whether the gather matters: the job generates (lmbda > 0) with a student whose parameters are sharded."""
        return bool(self.student_shards[2]) and job.workload.lmbda > 0

    @property
    def machinery(self) -> tuple[int, int, int]:
        """How much machinery the layout needs (placement, teacher, student): fewer first on ties;
        expert parallelism (an all-to-all per MoE layer) is one more part of the teacher's."""
        return (int(self.disaggregated), TEACHER_MACHINERY[self.teacher] + int(self.ep > 1), STUDENT_MACHINERY[self.student])

    def links(self, cluster: Cluster) -> dict[str, str]:
        """Where each of the cost model's groups talks: `T` the teacher group, `S` the student's shard
        group, `R` the student's replicas (HSDP: rail-aligned, one NIC each), `X` teacher-to-student
        transfers (one NIC unless both sides share a node), `E` the teacher's expert-parallel group
        (its all-to-all), `W` the weight push to dedicated rollout GPUs (one NIC unless the whole layout shares a node). Values: none, intra_node, inter_node (every rail, as NCCL spans nodes) or one_nic."""
        return {"T": tier(self.teacher_degree, cluster), "S": tier(self.s_sh, cluster), "R": "one_nic",
                "X": "intra_node" if self.n_T + self.n_S <= cluster.gpus_per_node else "one_nic", "E": tier(self.ep, cluster),
                "W": "intra_node" if self.world <= cluster.gpus_per_node else "one_nic"}

    # -- plan files (the mapping lives in planner.plan, above this module) ---------------------------

    def to_plan(self, job: Job, cluster: Cluster, cluster_ref: str, runtime: str = "kd-planner",
                predicted: Predicted | None = None) -> Plan:
        """The plan file of this strategy: `planner.plan.plan_of` (kept as a method for its callers)."""
        from planner.plan import plan_of

        return plan_of(self, job, cluster, cluster_ref, runtime, predicted)

    @classmethod
    def from_plan(cls, plan: Plan) -> "Strategy":
        """The strategy a plan file holds: `planner.plan.strategy_of` (the inverse of `to_plan`)."""
        from planner.plan import strategy_of

        return strategy_of(plan)

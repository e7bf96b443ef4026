"""The plan file: the whole interface between the planner, the launcher export and the executor.

A plan says how the teacher and the student are split (strategy and degrees), where (which
global ranks hold which model, over which network tier), with which micro-batch and gradient
accumulation, and what the cost model predicts for it. See DESIGN.md section 6.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, model_validator

from planner.inputs.cluster import Cluster, rank_bound
from planner.inputs.errors import InputError, from_validation
from planner.inputs.model import ModelShape, Strict
from planner.inputs.runtime import Gather
from planner.inputs.training import Training
from planner.inputs.workload import Workload
from planner.inputs.yamlio import dump_yaml, read_mapping
from planner.strategy import PLACEMENTS, STUDENT_SPLITS, TEACHER_ALIASES, TEACHER_SPLITS, Strategy, tier

TeacherStrategy = Literal[TEACHER_SPLITS + tuple(TEACHER_ALIASES)]  # hybrid: an older name of pipeline
StudentStrategy = Literal[STUDENT_SPLITS]
Tier = Literal["none", "intra_node", "inter_node"]
RolloutEngine = Literal["hf-eager", "hf-static", "vllm"]
TeacherEngine = Literal["pytorch", "vllm-server"]
Schedule = Literal["sync", "async"]


class TeacherPlan(Strict):
    """How the frozen teacher is split over the ranks in `ranks`."""

    ref: str = Field(description="Bundled model name or path to a config.json / checkpoint folder.")
    shape: ModelShape = Field(description="The teacher's shape (copied so the plan stands alone).")
    strategy: TeacherStrategy = Field(description="replicate | shard (FSDP) | pipeline (layer stages; groups of pp ranks, replicated) | tp (hybrid: read as pipeline).")
    pp: int = Field(1, gt=0, description="Pipeline stages per teacher replica.")
    tp: int = Field(1, gt=0, description="Tensor-parallel degree.")
    shard: int = Field(1, gt=0, description="Ranks one teacher copy is sharded over (FSDP); 1 = not sharded.")
    ep: int = Field(1, gt=0, description="Expert parallelism of a mixture-of-experts teacher: each group of ep consecutive ranks (of a pipeline stage) holds 1/ep of every MoE layer's experts and exchanges tokens by all-to-all; 1 = none. Plan-only: the bundled executor does not run it.")
    ranks: list[int] = Field(description="Global ranks that hold a piece of the teacher, in stage order within each group.")
    group_tier: Tier = Field("none", description="Network tier of the teacher's widest group (pipeline, tp or shard).")
    engine: TeacherEngine = Field("pytorch", description="What runs the teacher: pytorch (in the trainer's torch.distributed world, on `ranks`) or vllm-server (vLLM OpenAI servers of the teacher on the cluster GPUs `ranks`, outside the trainer's world: len(ranks)/tp replicas of tp GPUs each, top-k prompt log-probs over HTTP; strategy replicate or tp).")
    endpoints: list[str] = Field(default_factory=list, description="vllm-server: the base URLs of the teacher's servers (http://HOST:PORT), one per replica; `planner export` fills them for the hosts it starts them on, `planner run --teacher-url` overrides them.")

    @property
    def served(self) -> bool:
        """The teacher runs behind servers of its own, outside the trainer's torch.distributed world."""
        return self.engine == "vllm-server"

    @property
    def group_size(self) -> int:
        return self.pp * self.tp * max(self.shard, self.ep)

    @property
    def replicas(self) -> int:
        return len(self.ranks) // self.group_size


class StudentPlan(Strict):
    """How the trained student is split over the ranks in `ranks` (always data parallel)."""

    ref: str = Field(description="Bundled model name or path to a config.json / checkpoint folder.")
    shape: ModelShape = Field(description="The student's shape.")
    strategy: StudentStrategy = Field(description="ddp | zero1 | zero2 | zero3 (FSDP) | hsdp (shard in node, replicate across).")
    shard: int = Field(1, gt=0, description="Ranks the sharded state is split over (1 for ddp).")
    gather: Gather = Field("once", description="zero3/hsdp, on-policy: gather the student once per generation (the whole model in the compute dtype, as TRL's ds3_gather_for_generation) or per_step (FSDP2 gathers each layer at every decode step: less memory, more traffic). The planner chooses; plans without it gather once.")
    ranks: list[int] = Field(description="Global ranks that train the student.")
    group_tier: Tier = Field("none", description="Network tier of the gradient synchronisation.")


class RolloutPlan(Strict):
    """Who generates the student's on-policy completions (the rollout role)."""

    engine: RolloutEngine = Field("hf-eager", description="hf-eager: the trainer's model in a Python decode loop; hf-static: a static KV cache and a compiled decode step; vllm: a vLLM engine.")
    placement: Literal["colocated", "dedicated"] = Field("colocated", description="colocated: on the trainer's GPUs, time-shared (a vLLM engine sleeps while the trainer runs); dedicated: vLLM servers of the student on the cluster GPUs `ranks`, outside the trainer's world, their weights refreshed from the trainer every step.")
    tp: int = Field(1, gt=0, description="Tensor-parallel degree of each rollout engine (vLLM tensor_parallel_size).")
    ranks: list[int] = Field(default_factory=list, description="dedicated: the cluster GPUs the rollout servers use (after the trainer's and a served teacher's); colocated: empty (the trainer's ranks).")
    sleep: bool = Field(False, description="vllm on a GPU: the engine sleeps (level 2: weights and KV cache freed) while the trainer runs and is woken and refreshed before each rollout; false: it keeps its reservation beside the trainer (no wake). vLLM's CPU backend has no sleep mode.")
    gpu_memory_utilization: float = Field(0.3, gt=0, le=1, description="vllm: the share of a GPU's memory the engine may take for its weights and KV cache (vLLM gpu_memory_utilization; TRL's vllm_gpu_memory_utilization default 0.3 when colocated).")
    endpoints: list[str] = Field(default_factory=list, description="dedicated: the base URLs of the rollout servers; `planner export` fills them, `planner run --rollout-url` overrides them.")

    @model_validator(mode="after")
    def _rules(self) -> "RolloutPlan":
        if self.placement == "dedicated" and self.engine != "vllm":
            raise ValueError(f"rollout.placement: dedicated rollout GPUs run vLLM servers; set engine: vllm (got {self.engine})")
        if self.sleep and self.engine != "vllm":
            raise ValueError(f"rollout.sleep: only a vllm engine sleeps (got {self.engine})")
        if self.placement == "colocated" and self.ranks:
            raise ValueError("rollout.ranks: a colocated rollout uses the trainer's ranks; leave ranks empty or set placement: dedicated")
        if self.placement == "dedicated" and (not self.ranks or len(self.ranks) % self.tp):
            raise ValueError(f"rollout.ranks: dedicated rollout needs GPUs in whole tp groups (tp {self.tp}, got {len(self.ranks)})")
        return self


class Predicted(Strict):
    """What the cost model predicts for this plan (per device, per optimizer step)."""

    samples_per_s: float = Field(ge=0, description="Global batch / step time.")
    step_time_s: float = Field(ge=0, description="Predicted optimizer-step time, s.")
    memory_bytes_per_device: float = Field(ge=0, description="Peak bytes on the busiest device.")
    memory_bytes: dict[str, float] = Field(description="Peak memory by term, bytes (disaggregated: student terms on the student ranks, teacher terms on the teacher ranks).")
    memory_bytes_by_side: dict[str, float] | None = Field(None, description="Peak bytes per device on the student ranks and on the teacher ranks.")
    time_s: dict[str, float] = Field(description="Step time by term, s.")
    speedup_vs_baseline: float | None = Field(None, description="samples/s over the strongest baseline that fits (`baseline`).")
    baseline: str | None = Field(None, description="The baseline the speed-up is against: the fastest of TRL's that fits (e.g. trl-distill-ddp; `planner recommend -f json` lists each).")


class Plan(Strict):
    """One way to run a distillation job on a cluster."""

    version: Literal[1] = Field(description="Plan file format version (required; this is format 1).")
    job: str = Field("job", description="Job name.")
    cluster: str = Field(description="Cluster topology (bundled name or path).")
    nodes: int = Field(gt=0, description="Nodes the plan runs on.")
    gpus_per_node: int = Field(gt=0, description="Processes per node.")
    backend: Literal["nccl", "gloo"] = Field("nccl", description="torch.distributed backend.")
    placement: Literal[PLACEMENTS] = Field(description="Both models on every rank, or disjoint teacher and student ranks.")
    teacher: TeacherPlan
    student: StudentPlan
    micro_batch: int = Field(gt=0, description="Samples per student rank per micro-step.")
    grad_accum: int = Field(gt=0, description="Micro-steps per optimizer step.")
    workload: Workload = Field(description="The workload the plan was made for.")
    runtime: str = Field("kd-planner", description="The runtime the predictions assume (bundled name or YAML path; `planner schema runtime`).")
    predicted: Predicted | None = Field(None, description="Cost-model figures (absent in a hand-written plan).")
    tokenizer: str | None = Field(None, description="Local tokenizer folder for the executor; default the student checkpoint folder's tokenizer, else a byte-level tokenizer.")
    dataset: str | None = Field(None, description="Local dataset for the executor (a .jsonl or .parquet file, or a `Dataset.save_to_disk` folder; columns `messages`, or `prompt` and `completion`); default synthetic prompts.")
    training: Training = Field(default_factory=Training, description="What the executor does beyond the split: lr, schedule, steps, evaluation, checkpoints, final save, logs (the job's `training:` section; the cost model does not read it).")
    rollout: RolloutPlan = Field(default_factory=RolloutPlan, description="The rollout role: the engine that generates on-policy completions and where it runs (plans without it: the trainer's eager loop).")
    schedule: Schedule = Field("sync", description="sync: each step generates, scores and trains in turn; async: the rollouts of step n+1 are generated while step n trains (one step ahead, completions one update old: staleness 1, as TRL's async trainer and verl).")

    @property
    def world(self) -> int:
        """Cluster GPUs the plan uses (nodes x gpus_per_node): the trainer's ranks, an in-process
        teacher's, and the GPUs of served roles."""
        return self.nodes * self.gpus_per_node

    @property
    def torch_ranks(self) -> list[int]:
        """The cluster GPUs that are processes of the trainer's torch.distributed world (torchrun's
        ranks 0..n-1, in this order): the student's, plus an in-process teacher's."""
        served = set(self.rollout.ranks) | (set(self.teacher.ranks) if self.teacher.served else set())
        return [r for r in range(self.world) if r not in served]

    @property
    def torch_world(self) -> int:
        """Processes torchrun starts (WORLD_SIZE): the cluster GPUs less those of served roles."""
        return len(self.torch_ranks)

    @model_validator(mode="before")
    @classmethod
    def _one_output(cls, data):
        """A plan runs one teacher output: a workload that leaves it to the planner (`auto`, or a plan
        file that names none) and became a plan without a search (`Strategy.to_plan`) runs full
        logits, the exact loss."""
        w = data.get("workload") if isinstance(data, dict) else None
        if isinstance(w, Workload) and w.teacher_output == "auto":
            return data | {"workload": w.model_copy(update={"teacher_output": "logits"})}
        if isinstance(w, dict) and w.get("teacher_output", "auto") == "auto":
            return data | {"workload": w | {"teacher_output": "logits"}}
        return data

    @model_validator(mode="after")
    def _layout(self) -> "Plan":
        if why := rank_bound(self.nodes, self.gpus_per_node):
            raise ValueError(why)
        for who in (self.teacher, self.student):
            if not all(0 <= r < self.world for r in who.ranks) or len(set(who.ranks)) != len(who.ranks):
                raise ValueError(f"{'teacher' if who is self.teacher else 'student'}.ranks must be distinct ranks below the world size {self.world}")
        s, n_S = self.student, len(self.student.ranks)
        if s.strategy == "hsdp" and n_S % s.shard:
            raise ValueError(f"student.shard: hsdp shard degree {s.shard} must divide the {n_S} student ranks")
        if s.strategy == "ddp" and s.shard != 1:
            raise ValueError(f"student.shard: ddp does not shard; shard must be 1, got {s.shard}")
        if s.strategy in ("zero2", "zero3") and s.shard != n_S:
            raise ValueError(f"student.shard: {s.strategy} shards over all {n_S} student ranks; shard must be {n_S} "
                             f"(got {s.shard}; hsdp shards over fewer)")
        if s.strategy == "zero1" and s.shard not in (1, n_S):
            raise ValueError(f"student.shard: zero1 shards the optimizer over all {n_S} student ranks; shard must be {n_S}, got {s.shard}")
        if len(self.teacher.ranks) % self.teacher.group_size:
            raise ValueError(f"teacher group (pp*tp*max(shard, ep) = {self.teacher.group_size}) must divide its {len(self.teacher.ranks)} ranks")
        if self.placement == "colocated" and set(self.teacher.ranks) != set(self.student.ranks):
            raise ValueError("colocated: teacher.ranks and student.ranks must be the same ranks")
        if self.placement == "disaggregated" and set(self.teacher.ranks) & set(self.student.ranks):
            raise ValueError("disaggregated: teacher.ranks and student.ranks must not overlap")
        if self.teacher.served:
            if self.placement != "disaggregated" or self.teacher.strategy not in ("replicate", "tp"):
                raise ValueError(f"teacher.engine: a vllm-server teacher runs on GPUs of its own as replicas or tp groups: placement disaggregated, "
                                 f"strategy replicate or tp (got {self.placement}, {self.teacher.strategy})")
            if self.workload.teacher_output != "topk":
                raise ValueError(f"teacher.engine: a vllm-server teacher returns top-k log-probs; workload.teacher_output must be topk (got {self.workload.teacher_output})")
        if set(self.rollout.ranks) & (set(self.teacher.ranks) | set(self.student.ranks)) or not all(0 <= r < self.world for r in self.rollout.ranks):
            raise ValueError(f"rollout.ranks must be GPUs below the world size {self.world} that neither the teacher nor the student holds")
        if self.torch_ranks != list(range(len(self.torch_ranks))):
            raise ValueError("the trainer's ranks (the student's, and an in-process teacher's) must come first, 0..n-1: GPUs of served roles (a "
                             "vllm-server teacher, dedicated rollout) follow them")
        if self.schedule == "async" and self.workload.lmbda == 0:
            raise ValueError("schedule: async generates rollouts one step ahead, but lmbda 0 generates none; set schedule: sync")
        if self.micro_batch * self.grad_accum * len(self.student.ranks) != self.workload.global_batch:
            raise ValueError(f"micro_batch x grad_accum x student ranks ({self.micro_batch} x {self.grad_accum} x {len(self.student.ranks)}) must equal workload.global_batch ({self.workload.global_batch})")
        try:  # the rest of the strategy's rules (one teacher degree per split), as `planner.strategy` states them
            strategy_of(self)
        except InputError as e:
            raise ValueError("; ".join(e.lines)) from None
        return self


def plan_of(s: Strategy, job, cluster: Cluster, cluster_ref: str, runtime: str = "kd-planner", predicted: Predicted | None = None) -> Plan:
    """The plan file's fields of strategy `s`: the teacher on the first n_T ranks, the student on the
    same ranks (colocated) or the next n_S, group tiers, micro-batch and accumulation."""
    t_ranks = list(range(s.n_T))
    s_ranks = t_ranks if s.placement == "colocated" else list(range(s.n_T, s.n_T + s.n_S))
    if s.served:  # the trainer's ranks come first (torchrun's world), the teacher's servers' GPUs after them
        s_ranks, t_ranks = list(range(s.n_S)), list(range(s.n_S, s.n_S + s.n_T))
    teacher = TeacherPlan(ref=job.teacher_ref or job.teacher.name, shape=job.teacher, strategy=s.teacher,
                          pp=s.pp, tp=s.tp, shard=s.t_sh, ep=s.ep, ranks=t_ranks,
                          group_tier=tier(s.teacher_degree, cluster), engine="vllm-server" if s.served else "pytorch")
    student = StudentPlan(ref=job.student_ref or job.student.name, shape=job.student, strategy=s.student,
                          shard=s.s_sh if s.student != "ddp" else 1, gather=s.gather, ranks=s_ranks,
                          group_tier=tier(s.n_S, cluster))
    return Plan(version=1, job=job.name, cluster=cluster_ref, nodes=cluster.nodes, gpus_per_node=cluster.gpus_per_node,
                backend=cluster.backend, placement=s.placement, teacher=teacher, student=student,
                micro_batch=s.b, grad_accum=job.workload.global_batch // (s.b * s.n_S),
                workload=job.workload, runtime=runtime, predicted=predicted, training=job.training,
                dataset=job.dataset, tokenizer=job.tokenizer, rollout=rollout_of(s, len(t_ranks) if s.placement != "colocated" else 0),
                schedule="async" if s.ahead else "sync")


def rollout_of(s: Strategy, teacher_gpus: int) -> RolloutPlan:
    """The rollout role of strategy `s`: on the trainer's GPUs, or on the `n_R` GPUs after the
    trainer's and a teacher's of its own (`teacher_gpus`), vLLM's default share of each."""
    if not s.n_R:
        return RolloutPlan(engine=s.rollout, sleep=s.sleep, tp=s.g_tp)
    first = s.n_S + teacher_gpus
    return RolloutPlan(engine=s.rollout, placement="dedicated", ranks=list(range(first, first + s.n_R)), tp=s.g_tp, gpu_memory_utilization=0.9)


def strategy_of(plan: Plan) -> Strategy:
    """The strategy a plan file holds (the inverse of `plan_of`)."""
    t, st = plan.teacher, plan.student
    n_S = len(st.ranks)
    s_sh = st.shard if st.strategy == "hsdp" else n_S
    return Strategy(TEACHER_ALIASES.get(t.strategy, t.strategy), st.strategy, plan.placement, len(t.ranks), n_S, pp=t.pp, tp=t.tp,
                    t_sh=t.shard, s_sh=s_sh, r_S=n_S // s_sh if s_sh else 1, b=plan.micro_batch, ep=t.ep, gather=st.gather,
                    rollout=plan.rollout.engine, served=t.served, sleep=plan.rollout.sleep,
                    n_R=len(plan.rollout.ranks) if plan.rollout.placement == "dedicated" else 0,
                    g_tp=plan.rollout.tp if plan.rollout.engine == "vllm" else 1,
                    ahead=plan.schedule == "async")


def load_plan(path: str | Path) -> Plan:
    """A plan file, validated, and its shapes checked against their refs (`check_refs`)."""
    path = Path(path)
    data = read_mapping(path)
    try:
        plan = Plan(**data)
    except ValidationError as e:
        raise from_validation(e, str(path)) from None
    check_refs(path, plan)
    return plan


def check_refs(path: str | Path, plan: Plan) -> None:
    """Refuse a plan whose `shape` disagrees with its `ref`, where the ref is a file (from the current
    folder, as the executor resolves it) or a bundled name: the executor builds the ref, the cost
    model the shape, so an edited shape would be predicted but not run. A ref that names nothing
    here (`inline:teacher`, a path on another machine) leaves the shape as written."""
    from planner.inputs.load import find_model, load_model

    for who, part in (("teacher", plan.teacher), ("student", plan.student)):
        found = find_model(part.ref)
        if found is None:
            continue
        ref_shape = load_model(str(found))
        mine, theirs = part.shape.model_dump(exclude={"name"}), ref_shape.model_dump(exclude={"name"})
        differ = [f"{k} {mine[k]!r} here, {theirs[k]!r} there" for k in mine if mine[k] != theirs[k]]
        if differ:
            raise InputError(f"{path}: {who}.shape disagrees with its ref {part.ref!r} ({found}): {', '.join(differ[:4])}"
                             f"{f' and {len(differ) - 4} more' if len(differ) > 4 else ''}; the executor would run the ref: "
                             "fix the shape or the ref, or re-plan with `planner recommend`")


def plan_cluster(plan_path: str | Path, plan: Plan) -> Cluster:
    """The plan's topology, resized to the plan's nodes: a file next to the plan, else a path from the
    current folder, else a bundled name (one rule for every command). A plan that needs more
    processes per node than the topology's nodes have is refused."""
    from planner.inputs.load import load_cluster

    beside = Path(plan_path).expanduser().resolve().parent / plan.cluster
    return check_fits(plan_path, plan, load_cluster(str(beside) if beside.is_file() else plan.cluster, plan.nodes))


def check_fits(plan_path: str | Path, plan: Plan, cluster: Cluster) -> Cluster:
    """`cluster`, unless its nodes hold fewer processes than the plan puts on each."""
    if plan.gpus_per_node > cluster.gpus_per_node:
        raise InputError(f"{plan_path}: gpus_per_node: the plan needs {plan.gpus_per_node} processes per node but the "
                         f"topology {cluster.name!r} has {cluster.gpus_per_node} per node; re-plan with `planner recommend`")
    return cluster


# What a run measures does not depend on these: the names, where predictions came from, the
# predictions themselves, the tokenizer and data (samples have fixed shapes), and the training
# configuration (lr, schedule, evaluation, checkpoints and logs change no step's cost).
_NOT_RUN = {"version", "job", "cluster", "runtime", "predicted", "tokenizer", "dataset", "training"}


def fingerprint(plan: Plan) -> str:
    """A short hash of everything the executor runs: both models (refs and shapes), their strategies,
    degrees and ranks, the placement, nodes, backend, micro-batch, accumulation and workload. The
    executor writes it into its metrics; `planner validate` refuses metrics of another plan."""
    data = plan.model_dump(mode="json", exclude=_NOT_RUN)
    if data["teacher"]["ep"] == 1:  # plans written before expert parallelism keep their fingerprint
        del data["teacher"]["ep"]
    data["teacher"].pop("endpoints")  # where a served teacher listens changes nothing it computes
    if data["teacher"]["engine"] == "pytorch":  # plans written before roles keep their fingerprint
        del data["teacher"]["engine"]
    data["rollout"].pop("endpoints")
    if data["rollout"] == RolloutPlan().model_dump(mode="json", exclude={"endpoints"}):
        del data["rollout"]
    if data["schedule"] == "sync":
        del data["schedule"]
    for key in ("rollout_engine", "teacher_serving", "rollout_placement", "schedule"):  # the search's choices, not what runs
        data["workload"].pop(key)
    text = json.dumps(data, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def plan_text(plan: Plan) -> str:
    """The plan file's text."""
    return ("# kd-planner plan: run it with `torchrun ... -m planner run PLAN` or `planner export`.\n"
            + dump_yaml(plan.model_dump(mode="json")))


def write_plan(plan: Plan, path: str | Path, force: bool = False) -> None:
    """Write a plan file (`planner.files.write_text`: never over an existing file unless `force`)."""
    from planner.files import write_text

    write_text(path, plan_text(plan), force)


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "spiece.model")


def tokenizer_folder(plan: Plan) -> str | None:
    """The tokenizer folder a run uses: the plan's `tokenizer`; else the student's checkpoint folder,
    or the teacher's, when it holds tokenizer files (never bytes when a real tokenizer is there);
    else None: the executor's byte-level tokenizer (synthetic shapes, tests)."""
    if plan.tokenizer:
        return plan.tokenizer
    for ref in (plan.student.ref, plan.teacher.ref):
        p = Path(ref).expanduser()
        if p.is_dir() and any((p / f).is_file() for f in TOKENIZER_FILES):
            return str(p)
    return None

"""Process groups and each rank's role, read from the plan's rank lists.

Every rank creates every group, in the same order (torch.distributed requires it), then keeps the
ones it belongs to. The rank grid of a model is one tensor view, `tensor(ranks).view(replicas, k)`,
as in picotron: rows are the groups that hold one copy, columns the copies.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import DeviceMesh

from planner.inputs.errors import InputError
from planner.inputs.load import Job
from planner.plan import Plan
from planner.strategy import Strategy


@dataclass
class Layout:
    """Where this rank sits: its device, its roles and the groups it talks over."""

    rank: int
    world: int
    device: torch.device
    is_teacher: bool
    is_student: bool
    student_ranks: list[int]
    teacher_ranks: list[int]
    student_group: dist.ProcessGroup | None = None
    student_mesh: DeviceMesh | None = None  # FSDP2 student (zero2/zero3/hsdp)
    teacher_mesh: DeviceMesh | None = None  # FSDP2 teacher (shard)
    tp_mesh: DeviceMesh | None = None  # this rank's tensor-parallel group (teacher tp), a 1-D mesh
    pipe_group: dist.ProcessGroup | None = None  # this rank's pipeline replica (teacher pipeline)
    pipe_ranks: list[int] = field(default_factory=list)

    @property
    def dp_rank(self) -> int:
        """Index of this student rank among the student ranks (its share of the data)."""
        return self.student_ranks.index(self.rank)

    @property
    def dp_size(self) -> int:
        return len(self.student_ranks)

    @property
    def coordinator(self) -> int:
        """The global rank that writes files: the first student rank."""
        return self.student_ranks[0]


def init_distributed(plan: Plan) -> tuple[str, torch.device]:
    """Start torch.distributed from torchrun's environment: NCCL on a GPU, else gloo."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world != plan.torch_world:  # GPUs of served roles (a vllm-server teacher, dedicated rollout) are not torchrun's
        raise InputError(f"the plan needs {plan.torch_world} processes ({plan.nodes} node(s) x {plan.gpus_per_node}"
                         f"{f', less {plan.world - plan.torch_world} GPU(s) of served roles' if plan.torch_world != plan.world else ''}) but "
                         f"WORLD_SIZE is {world}; launch with `torchrun --nproc-per-node {plan.torch_world // plan.nodes} -m planner run PLAN`")
    cuda = torch.cuda.is_available() and plan.backend == "nccl"
    backend = "nccl" if cuda else "gloo"
    if cuda:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if "RANK" not in os.environ:  # one process without torchrun: a world of one
        os.environ.update(RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=os.environ.get("MASTER_PORT", "29511"))
    if not dist.is_initialized():
        dist.init_process_group(backend, store=_store(), rank=int(os.environ["RANK"]), world_size=world,
                                device_id=device if cuda else None)
    return backend, device


def _store() -> dist.Store:
    """torchrun's store, with a prefix per restart: after `--max-restarts` the agent's store still
    holds the dead workers' addresses, and gloo would connect to them (seen with torch 2.13)."""
    agent = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world,
                          is_master=not agent and rank == 0, multi_tenant=not agent)
    return dist.PrefixStore(f"planner/attempt-{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", store)


def _mesh(device: torch.device, ranks: list[int], shard: int, names: tuple[str, str]) -> DeviceMesh:
    """A 1-D mesh (pure sharding) or a 2-D (replicate, shard) mesh for HSDP, over `ranks`."""
    grid = torch.tensor(ranks).view(-1, shard)
    if grid.shape[0] == 1:
        return DeviceMesh(device.type, grid[0], mesh_dim_names=(names[1],))
    return DeviceMesh(device.type, grid, mesh_dim_names=names)


def build_layout(plan: Plan, device: torch.device) -> Layout:
    rank, world = dist.get_rank(), dist.get_world_size()
    t, s = plan.teacher, plan.student
    # a served teacher's GPUs are not ranks of this world: no rank is a teacher, no group holds one
    t_ranks = [] if t.served else list(t.ranks)
    lay = Layout(rank, world, device, rank in t_ranks, rank in s.ranks, list(s.ranks), t_ranks)
    # Every rank calls every constructor below, in this order.
    lay.student_group = dist.new_group(s.ranks)
    if s.strategy in ("zero2", "zero3", "hsdp"):
        shard = s.shard if s.strategy == "hsdp" else len(s.ranks)
        if len(s.ranks) % shard:
            raise InputError(f"student.shard ({shard}) must divide the {len(s.ranks)} student ranks")
        lay.student_mesh = _mesh(device, s.ranks, shard, ("replicate", "shard"))
    if t.served:
        return lay
    if t.strategy == "shard":
        lay.teacher_mesh = _mesh(device, t.ranks, t.shard, ("replicate", "shard"))
    if t.strategy == "tp":  # (replicas, tp) over the teacher ranks; each rank keeps its row
        mesh = _mesh(device, t.ranks, t.tp, ("replicate", "tp"))
        if rank in t.ranks:
            lay.tp_mesh = mesh["tp"] if mesh.ndim == 2 else mesh
    if t.strategy in ("pipeline", "hybrid"):
        for row in torch.tensor(t.ranks).view(-1, t.pp).tolist():
            g = dist.new_group(row)
            if rank in row:
                lay.pipe_group, lay.pipe_ranks = g, row
    return lay


def check_supported(plan: Plan) -> None:
    """Refuse, as one line each, the plan features this executor does not run. The strategy is read
    through `Strategy` (its structure and the job's rules, as the search states them); what is
    left are this executor's own limits."""
    t, s, w = plan.teacher, plan.student, plan.workload
    st = Strategy.from_plan(plan)
    lines = []
    why = st.rejection(Job(name=plan.job, teacher=t.shape, student=s.shape, workload=w))
    if why and why != "global batch not divisible by micro-batch x student ranks":  # the plan's own check says it better
        lines.append(f"strategy {st}: {why}")
    if st.ep > 1:
        lines.append(f"teacher {st.teacher_part}: expert parallelism is plan-only (the executor builds the teacher as Hugging Face does, "
                     "every expert on every rank of its split); use replicate, shard or pipeline")
    if st.teacher == "tp" and t.shape.num_experts:
        lines.append(f"teacher {st.teacher_part}: the executor's tensor parallelism splits dense layers only, not a mixture-of-experts "
                     "teacher's experts; use replicate, shard or pipeline")
    if st.disaggregated and not t.served:
        if plan.rollout.engine == "vllm" and plan.rollout.placement == "colocated" and w.lmbda > 0:  # vLLM's external launcher builds its groups over the whole torch world
            lines.append("rollout.engine vllm beside an in-process teacher on ranks of its own is not implemented (every rank of the "
                         "torch world would have to start an engine); use placement colocated, a served teacher (teacher.engine: "
                         "vllm-server) or rollout.engine hf-eager")
        if st.teacher not in ("replicate", "shard", "tp"):
            lines.append(f"teacher {st.teacher_part} with disaggregated placement is not implemented; use replicate, shard or tp")
        if st.n_S % st.n_T:
            lines.append(f"disaggregated: the {st.n_T} teacher ranks must divide the {st.n_S} student ranks")
    if t.shape.vocab != s.shape.vocab:
        lines.append(f"teacher and student vocabularies differ ({t.shape.vocab} vs {s.shape.vocab}); GKD needs one tokenizer")
    if w.mixed_precision == "master" and w.student_dtype != "fp32":
        lines.append("workload.mixed_precision: master (16-bit weights, fp32 master copy) is not implemented by the executor; use autocast")
    if w.teacher_output not in ("logits", "topk", "cached"):
        lines.append(f"workload.teacher_output: {w.teacher_output!r} is not implemented by the executor; use logits, topk or cached")
    elif w.teacher_output != "logits" and w.topk > min(t.shape.vocab, s.shape.vocab):
        lines.append(f"workload.topk: k = {w.topk} exceeds the vocabulary ({t.shape.vocab}); use at most that")
    if w.teacher_output == "cached" and w.lmbda > 0:
        lines.append(f"workload.teacher_output: cached needs lmbda 0 (fixed completions), got {w.lmbda}")
    if plan.rollout.engine == "vllm" and plan.rollout.placement == "colocated" and plan.torch_world % plan.rollout.tp:
        lines.append(f"rollout.tp: a colocated vLLM engine over {plan.rollout.tp} consecutive ranks needs a torch world it divides "
                     f"({plan.torch_world} ranks)")
    dedicated = plan.rollout.placement == "dedicated"  # vLLM servers of the student (planner.executor.rollout.vllm_server)
    if dedicated and not plan.rollout.endpoints:
        lines.append("rollout.endpoints: dedicated rollout needs its vLLM servers' URLs; `planner export` the plan or give --rollout-url http://HOST:PORT")
    # async: the next step's generation runs in a background thread; with dedicated servers that is HTTP only, else the trainer's model
    if plan.schedule == "async" and not dedicated and (plan.rollout.engine == "vllm" or plan.student.strategy not in ("ddp", "zero1")):
        lines.append(f"schedule: async is implemented for dedicated rollout servers, and for the hf-eager and hf-static engines with a ddp or zero1 "
                     f"student (generation without collectives, in a background thread), not colocated rollout.engine {plan.rollout.engine} "
                     f"with student {plan.student.strategy}; use schedule: sync or rollout.placement: dedicated")
    if lines:
        raise InputError(lines)

"""What people run today (issue 17), each a layout run by a runtime with a teacher output:

| name | layout | runtime | teacher output |
|---|---|---|---|
| `trl-gkd-zero3` | both models ZeRO-3 over one world | `trl-gkd` (GKDTrainer) | full logits |
| `trl-gkd-ddp` | a teacher replica per rank, student DDP | `trl-gkd` | full logits |
| `trl-distill-zero3` | both models ZeRO-3 over one world | `trl-distillation` (DistillationTrainer) | full logits |
| `trl-distill-ddp` | a teacher replica per rank, student DDP | `trl-distillation` | full logits |
| `trl-vllm-zero3` / `-ddp` | as `trl-distill-*`, rollouts from a colocated vLLM engine (`use_vllm`, colocate) | `trl-distillation-vllm` | full logits |
| `trl-vllm-sleep-zero3` / `-ddp` | the same with `vllm_enable_sleep_mode` | `trl-distillation-vllm-sleep` | full logits |
| `trl-server` | teacher behind a vLLM server on GPUs of its own (replicas or tensor-parallel), student FSDP2 on the rest | `trl-server` | top-k log-probs |
| `trl-server-vllm` | the same, rollouts from a colocated vLLM engine | `trl-server-vllm` | top-k log-probs |
| `trl-async` | the same teacher servers, rollouts from one student vLLM server on a GPU of its own, one step ahead | `trl-async-distillation` (AsyncDistillationTrainer) | top-k log-probs |
| `verl-opd` | verl's on-policy distillation at its defaults: teacher vLLM servers of tp 2 on GPUs of their own, student FSDP with a colocated vLLM engine of tp 2 asleep while it trains | `verl-opd` | top-k log-probs |

Each is tried at every micro-batch (the server ones at every teacher GPU count and split its
server runs, `trl-async` at every student-server GPU count the search tries for its own plans) that reaches the global batch; its best configuration that fits stands for it. The
plans are compared with the strongest baseline that fits (`strongest`). Not yet costed: TRL's vLLM
*server* mode for DistillationTrainer's rollouts.
"""

from __future__ import annotations

from dataclasses import dataclass

from planner.inputs.cluster import Cluster
from planner.inputs.load import Job
from planner.search import space
from planner.strategy import Strategy


@dataclass(frozen=True)
class Baseline:
    name: str
    runtime: str  # a bundled runtime (runtimes/*.yaml)
    output: str  # the teacher output it trains from
    layout: str  # zero3 | ddp | server | async
    teacher_tp: int | None = None  # server layouts: the teacher servers' one TP degree (None: replicas and each TP in a node)


BASELINES = (
    Baseline("trl-gkd-zero3", "trl-gkd", "logits", "zero3"),
    Baseline("trl-gkd-ddp", "trl-gkd", "logits", "ddp"),
    Baseline("trl-distill-zero3", "trl-distillation", "logits", "zero3"),
    Baseline("trl-distill-ddp", "trl-distillation", "logits", "ddp"),
    Baseline("trl-vllm-zero3", "trl-distillation-vllm", "logits", "zero3"),
    Baseline("trl-vllm-ddp", "trl-distillation-vllm", "logits", "ddp"),
    Baseline("trl-vllm-sleep-zero3", "trl-distillation-vllm-sleep", "logits", "zero3"),
    Baseline("trl-vllm-sleep-ddp", "trl-distillation-vllm-sleep", "logits", "ddp"),
    Baseline("trl-server", "trl-server", "topk", "server"),
    Baseline("trl-server-vllm", "trl-server-vllm", "topk", "server"),
    Baseline("trl-async", "trl-async-distillation", "topk", "async"),
    Baseline("verl-opd", "verl-opd", "topk", "server", teacher_tp=2),
)
BY_NAME = {b.name: b for b in BASELINES}
ALIASES = {"trl-zero3": "trl-gkd-zero3", "trl-ddp": "trl-gkd-ddp"}  # the names before issue 17


def _micro_batches(job: Job, ranks: int) -> list[int]:
    w = job.workload
    return [b for b in range(w.micro_batch_min, w.micro_batch_max + 1) if w.global_batch % (b * ranks) == 0]


def layouts(base: Baseline, job: Job, cluster: Cluster) -> list[Strategy]:
    """Every configuration of one baseline that reaches the global batch and that the job allows
    (`Strategy.rejection`)."""
    W, G = cluster.world, cluster.gpus_per_node
    if base.layout == "zero3":
        out = [Strategy("shard", "zero3", "colocated", W, W, t_sh=W, s_sh=W, b=b) for b in _micro_batches(job, W)]
    elif base.layout == "ddp":
        out = [Strategy("replicate", "ddp", "colocated", W, W, s_sh=W, b=b) for b in _micro_batches(job, W)]
    else:  # the server: the teacher's GPUs serve replicas or tensor-parallel groups inside a node
        out = []
        # AsyncDistillationTrainer: the student's vLLM server on GPUs of its own, as many as the user gives it (each count tried)
        for n_R in space.rollout_gpu_counts(cluster) if base.layout == "async" else [0]:
            for placement, n_T, n_S in space.placements(cluster, n_R):
                if placement != "disaggregated":
                    continue
                student = "zero3" if n_S > 1 else "ddp"
                teachers = [("replicate", {})] + [("tp", {"tp": k}) for k in range(2, min(G, n_T) + 1) if n_T % k == 0]
                if base.teacher_tp:  # verl: the teacher servers' default degree only
                    teachers = [t for t in teachers if t[1].get("tp", 1) == base.teacher_tp]
                for name, degree in teachers:
                    out += [Strategy(name, student, placement, n_T, n_S, s_sh=n_S, b=b, served=True, n_R=n_R, ahead=bool(n_R),
                                     rollout="vllm" if n_R else "hf-eager", **degree) for b in _micro_batches(job, n_S)]
    return [st for st in out if st.rejection(job) is None]


def resolve(name: str) -> str:
    """A baseline's name, the old spellings (`trl-zero3`, `trl-ddp`) included."""
    return ALIASES.get(name, name)

"""Numbers for the cost model's symbols: from a job and a cluster (fixed for a search) and from one
strategy (arrays over candidates). No formulas here, only the mapping from inputs to symbols."""

from __future__ import annotations

from dataclasses import dataclass

from planner.cost.names import COLLECTIVE_SHORT, shape_values
from planner.inputs.cluster import COLLECTIVES, Cluster
from planner.inputs.errors import InputError
from planner.inputs.load import DEFAULT_RUNTIME, Job, load_runtime
from planner.inputs.model import BYTES_PER_DTYPE
from planner.inputs.runtime import Runtime

def _peak(cluster: Cluster, dtype: str, who: str) -> float:
    g = cluster.gpu
    if dtype not in g.peak_tflops:
        raise InputError(f"{cluster.name}: gpu.peak_tflops: no '{dtype}' entry for the {who} dtype; add it or change the dtype")
    return g.peak_tflops[dtype] * 1e12 * g.efficiency(dtype)


def job_values(job: Job, cluster: Cluster, runtime: Runtime | None = None) -> dict[str, float]:
    """Values of every symbol that a job, a cluster and a runtime (default: the bundled executor's) fix."""
    w, rt = job.workload, runtime or load_runtime(DEFAULT_RUNTIME)
    teacher_dtype = w.teacher_dtype or job.teacher.dtype
    v: dict[str, float] = shape_values(job.student, "S") | shape_values(job.teacher, "T")
    v |= {
        "B": w.global_batch, "s_p": w.prompt_len, "s_c": w.completion_len, "lam": w.lmbda,
        "gen": float(w.lmbda > 0), "q_S": BYTES_PER_DTYPE[w.student_dtype], "q_W": w.weight_bytes, "q_T": BYTES_PER_DTYPE[teacher_dtype],
        "q_G": w.grad_bytes, "q_L": BYTES_PER_DTYPE[w.logits_dtype], "k_O": w.optimizer_bytes,
        "flash": float(w.flash_attention), "rc_full": float(w.grad_checkpointing == "full"),
        "rc_sel": float(w.grad_checkpointing == "selective"), "kvc": float(w.generation_kv_cache),
        "chunked": float((rt.loss or w.loss) == "chunked"), "C": w.loss_chunk_tokens,
        "topk_on": float(w.teacher_output == "topk"), "K": w.topk, "n_buf": rt.loss_buffers,
        "ext": float(rt.logits == "sequence"), "ov_dec": rt.generation.layer_overhead_us * 1e-6,
        "g_once": float(rt.generation.sharded_gather == "once"),
        "F_S": _peak(cluster, w.student_dtype, "student"), "F_T": _peak(cluster, teacher_dtype, "teacher"),
        "H": cluster.gpu.hbm_bw_gb_per_s * 1e9 * cluster.gpu.hbm_efficiency,
        "ov": cluster.gpu.layer_overhead_us * 1e-6, "ovl": cluster.comm_overlap,
        "ov_sh": cluster.gpu.shard_unit_overhead_us * 1e-6, "ov_opt": cluster.gpu.optimizer_tensor_overhead_us * 1e-6,
        "loss_el": cluster.gpu.loss_element_ns * 1e-9,
        "ov_opt_sh": (cluster.gpu.optimizer_tensor_overhead_us if cluster.gpu.sharded_optimizer_tensor_overhead_us is None
                      else cluster.gpu.sharded_optimizer_tensor_overhead_us) * 1e-6,
        "ov_dd": cluster.gpu.ddp_sync_overhead_us * 1e-6,
        "ov_ddb": 1 / (cluster.gpu.ddp_copy_gb_per_s * 1e9) if cluster.gpu.ddp_copy_gb_per_s else 0.0,
        "ov_loss": cluster.gpu.loss_call_overhead_us * 1e-6,
        "ov_pp": cluster.gpu.pipeline_tick_overhead_us * 1e-6,
        "ov_shb": 1 / (cluster.gpu.shard_copy_gb_per_s * 1e9) if cluster.gpu.shard_copy_gb_per_s else 0.0,
    }
    return v


def usable_bytes(cluster: Cluster) -> float:
    return (cluster.gpu.mem_gib - cluster.gpu.reserved_mem_gib) * 2**30


def tier_for(group: int, cluster: Cluster) -> str:
    """A group of `group` consecutive ranks stays inside a node when it fits: intra-node tier."""
    if group <= 1:
        return "none"
    return "intra_node" if group <= cluster.gpus_per_node and cluster.gpus_per_node % group == 0 else "inter_node"


@dataclass(frozen=True)
class Strategy:
    """One candidate: teacher and student split, placement and micro-batch (plain numbers)."""

    teacher: str  # replicate | shard | pipeline | tp | hybrid
    student: str  # ddp | zero1 | zero2 | zero3 | hsdp
    placement: str  # colocated | disaggregated
    n_T: int
    n_S: int
    pp: int = 1
    tp: int = 1
    t_sh: int = 1
    s_sh: int = 1
    r_S: int = 1
    b: int = 1

    @property
    def teacher_label(self) -> str:
        degree = self.pp * self.tp * self.t_sh
        return self.teacher if degree == 1 else f"{self.teacher}:{degree}"

    @property
    def student_label(self) -> str:
        return self.student if self.student != "hsdp" else f"hsdp:{self.s_sh}x{self.r_S}"


STUDENT_SWITCHES = {"ddp": (0, 0, 0), "zero1": (1, 0, 0), "zero2": (1, 1, 0), "zero3": (1, 1, 1), "hsdp": (1, 1, 1)}


def strategy_values(st: Strategy, cluster: Cluster) -> dict[str, float]:
    """Values of the strategy symbols for one candidate, tiers chosen from the rank layout."""
    z_o, z_g, z_p = STUDENT_SWITCHES[st.student]
    groups = {"T": tier_for(st.pp * st.tp * st.t_sh, cluster), "S": tier_for(st.s_sh, cluster),
              "R": "one_nic", "X": "intra_node" if st.n_T + st.n_S <= cluster.gpus_per_node else "one_nic"}
    values = {
        "n_S": st.n_S, "n_T": st.n_T, "D": float(st.placement == "disaggregated"), "pp": st.pp, "tp": st.tp,
        "pipe": float(st.pp > 1), "t_sh": st.t_sh, "s_sh": st.s_sh, "r_S": st.r_S, "z_o": z_o, "z_g": z_g, "z_p": z_p, "b": st.b,
    }
    for group, where in groups.items():
        for short, name in zip(COLLECTIVE_SHORT, COLLECTIVES):
            values[f"bw_{short}_{group}"], values[f"al_{short}_{group}"] = link_fit(where, name, cluster)
    return values


def link_fit(where: str, collective: str, cluster: Cluster) -> tuple[float, float]:
    """(bytes/s per GPU, latency s) of a collective on a group that stays in a node ("intra_node",
    "none"), spans nodes over every rail ("inter_node": FSDP, ZeRO, DDP and tensor-parallel groups)
    or uses one NIC per GPU ("one_nic": point-to-point, HSDP's rail-aligned replica groups)."""
    if where == "inter_node":
        return cluster.spanning_fit(collective)
    if where == "one_nic":
        return cluster.inter_node.fit(collective)
    return cluster.intra_node.fit(collective)

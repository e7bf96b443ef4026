"""Numbers for the cost model's symbols: from a job and a cluster (fixed for a search) and from one
strategy (arrays over candidates). No formulas here, only the mapping from inputs to symbols; the
strategy's names, rules and tier choice live in `planner.strategy`."""

from __future__ import annotations

from typing import Protocol

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
    """Values of every symbol that a job, a cluster and a runtime (default: the bundled executor's) fix.
    A job that leaves the teacher output to the planner (`auto`) is costed with full logits; the
    search sets the output per plan (`planner.search.output`)."""
    w, rt = job.workload, runtime or load_runtime(DEFAULT_RUNTIME)
    teacher_dtype = w.teacher_dtype or job.teacher.dtype
    v: dict[str, float] = shape_values(job.student, "S") | shape_values(job.teacher, "T")
    v |= {
        "B": w.global_batch, "s_p": w.prompt_len, "s_c": w.completion_len, "lam": w.lmbda,
        "gen": float(w.lmbda > 0), "q_S": BYTES_PER_DTYPE[w.student_dtype], "q_W": w.weight_bytes, "q_T": BYTES_PER_DTYPE[teacher_dtype],
        "q_G": w.grad_bytes, "q_L": BYTES_PER_DTYPE[w.logits_dtype], "k_O": w.optimizer_bytes,
        "flash": float(w.flash_attention), "rc_full": float(w.grad_checkpointing == "full"),
        "rc_sel": float(w.grad_checkpointing == "selective"), "kvc": float(w.generation_kv_cache),
        "rc_op": 0.0,  # torchtitan's op policy: no bundled runtime runs it; bench/references_eval.py sets it for torchtitan rows
        "chunked": float((rt.loss or w.loss) == "chunked"), "C": w.loss_chunk_tokens,
        "topk_on": float(w.teacher_output in ("topk", "cached")), "cached": float(w.teacher_output == "cached"),
        "K": w.topk, "n_ep": w.epochs, "n_buf": rt.loss_buffers, "n_dense": rt.topk_dense_buffers,
        "io_rd": cluster.storage.read_gb_per_s * 1e9 / cluster.gpus_per_node,
        "io_wr": cluster.storage.write_gb_per_s * 1e9 / cluster.gpus_per_node,
        "ext": float(rt.logits == "sequence"),
        "M_dev": cluster.gpu.mem_gib * 2**30,
        "F_S": _peak(cluster, w.student_dtype, "student"), "F_T": _peak(cluster, teacher_dtype, "teacher"),
        "H": cluster.gpu.hbm_bw_gb_per_s * 1e9 * cluster.gpu.hbm_efficiency,
        "ovl": cluster.comm_overlap,
    }
    return v | overhead_values(rt, cluster.backend) | engine_values(rt, None, cluster)


def engine_values(rt: Runtime, engine: str | None, cluster: Cluster, sleep: bool | None = None,
                  tp: int | None = None) -> dict[str, float]:
    """The symbols of one rollout engine under a runtime (None: the runtime's own), on a cluster: its
    decode host time (the backend's fitted `decode_layer_overhead_us` where it has one), what one
    generation covers, its tensor-parallel group's links (in a node where it fits one), and a serving
    engine's reservation, sleep (`sleep`: the plan's choice; on GPUs only: vLLM's CPU backend has
    none) and refresh costs; `tp`: the plan's tensor-parallel degree of the engine (a dedicated
    server's, or a colocated engine's over K > 1 trainer GPUs), else (None) the runtime's."""
    from planner.strategy import tier

    backend = cluster.backend
    e, o = rt.generation.costs(engine), rt.overheads_on(backend)
    u = e.memory_utilization
    sleep = e.sleep if isinstance(e.sleep, bool) else (True if sleep is None else sleep)  # the runtime's, or the plan's under `choose`
    tp = e.tensor_parallel if tp is None else tp
    return group_links("G", tier(tp, cluster), cluster) | {
        "ov_dec": (e.layer_overhead_us if o.decode_layer_overhead_us is None else o.decode_layer_overhead_us) * 1e-6,
        "g_tp": tp, "g_bat": float(e.batch == "step"), "eng": float(e.serving),
        "u_eng": u if isinstance(u, float) else 0.0, "u_fill": float(u == "fill"), "slp": float(e.serving and sleep and backend == "nccl"),  # vLLM's sleep mode is CUDA's (CuMem)
        "t_wake": e.wake_ms * 1e-3, "ov_ref": e.refresh_tensor_overhead_us * 1e-6, "u_ded": e.dedicated_memory_utilization,
    }


def overhead_values(rt: Runtime, backend: str) -> dict[str, float]:
    """The framework overheads of a runtime on a backend (`Runtime.overheads`) as symbol values (s, s per byte)."""
    o = rt.overheads_on(backend)
    per_byte = lambda gb_per_s: 1 / (gb_per_s * 1e9) if gb_per_s else 0.0  # noqa: E731
    return {
        "ov": o.layer_overhead_us * 1e-6, "loss_el": o.loss_element_ns * 1e-9, "ov_loss": o.loss_call_overhead_us * 1e-6,
        "ov_opt": o.optimizer_tensor_overhead_us * 1e-6,
        "ov_opt_sh": (o.optimizer_tensor_overhead_us if o.sharded_optimizer_tensor_overhead_us is None else o.sharded_optimizer_tensor_overhead_us) * 1e-6,
        "ov_sh": o.shard_unit_overhead_us * 1e-6, "ov_shb": per_byte(o.shard_copy_gb_per_s),
        "ov_dd": o.ddp_sync_overhead_us * 1e-6, "ov_ddb": per_byte(o.ddp_copy_gb_per_s), "ov_pp": o.pipeline_tick_overhead_us * 1e-6,
    }


def usable_bytes(cluster: Cluster) -> float:
    return (cluster.gpu.mem_gib - cluster.gpu.reserved_mem_gib) * 2**30


class Layout(Protocol):
    """What the cost model reads from a strategy (`planner.strategy.Strategy`): rank counts,
    degrees, which student state is sharded and which link each group uses; never a name."""

    n_T: int
    n_S: int
    pp: int
    tp: int
    t_sh: int
    s_sh: int
    r_S: int
    b: int
    ep: int
    gather: str
    n_R: int
    ahead: bool

    @property
    def disaggregated(self) -> bool: ...

    @property
    def student_shards(self) -> tuple[int, int, int]: ...

    def links(self, cluster: Cluster) -> dict[str, str]: ...


def strategy_values(st: Layout, cluster: Cluster, links: dict | None = None) -> dict[str, float]:
    """Values of the strategy symbols for one candidate, on the links the strategy says its groups use
    (with how a sharded student is gathered for generation: the runtime says which it can, the plan which it does).
    `links`: a dict kept across the candidates of one cluster, holding each group's link values once
    (the search binds tens of thousands of candidates over a handful of distinct links)."""
    links = {} if links is None else links
    z_o, z_g, z_p = st.student_shards
    values = {
        "n_S": st.n_S, "n_T": st.n_T, "D": float(st.disaggregated), "pp": st.pp, "tp": st.tp,
        "pipe": float(st.pp > 1), "t_sh": st.t_sh, "s_sh": st.s_sh, "r_S": st.r_S, "z_o": z_o, "z_g": z_g, "z_p": z_p, "b": st.b,
        "ep": st.ep, "epx": float(st.ep > 1), "g_once": float(st.gather == "once"),
        "ded": float(st.n_R > 0), "n_R": max(st.n_R, 1), "asy": float(st.ahead and st.n_R > 0),
    }
    for group, where in st.links(cluster).items():
        key = (group, where, st.ep if group == "E" else 0)
        if key not in links:  # the expert-parallel group runs all-to-alls only
            links[key] = (dict(zip(("bw_a2a_E", "al_a2a_E"), all_to_all_fit(where, st.ep, cluster))) if group == "E"
                          else group_links(group, where, cluster))
        values |= links[key]
    return values


def group_links(group: str, where: str, cluster: Cluster) -> dict[str, float]:
    """The bandwidth and latency symbols of every collective on one group that talks `where`."""
    out = {}
    for short, name in zip(COLLECTIVE_SHORT, COLLECTIVES):
        out[f"bw_{short}_{group}"], out[f"al_{short}_{group}"] = link_fit(where, name, cluster)
    return out


def link_fit(where: str, collective: str, cluster: Cluster) -> tuple[float, float]:
    """(bytes/s per GPU, latency s) of a collective on a group that stays in a node ("intra_node",
    "none"), spans nodes over every rail ("inter_node": FSDP, ZeRO, DDP and tensor-parallel groups)
    or uses one NIC per GPU ("one_nic": point-to-point, HSDP's rail-aligned replica groups)."""
    if where == "inter_node":
        return cluster.spanning_fit(collective)
    if where == "one_nic":
        return cluster.inter_node.fit(collective)
    return cluster.intra_node.fit(collective)


def all_to_all_fit(where: str, n: int, cluster: Cluster) -> tuple[float, float]:
    """(bytes/s per GPU, latency s) of an all-to-all over n ranks. In a node: the intra-node tier.
    Spanning nodes: of the (n-1)/n of its buffer that leaves a GPU, (n-G)/n leaves the node, over
    that GPU's own NIC (an all-to-all has no ring to spread over the rails), so its bus bandwidth is
    one NIC's x (n-1)/(n-G): the multi-rail rule of `Cluster.spanning_fit` with that NIC scale
    (capped, as there, by the intra-node rate; a measured all-gather figure scales the same way)."""
    G = cluster.gpus_per_node
    if where != "inter_node":
        return cluster.intra_node.fit("all_gather")
    return cluster.spanning_fit("all_gather", nic_scale=(n - 1) / (G * max(n - G, 1)))

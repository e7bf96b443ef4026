"""Cluster topology: nodes of identical accelerators joined by network tiers (as in Calculon)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, model_validator

from planner.inputs.errors import InputError
from planner.inputs.machine import MeasuredOn
from planner.inputs.model import Dtype, Strict

# The search grows with the rank count (every divisor, every disaggregated split): 2048 ranks
# (256 nodes of 8) take about 26 s and 1.8 GB on one core; beyond that a plan takes minutes.
MAX_RANKS = 2048


def rank_bound(nodes: int, gpus_per_node: int) -> str | None:
    """Why `nodes` x `gpus_per_node` is too many ranks to plan, or None."""
    if nodes * gpus_per_node <= MAX_RANKS:
        return None
    return (f"{nodes} nodes x {gpus_per_node} = {nodes * gpus_per_node} ranks is over the planner's bound of {MAX_RANKS} "
            f"(at most {MAX_RANKS // gpus_per_node} nodes of {gpus_per_node}); plan a part of the cluster")


# Fields an accelerator held until the runtime input took them (planner.inputs.runtime.Overheads).
MOVED_TO_RUNTIME = ("layer_overhead_us", "loss_element_ns", "loss_call_overhead_us", "optimizer_tensor_overhead_us",
                    "shard_unit_overhead_us", "sharded_optimizer_tensor_overhead_us", "ddp_sync_overhead_us", "ddp_copy_gb_per_s",
                    "pipeline_tick_overhead_us", "shard_copy_gb_per_s")


class Accelerator(Strict):
    """One GPU (or one CPU process slot for the `cpu-local` topology)."""

    name: str = Field(description="Product name, e.g. 'H100 SXM5 80GB'.")
    mem_gib: float = Field(gt=0, description="Device memory in GiB.")
    reserved_mem_gib: float = Field(0.0, ge=0, description="Memory held back for the runtime (CUDA context, NCCL buffers, allocator fragmentation), GiB.")
    peak_tflops: dict[Dtype, float] = Field(description="Peak dense matmul throughput per dtype, TFLOP/s (no sparsity).")
    compute_efficiency: float | dict[Dtype, float] = Field(0.5, description="Fraction of peak reached by training matmuls (model FLOPs utilisation): one number, or one per dtype (a dtype not listed gets the smallest listed).")
    hbm_bw_gb_per_s: float = Field(gt=0, description="Device memory bandwidth, GB/s (1e9 bytes/s).")
    hbm_efficiency: float = Field(0.8, gt=0, le=1, description="Fraction of memory bandwidth reached by decoding.")

    @model_validator(mode="before")
    @classmethod
    def _no_framework_costs(cls, data):
        """Topologies written by `planner calibrate` before the runtime input existed carry the
        framework's overheads: say where they live now rather than a list of unknown keys."""
        moved = [k for k in MOVED_TO_RUNTIME if isinstance(data, dict) and k in data]
        if moved:
            raise ValueError(f"{', '.join(moved)}: framework overheads are no longer hardware; move them to a runtime file "
                             "(`overheads: {gloo|nccl: ...}` in runtimes/*.yaml, `planner schema runtime`) or rerun `planner calibrate --model`")
        return data

    @model_validator(mode="after")
    def _peaks(self) -> "Accelerator":
        if not self.peak_tflops:
            raise ValueError("peak_tflops: give at least one dtype")
        if any(v <= 0 for v in self.peak_tflops.values()):
            raise ValueError("peak_tflops: every value must be > 0")
        effs = self.compute_efficiency.values() if isinstance(self.compute_efficiency, dict) else [self.compute_efficiency]
        if not effs or any(not 0 < e <= 1 for e in effs):
            raise ValueError("compute_efficiency: every value must be in (0, 1]")
        if self.reserved_mem_gib >= self.mem_gib:
            raise ValueError(f"reserved_mem_gib ({self.reserved_mem_gib}) must be below mem_gib ({self.mem_gib})")
        return self


    def efficiency(self, dtype: str) -> float:
        """Fraction of the dtype's peak that training matmuls reach."""
        e = self.compute_efficiency
        return e if not isinstance(e, dict) else e.get(dtype, min(e.values()))


class CollectiveFit(Strict):
    """A measured alpha-beta pair for one collective on a tier (`planner calibrate`)."""

    bw_gb_per_s: float = Field(gt=0, description="Bandwidth one GPU reaches in this collective, GB/s (bus bandwidth: nccl-tests' convention).")
    latency_us: float = Field(ge=0, description="Per-step latency of this collective, microseconds.")


COLLECTIVES = ("all_reduce", "all_gather", "reduce_scatter", "p2p")


class NetworkTier(Strict):
    """A level of the interconnect: bandwidth per GPU, one direction (alpha-beta model)."""

    name: str = Field(description="What the tier is, e.g. 'NVLink 4 via NVSwitch' or '8x ConnectX-7 NDR 400Gb/s'.")
    bw_gb_per_s: float = Field(gt=0, description="Unidirectional bandwidth of one link or NIC, GB/s (1e9 bytes/s); shared by gpus_per_nic GPUs.")
    latency_us: float = Field(ge=0, description="Per-message latency (alpha), microseconds.")
    efficiency: float = Field(0.8, gt=0, le=1, description="Fraction of bw_gb_per_s that collectives reach (nccl-tests bus bandwidth / link rate).")
    gpus_per_nic: int = Field(1, gt=0, description="GPUs sharing one link or NIC; when all of them talk at once each gets bw_gb_per_s / gpus_per_nic.")

    collectives: dict[Literal["all_reduce", "all_gather", "reduce_scatter", "p2p"], CollectiveFit] = Field(
        default_factory=dict, description="Measured per-collective figures that replace bw_gb_per_s x efficiency and latency_us for that collective (gloo's all-gather is much slower than its all-reduce).")

    @property
    def bytes_per_s(self) -> float:
        """Bandwidth one GPU gets when every GPU talks: the rate the cost model uses."""
        return self.bw_gb_per_s * 1e9 * self.efficiency / self.gpus_per_nic

    def fit(self, collective: str) -> tuple[float, float]:
        """(bytes/s per GPU, latency s) of one collective on this tier."""
        if collective in self.collectives:
            c = self.collectives[collective]
            return c.bw_gb_per_s * 1e9 / self.gpus_per_nic, c.latency_us * 1e-6
        return self.bytes_per_s, self.latency_us * 1e-6


class Storage(Strict):
    """Node-local storage (an offline teacher cache is written and read here). The defaults are a
    DGX H100's data-cache volume: 8x 3.84 TB U.2 NVMe in RAID 0 (NVIDIA DGX H100 user guide,
    "Hardware overview"), PCIe Gen4 drives rated about 7 GB/s sequential read and 3.8 GB/s write
    each (Samsung PM1733 datasheet); we take about half their sum, as a file system over RAID 0
    reaches, not the drives' peak."""

    read_gb_per_s: float = Field(25.0, gt=0, description="Sequential read bandwidth of one node's local storage, GB/s (1e9 bytes/s), shared by its GPUs.")
    write_gb_per_s: float = Field(12.0, gt=0, description="Sequential write bandwidth of one node's local storage, GB/s, shared by its GPUs.")


class Slurm(Strict):
    """Hints for the exported sbatch script."""

    partition: str | None = Field(None, description="Default `--partition`.")
    account: str | None = Field(None, description="Default `--account`.")
    gpus_flag: str = Field("--gpus-per-node", description="How the site asks for GPUs ('--gpus-per-node' or '--gres=gpu').")
    cpus_per_task: int | None = Field(None, gt=0, description="Default `--cpus-per-task`.")
    time_limit: str = Field("01:00:00", description="Default `--time`.")


class Cluster(Strict):
    """A cluster: identical nodes, each with identical accelerators, and two network tiers."""

    name: str = Field(description="Short name, e.g. 'dgx-h100'.")
    description: str = Field("", description="One line on what this cluster is.")
    nodes: int = Field(gt=0, description="Number of nodes.")
    gpus_per_node: int = Field(gt=0, description="Accelerators (or CPU processes) per node.")
    gpu: Accelerator = Field(description="The accelerator every node carries.")
    intra_node: NetworkTier = Field(description="Tier between GPUs of one node (NVLink, xGMI, PCIe, shared memory).")
    inter_node: NetworkTier = Field(description="Tier between nodes (InfiniBand, RoCE, Ethernet).")
    backend: str = Field("nccl", pattern="^(nccl|gloo)$", description="torch.distributed backend: 'nccl' on GPUs, 'gloo' on CPU.")
    comm_overlap: float = Field(1.0, ge=0, le=1, description="Fraction of a prefetched collective (FSDP all-gather) that hides behind compute: 1 on GPUs (separate copy engines), 0 for gloo on CPU (the same cores do both).")
    storage: Storage = Field(default_factory=Storage, description="Node-local storage for an offline teacher cache (default: a DGX H100's NVMe RAID 0).")
    nccl_env: dict[str, str] = Field(default_factory=dict, description="Environment variables exported before launch.")
    slurm: Slurm = Field(default_factory=Slurm, description="Slurm hints for `planner export`.")
    measured_on: MeasuredOn | None = Field(None, description="The CPU a CPU topology's figures were measured on (`planner calibrate` records it); on another CPU the planning commands say so or use this machine's cached calibration (docs/calibration.md).")

    @property
    def world(self) -> int:
        return self.nodes * self.gpus_per_node

    def spanning_fit(self, collective: str, nic_scale=1.0, minimum=min) -> tuple[float, float]:
        """(bytes/s per GPU, latency s) of a collective whose group spans nodes.

        NCCL runs one ring (channel) per rail, so a node-spanning all-reduce, all-gather or
        reduce-scatter moves its inter-node traffic over every NIC of the node at once: the bus
        bandwidth is about min(GPUs per node x one GPU's NIC share, the intra-node rate) (NVIDIA
        nccl-tests doc/PERFORMANCE.md; DESIGN.md sec. 4). A measured inter-node figure (`collectives`)
        is already a bus bandwidth and is taken as it is. Point-to-point uses one NIC.
        `nic_scale` scales the inter-node rate and `minimum` takes the cap, so that the inflection
        search can pass a symbol and `sympy.Min`.
        """
        inter = self.inter_node
        bw_nic, alpha = inter.fit(collective)
        if collective == "p2p" or collective in inter.collectives:
            return bw_nic * nic_scale, alpha
        return minimum(self.gpus_per_node * bw_nic * nic_scale, self.intra_node.fit(collective)[0]), alpha

    @model_validator(mode="after")
    def _bounded(self) -> "Cluster":
        if why := rank_bound(self.nodes, self.gpus_per_node):
            raise ValueError(why)
        return self

    def resized(self, nodes: int) -> "Cluster":
        """The same cluster with another node count (at least 1, within `MAX_RANKS`); a description
        that starts with the node count ("2 x ...", "4 nodes x ...") says the new one, any other says
        it was resized."""
        if nodes < 1:
            raise InputError(f"nodes: must be at least 1, got {nodes}")
        if why := rank_bound(nodes, self.gpus_per_node):
            raise InputError(f"nodes: {why}")
        if nodes == self.nodes:
            return self
        desc, count = self.description, re.match(rf"{self.nodes}( nodes?)? x ", self.description)
        if count:
            unit = (" node" if nodes == 1 else " nodes") if count.group(1) else ""
            desc = f"{nodes}{unit} x {desc[count.end():]}"
        elif desc:
            desc = f"{desc} (resized to {nodes} nodes)"
        return self.model_copy(update={"nodes": nodes, "description": desc})

"""The runtime: how a framework executes a layout (DESIGN.md sec. 3, input 4).

A plan is a layout (how the teacher and the student are split) run by a runtime. TRL's trainers
and the bundled executor run the same layout differently: over which tokens they compute logits,
how their loss holds the vocabulary tensors, how they generate. Hardware stays in the topology;
what belongs to the software lives here (`runtimes/*.yaml`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from planner.inputs.model import Strict


Gather = Literal["once", "per_step"]
GATHERS: tuple[str, ...] = ("once", "per_step")  # planner.strategy spells the plan's choice


Engine = Literal["hf-eager", "hf-static", "vllm"]


def node_degrees(gpus_per_node: int) -> tuple[int, ...]:
    """1, 2, 4, ...: the powers of two that divide a node (vLLM's tensor parallelism runs inside one)."""
    return tuple(2**i for i in range(gpus_per_node.bit_length()) if gpus_per_node % 2**i == 0)


class EngineCosts(Strict):
    """How a runtime runs one rollout engine: its host time per decode step, how many sequences one
    generation holds, and, for a serving engine (vLLM) beside the trainer, what it reserves and what
    moving the trainer's weights into it costs."""

    layer_overhead_us: float = Field(ge=0, description="Host time per decoder layer per decode step (Python, kernel launches), microseconds; a decode step takes the larger of this x layers and the device time. Fitted on published decode latencies (bench/references).")
    batch: Literal["micro", "step"] = Field("micro", description="What one generation covers: `micro`, each micro-batch's b samples in turn (GKDTrainer's training_step); `step`, every on-policy sample of the rank's optimizer step at once, ga x b (TRL 1.16 DistillationTrainer's generation batch, `_prepare_inputs`; a vLLM engine batching them continuously). The weights are read once per decode step for all the sequences one generation holds.")
    memory_utilization: float | Literal["fill"] | None = Field(None, description="vllm: the share of each GPU's memory the engine reserves for its weights and KV cache (vLLM gpu_memory_utilization; TRL's vllm_gpu_memory_utilization, 0.3 by default), or `fill`: what the plan needs, its weights and the cache of every sequence one generation holds (the planner writes the share into the plan; a plan where that does not fit is out of memory); under a fixed share, the sequences that fit its KV cache at once bound each decode wave. Unset: the trainer's own model generates (no engine).")
    sleep: bool | Literal["choose"] = Field(False, description="vllm: the engine sleeps while the trainer runs (vLLM sleep mode, on GPUs; TRL `vllm_enable_sleep_mode`): its reservation is freed for training and taken again per generation (`wake_ms`); without it the reservation stays held beside the trainer. `choose`: the search tries both and the plan's rollout.sleep records the choice.")
    wake_ms: float = Field(0.0, ge=0, description="vllm with sleep: fixed time to wake the engine (weights and KV cache mapped again) per generation, milliseconds.")
    refresh_tensor_overhead_us: float = Field(0.0, ge=0, description="vllm: fixed time per parameter tensor of the per-step weight refresh beyond the copy itself (TRL 1.16 colocate: one `load_weights([(name, param)])` call per tensor), microseconds.")
    beside_teacher_ranks: bool = Field(True, description="Whether this engine runs beside a teacher on ranks of its own in the trainer's torch.distributed world (a disaggregated in-process teacher); false: the search never pairs the two (the bundled executor's vLLM engine: its external launcher spans the whole world).")
    dedicated: bool = Field(False, description="vllm: whether this runtime can also run the engine on rollout GPUs of its own (vLLM servers of the student, outside the trainer's world, its weights pushed from the trainer every step: TRL's vLLM server mode, AsyncDistillationTrainer, verl); the search then tries 1, 2, 4, ... such GPUs (`+vllm:dedicated:N`).")
    dedicated_only: bool = Field(False, description="vllm: the runtime generates only on dedicated rollout GPUs (never colocated).")
    dedicated_memory_utilization: float = Field(0.9, gt=0, le=1, description="vllm on dedicated rollout GPUs: the share of each GPU's memory the engine reserves (vLLM's own default gpu_memory_utilization, 0.9: vllm/engine/arg_utils.py), its weights and the rest KV cache.")
    ahead: bool | Literal["choose"] = Field(False, description="vllm on dedicated rollout GPUs: the rollouts of step n+1 are generated while step n trains (one step ahead, staleness 1; TRL AsyncDistillationTrainer, verl's async); `choose`: the search tries both and the plan's schedule records the choice.")
    tensor_parallel: int = Field(1, ge=1, description="GPUs a separate generation engine splits its 16-bit copy of the student over (vLLM `tensor_parallel_size`, colocated with the trainer): each holds and, per decode step, reads 1/N of it for the sequences of N ranks; then waits for two all-reduces per layer (on the intra-node link where N fits a node); 1: one engine per GPU (or the trainer's own model).")
    colocated_tensor_parallel: Literal["fixed", "choose"] = Field("fixed", description="vllm on the trainer's GPUs: `fixed`, every engine at `tensor_parallel`; `choose`, the search also tries engines split over 2, 4, ... consecutive trainer ranks within a node (TRL's vllm_tensor_parallel_size, verl's hybrid engine), written `+vllm:tp:K` and recorded in the plan's rollout.tp.")
    dedicated_tensor_parallel: int | Literal["choose"] | None = Field(None, description="vllm on dedicated rollout GPUs: the tensor-parallel degree of each server (`--tensor-parallel-size`; its GPUs hold 1/N of the weights each, so more of their memory is KV cache, and every decode step waits for two all-reduces per layer); `choose`: the search tries 1, 2, 4, ... up to one node's GPUs, and the plan's rollout.tp records the choice; unset: tensor_parallel.")

    def sleeps(self) -> tuple[bool, ...]:
        """Whether a plan's engine sleeps, each way the search tries (a non-serving engine: never)."""
        if not self.serving:
            return (False,)
        return (False, True) if self.sleep == "choose" else (bool(self.sleep),)

    def placements(self) -> tuple[bool, ...]:
        """Whether a plan's engine runs on rollout GPUs of its own, each way the search tries."""
        if not (self.serving and self.dedicated):
            return (False,)
        return (True,) if self.dedicated_only else (False, True)

    def colocated_tps(self, gpus_per_node: int) -> tuple[int, ...]:
        """The tensor-parallel degrees the search tries for a serving engine on the trainer's GPUs:
        1 (the runtime's `tensor_parallel`, whatever it is) and, under `colocated_tensor_parallel:
        choose`, each power of two above 1 that divides a node."""
        return node_degrees(gpus_per_node) if self.colocated_tensor_parallel == "choose" and self.serving else (1,)

    def dedicated_tps(self, gpus_per_node: int) -> tuple[int, ...]:
        """The tensor-parallel degrees the search tries for servers on rollout GPUs of their own: the
        runtime's, or (`choose`) each power of two that divides a node (vLLM's TP runs inside one node)."""
        k = self.dedicated_tensor_parallel
        return node_degrees(gpus_per_node) if k == "choose" else (self.tensor_parallel if k is None else k,)

    def schedules(self) -> tuple[bool, ...]:
        """Whether dedicated rollouts run one step ahead, each way the search tries."""
        return (False, True) if self.ahead == "choose" else (bool(self.ahead),)

    @property
    def serving(self) -> bool:
        """A separate serving engine (vLLM) beside the trainer, with a reservation of its own."""
        return self.memory_utilization is not None


class Generation(EngineCosts):
    """How on-policy completions are generated (prefill, then one decode step per token)."""

    engine: Engine = Field(description="hf-eager: `model.generate`/a Python decode loop, one kernel launch per op; hf-static: static KV cache + torch.compile (CUDA graphs); vllm: a serving engine.")
    sharded_gather: list[Gather] = Field(min_length=1, description="How this runtime can gather a ZeRO-3/HSDP student for generation: `once` per generation (the whole model in the compute dtype, TRL's ds3_gather_for_generation) and/or `per_step` (layer by layer at every decode step, FSDP2's hooks: less memory, a gather per step). The search tries each listed mode and the plan records its choice; a single word is read as a list of one.")
    other_engines: dict[Engine, EngineCosts] = Field(default_factory=dict, description="Other rollout engines this runtime can run colocated with the trainer, each with its costs: the search tries each on a backend without its own decode_layer_overhead_us (workload.rollout_engine can fix one); the plan's rollout.engine records the choice. Empty: only `engine`.")

    def costs(self, engine: str | None = None) -> EngineCosts:
        """The costs of `engine` (None: this runtime's own) under this runtime."""
        return self if engine in (None, self.engine) else self.other_engines[engine]

    @field_validator("sharded_gather", mode="before", json_schema_input_type=Gather | list[Gather])
    @classmethod
    def _one_word(cls, value):
        """`sharded_gather: once` (the runtime files before the planner chose) is `[once]`."""
        return [value] if isinstance(value, str) else value


class Overheads(Strict):
    """A framework's own costs beyond the modelled work, fitted by `planner calibrate --model` (each as
    "measured minus the cost model's prediction with it at zero", `planner.calibrate.fit`). They
    belong to the framework on one kind of device: on a CPU the cores that run Python also do the
    math; on a GPU most of it hides behind asynchronous kernels (zero unless measured)."""

    layer_overhead_us: float = Field(0.0, ge=0, description="Fixed time per decoder layer per forward pass (kernel launches, framework), microseconds; a backward counts twice.")
    loss_element_ns: float = Field(0.0, ge=0, description="Compute time of the GKD loss (forward + backward) per [token x vocabulary] element, nanoseconds; 0 = bandwidth-bound only (GPUs).")
    loss_call_overhead_us: float = Field(0.0, ge=0, description="Fixed time per call of the GKD loss (forward + backward; its small operations), microseconds.")
    optimizer_tensor_overhead_us: float = Field(0.0, ge=0, description="Fixed time per parameter tensor of gradient clipping and the optimizer step (foreach kernels, Python), microseconds.")
    sharded_optimizer_tensor_overhead_us: float | None = Field(None, ge=0, description="The same for FSDP-sharded (DTensor) parameters, whose clipping and step cost more per tensor; unset = optimizer_tensor_overhead_us.")
    shard_unit_overhead_us: float = Field(0.0, ge=0, description="Fixed time per FSDP unit per all-gather or reduce-scatter beyond the collective itself (hooks, DTensor; the per-byte copies are shard_copy_gb_per_s), microseconds.")
    shard_copy_gb_per_s: float | None = Field(None, gt=0, description="FSDP copy-in/out throughput per gathered or reduce-scattered byte, beyond the collective itself, GB/s; unset = free.")
    ddp_sync_overhead_us: float = Field(0.0, ge=0, description="Fixed time of DDP's gradient sync beyond the all-reduce itself (reducer, bucket handling), microseconds per sync.")
    ddp_copy_gb_per_s: float | None = Field(None, gt=0, description="DDP's gradient sync cost per gradient byte beyond the all-reduce (bucket copies; on a CPU, gloo's thread sharing the core with the backward), GB/s; unset = free.")
    pipeline_tick_overhead_us: float = Field(0.0, ge=0, description="Fixed time per tick of a pipelined teacher forward beyond the stage's layers and its activation send (the schedule, the gathers of inputs and scatter of logits), microseconds.")
    decode_layer_overhead_us: float | None = Field(None, ge=0, description="Host time per decoder layer per decode step on this backend, microseconds; unset = generation.layer_overhead_us.")


OVERHEAD_FIELDS = tuple(f for f in Overheads.model_fields if f != "decode_layer_overhead_us")


class Runtime(Strict):
    """A framework's way of running a GKD step."""

    name: str = Field(description="Short name, e.g. 'trl-gkd'.")
    description: str = Field("", description="One line on what this runtime is.")
    logits: Literal["sequence", "completion"] = Field(description="Tokens whose logits the LM heads produce and the loss holds: every position (TRL GKDTrainer) or the completion only (logits_to_keep).")
    loss: Literal["full", "chunked"] | None = Field(None, description="Loss implementation: full-vocabulary JSD over all tokens at once, or chunked; unset: as the job's workload.loss says.")
    loss_buffers: int = Field(10, gt=0, description="fp32 [tokens, V] tensors the loss keeps alive at once (TRL 1.16 generalized_jsd_loss: about ten).")
    generation: Generation = Field(description="Generation engine and its costs.")
    overheads: dict[Literal["nccl", "gloo"], Overheads] = Field(
        default_factory=dict, description="Fitted framework overheads per torch.distributed backend (the topology's `backend`: gloo on CPU, nccl on GPU); a backend not listed has none.")
    teacher_splits: list[Literal["replicate", "shard", "pipeline", "tp", "hybrid"]] | None = Field(
        None, description="Teacher splits this runtime can run colocated; unset: any. The search never recommends another.")
    disaggregated_teachers: list[Literal["replicate", "shard", "pipeline", "tp", "hybrid"]] | None = Field(
        None, description="Teacher splits this runtime can run on ranks of their own (disaggregated); unset: any.")
    teacher_ranks_divide_students: bool = Field(False, description="Whether an in-process teacher on ranks of its own must have a number of ranks that divides the student's (each teacher rank answers the same number of student ranks: the bundled executor); the search never pairs others under it.")
    expert_parallel: bool = Field(False, description="Whether this runtime can split a mixture-of-experts teacher's experts over ranks (expert parallelism, `+ep:N`); the search never recommends an expert-parallel teacher under a runtime that cannot.")
    tp_experts: bool = Field(True, description="Whether this runtime's tensor parallelism splits a mixture-of-experts teacher's experts too (vLLM, Megatron do); false: the search never recommends a tp split of an MoE teacher under it.")

    teacher_engine: Literal["pytorch", "vllm-server"] = Field("pytorch", description="What runs the teacher: pytorch (in the trainer's torch.distributed world) or vllm-server (vLLM servers of the teacher on GPUs of their own, top-k log-probs over the network).")
    serves_teacher: bool = Field(False, description="Whether this runtime can also serve a pytorch teacher's part from vLLM servers on GPUs of their own (replicas or tp groups, top-k), which the search then tries beside its in-process splits (`served:N` in the strategy grammar; workload.teacher_serving can fix one).")
    teacher_outputs: list[Literal["logits", "topk", "cached"]] | None = Field(
        None, description="Teacher outputs this runtime can train from (full logits, top-k, an offline top-k cache); unset: any. The search tries only these.")
    topk_dense_buffers: int = Field(1, ge=0, description="fp32 [tokens, V] tensors a top-k loss still keeps alive (the dense gradient of the student's logits; a full log-softmax before gathering adds more).")

    def overheads_on(self, backend: str) -> Overheads:
        """The framework overheads on a backend (none where not listed)."""
        return self.overheads.get(backend) or Overheads()

    def cannot_run(self, teacher: str, placement: str, ep: int = 1, output: str = "logits", gather: str | None = None,
                   moe: bool = False) -> str | None:
        """Why this runtime cannot run a teacher split (with expert-parallel degree `ep`; `moe`: of a
        mixture-of-experts teacher) in a placement with a teacher output, gathering a sharded student for
        generation as `gather` says (None: the plan does not gather one), or None."""
        if gather is not None and gather not in self.generation.sharded_gather:
            return f"the {self.name} runtime does not gather a sharded student {gather.replace('_', ' ')} for generation"
        if ep > 1 and not self.expert_parallel:
            return f"the {self.name} runtime does not run an expert-parallel teacher"
        if teacher == "tp" and moe and not self.tp_experts:
            return f"the {self.name} runtime does not split a mixture-of-experts teacher by tensor parallelism"
        if self.teacher_outputs is not None and output not in self.teacher_outputs:
            return f"the {self.name} runtime does not train from teacher output '{output}'"
        allowed = self.disaggregated_teachers if placement == "disaggregated" else self.teacher_splits
        if allowed is not None and teacher not in {"pipeline" if a == "hybrid" else a for a in allowed}:  # hybrid: pipeline's old name
            where = "on its own ranks" if placement == "disaggregated" else "colocated"
            return f"the {self.name} runtime does not run a {teacher} teacher {where}"
        return None

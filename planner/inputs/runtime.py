"""The runtime: how a framework executes a layout (DESIGN.md sec. 3, input 4).

A plan is a layout (how the teacher and the student are split) run by a runtime. TRL's trainers
and the bundled executor run the same layout differently: over which tokens they compute logits,
how their loss holds the vocabulary tensors, how they generate. Hardware stays in the topology;
what belongs to the software lives here (`runtimes/*.yaml`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from planner.inputs.model import Strict


class Generation(Strict):
    """How on-policy completions are generated (prefill, then one decode step per token)."""

    engine: Literal["hf-eager", "hf-static", "vllm"] = Field(description="hf-eager: `model.generate`/a Python decode loop, one kernel launch per op; hf-static: static KV cache + torch.compile (CUDA graphs); vllm: a serving engine.")
    layer_overhead_us: float = Field(ge=0, description="Host time per decoder layer per decode step (Python, kernel launches), microseconds; a decode step takes the larger of this x layers and the device time. Fitted on published decode latencies (bench/references).")
    sharded_gather: Literal["once", "per_step"] = Field(description="A ZeRO-3/FSDP student: gather its weights once per generation (TRL's ds3_gather_for_generation, the default) or at every decode step (FSDP2 hooks, the bundled executor).")


class Runtime(Strict):
    """A framework's way of running a GKD step."""

    name: str = Field(description="Short name, e.g. 'trl-gkd'.")
    description: str = Field("", description="One line on what this runtime is.")
    logits: Literal["sequence", "completion"] = Field(description="Tokens whose logits the LM heads produce and the loss holds: every position (TRL GKDTrainer) or the completion only (logits_to_keep).")
    loss: Literal["full", "chunked"] | None = Field(None, description="Loss implementation: full-vocabulary JSD over all tokens at once, or chunked; unset: as the job's workload.loss says.")
    loss_buffers: int = Field(10, gt=0, description="fp32 [tokens, V] tensors the loss keeps alive at once (TRL 1.16 generalized_jsd_loss: about ten).")
    generation: Generation = Field(description="Generation engine and its costs.")
    teacher_splits: list[Literal["replicate", "shard", "pipeline", "tp", "hybrid"]] | None = Field(
        None, description="Teacher splits this runtime can run colocated; unset: any. The search never recommends another.")
    disaggregated_teachers: list[Literal["replicate", "shard", "pipeline", "tp", "hybrid"]] | None = Field(
        None, description="Teacher splits this runtime can run on ranks of their own (disaggregated); unset: any.")

    def cannot_run(self, teacher: str, placement: str) -> str | None:
        """Why this runtime cannot run a teacher split in a placement, or None."""
        allowed = self.disaggregated_teachers if placement == "disaggregated" else self.teacher_splits
        if allowed is not None and teacher not in {"pipeline" if a == "hybrid" else a for a in allowed}:  # hybrid: pipeline's old name
            where = "on its own ranks" if placement == "disaggregated" else "colocated"
            return f"the {self.name} runtime does not run a {teacher} teacher {where}"
        return None

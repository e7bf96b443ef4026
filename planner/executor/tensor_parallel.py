"""The tensor-parallel teacher (`tp:N`): every decoder layer split over the N ranks of a TP group
with `torch.distributed.tensor.parallel.parallelize_module` (Megatron-LM's column/row split,
Shoeybi et al. 2019, as torchtitan applies it to Llama):

| module | style | what a rank holds |
|---|---|---|
| `self_attn.q_proj`, `k_proj`, `v_proj` | `ColwiseParallel` | 1/N of the query and key/value heads |
| `self_attn.o_proj` | `RowwiseParallel` | the matching 1/N of its input; output all-reduced |
| `mlp.gate_proj`, `up_proj` | `ColwiseParallel` | 1/N of the FFN width |
| `mlp.down_proj` | `RowwiseParallel` | the matching 1/N of its input; output all-reduced |
| `embed_tokens` | `RowwiseParallel` | 1/N of the vocabulary rows; the lookup all-reduced |
| `lm_head` | `ColwiseParallel` | 1/N of the vocabulary; its logits stay vocabulary-split |

Hugging Face's Llama, Qwen2 and Qwen3 attention reshape to `(..., -1, head_dim)`, so they run on
the local heads unchanged; Qwen3's q/k norms act per head (over `head_dim`) and need no split;
norms and rotary tables are replicated. Two all-reduces per layer, as the cost model charges.

A TP group computes one forward for all its ranks (`request`): the group's micro-batches are
all-gathered (every rank needs the same input), the teacher runs once over the N*b rows, and the
vocabulary-split logits are redistributed (DTensor `Shard(2) -> Shard(0)`: one all-to-all) so that
each rank keeps the full vocabulary of its own b rows, (N-1)/N of its logits over the link, not the
(N-1) x of an all-gathered LM head. With `teacher_output: topk` (`request_topk`) each rank selects
the top k of its vocabulary shard, the k-wide candidates are exchanged the same way and the top k
of the N*k kept: the top-k of the full logits, without moving them.

The weights are loaded into the shards directly: `parallelize_module` runs on the meta model (no
communication: `src_data_rank=None` splits locally), then `weights.fill` reads each DTensor's slice
from the safetensors checkpoint. With random weights every rank builds the same model and keeps
its slice, again without communication.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.tensor import DTensor, Replicate, Shard
from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

from planner.executor.data import Batch
from planner.executor.loss import TopK

LAYER_PLAN = {
    "self_attn.q_proj": ColwiseParallel, "self_attn.k_proj": ColwiseParallel, "self_attn.v_proj": ColwiseParallel,
    "self_attn.o_proj": RowwiseParallel,
    "mlp.gate_proj": ColwiseParallel, "mlp.up_proj": ColwiseParallel, "mlp.down_proj": RowwiseParallel,
}


def apply_tp(model: nn.Module, mesh: DeviceMesh) -> nn.Module:
    """Split a Hugging Face Llama-family causal LM over the 1-D `mesh` (in place); the degree divides
    the heads (`groups.check_supported` refuses other plans)."""
    plan = {f"model.layers.*.{name}": style() for name, style in LAYER_PLAN.items()}
    plan["model.embed_tokens"] = RowwiseParallel(input_layouts=Replicate(), output_layouts=Replicate())
    plan["lm_head"] = ColwiseParallel(use_local_output=False)  # logits stay a vocabulary-split DTensor
    parallelize_module(model, mesh, plan, src_data_rank=None)  # every rank holds the same (or meta) weights: split locally
    if model.config.tie_word_embeddings:  # both vocabulary rows split the same way (Shard(0)): tie them again
        model.lm_head.weight = model.model.embed_tokens.weight
    return model


class TensorParallel:
    """This rank's part of a tp:N teacher; `request` is collective over its TP group."""

    def __init__(self, model: nn.Module, device: torch.device, completion_len: int, mesh: DeviceMesh, prompt_len: int):
        meta = any(p.is_meta for p in model.parameters())
        self.model, self.P, self.C, self.mesh = apply_tp(model, mesh), prompt_len, completion_len, mesh
        if not meta:  # random weights: the slices are on the mesh's device already, the norms and buffers follow
            model.to(device)  # (a model built on meta is split first, then loaded: `weights.fill`)
        self.group, self.n = mesh.get_group(), mesh.size()

    def _gather(self, t: torch.Tensor) -> torch.Tensor:
        """The TP group's micro-batches, in group-rank order: [N*b, ...] on every rank."""
        parts = [torch.empty_like(t) for _ in range(self.n)]
        torch.distributed.all_gather(parts, t.contiguous(), group=self.group)
        return torch.cat(parts)

    def _logits(self, batch: Batch) -> DTensor:
        """The group's completion logits, [N*b, C, V] split over the vocabulary (`Shard(2)`). The ranks'
        micro-batches are padded to the plan's lengths first (each is padded to its own longest sample,
        and the group's all-gather needs one shape); `request` cuts its rows back."""
        batch = batch.pad(self.P, self.C)
        ids, mask = self._gather(batch.input_ids), self._gather(batch.attention_mask)
        out = self.model(input_ids=ids, attention_mask=mask, logits_to_keep=self.C + 1).logits
        return out[:, :-1]  # positions P-1 .. P+C-2, as `teacher.completion_logits`

    def _own_rows(self, t: torch.Tensor, shape) -> torch.Tensor:
        """[N*b, C, w] on each rank of the group, read as one [N*b, C, N*w] tensor split over its last
        dimension -> this rank's b rows of it."""
        d = DTensor.from_local(t.contiguous(), self.mesh, [Shard(2)], run_check=False, shape=shape,
                               stride=torch.empty(shape, device="meta").stride())
        return d.redistribute(self.mesh, [Shard(0)]).to_local()

    @torch.no_grad()
    def request(self, batch: Batch):
        width, logits = batch.completion_len, self._logits(batch)
        mine = logits.redistribute(self.mesh, [Shard(0)]).to_local()
        return lambda: mine[:, :width]  # right padding does not change the logits before it (causal)

    @torch.no_grad()
    def request_topk(self, batch: Batch, k: int):
        """The top k of this rank's rows, selected shard by shard (`TopKTeacher` calls this)."""
        width, logits = batch.completion_len, self._logits(batch)
        V = logits.shape[-1]
        local = logits.to_local()
        if V % self.n or local.shape[-1] < k:  # uneven or narrow shards: move the logits, then select
            mine = logits.redistribute(self.mesh, [Shard(0)]).to_local()
            values, indices = mine.topk(k, dim=-1)
        else:
            values, indices = local.topk(k, dim=-1)
            indices += self.mesh.get_local_rank() * (V // self.n)  # the shard's first vocabulary index
            rows, C = local.shape[0], local.shape[1]
            values = self._own_rows(values, (rows, C, self.n * k))
            indices = self._own_rows(indices, (rows, C, self.n * k))
            values, pick = values.topk(k, dim=-1)
            indices = indices.gather(-1, pick)
        return lambda: TopK(values[:, :width], indices[:, :width].to(torch.int32))

"""The frozen teacher, one class per strategy; each turns a student micro-batch into the teacher's
completion logits [b, C, V] on the rank that owns the micro-batch.

- `Replicated`: a plain module on every teacher rank (eval, no grad, no wrapper).
- `Sharded`: FSDP2 `fully_shard` per decoder layer and at the root over the teacher mesh (1-D: the
  ZeRO-3 analogue TRL uses; 2-D: HSDP); weights are all-gathered at every forward.
- `Pipelined`: `torch.distributed.pipelining` stages over each pipeline group, forward-only
  (`ScheduleGPipe.eval`); the group's micro-batches are gathered on stage 0, flow through, and
  the last stage scatters each owner its logits. The stages fix their tensor shapes at the first
  forward, so every micro-batch is padded to the fixed `prompt_len + completion_len` here.
- `Remote` / `serve`: disaggregated placement; a student rank sends its tokens to its teacher rank
  and receives the logits with point-to-point isend/irecv, or with `teacher_output: topk` only the
  top-k values (logits dtype) and int32 indices, [b, C, k] each (`planner.executor.topk`). Each
  request first sends the batch's shape (length, completion width): batches are padded to their
  longest sample, so the teacher rank cannot know it in advance.

`request(batch)` returns a function that waits for and returns the logits, so a remote teacher
computes while the student runs its own forward.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.distributed as dist
from torch import nn

from planner.executor.data import Batch
from planner.executor.loss import TopK

Wait = Callable[[], torch.Tensor]


def completion_logits(model: nn.Module, ids: torch.Tensor, mask: torch.Tensor, completion_len: int) -> torch.Tensor:
    """Logits predicting the completion tokens: positions P-1 .. P+C-2 (the LM head runs on those only)."""
    return model(input_ids=ids, attention_mask=mask, logits_to_keep=completion_len + 1).logits[:, :-1]


def is_meta(model: nn.Module) -> bool:
    return any(p.is_meta for p in model.parameters())


class Replicated:
    def __init__(self, model: nn.Module, device: torch.device, completion_len: int):
        self.model, self.C = model.to(device), completion_len

    @torch.no_grad()
    def request(self, batch: Batch) -> Wait:
        logits = completion_logits(self.model, batch.input_ids, batch.attention_mask, batch.completion_len)
        return lambda: logits


class Sharded(Replicated):
    def __init__(self, model: nn.Module, device: torch.device, completion_len: int, mesh):
        from torch.distributed.fsdp import fully_shard

        if not is_meta(model):  # a model built on meta is sharded first, then loaded (executor.weights)
            model.to(device)
        for layer in model.model.layers:
            fully_shard(layer, mesh=mesh)
        if model.lm_head.weight is not model.model.embed_tokens.weight:
            # Units of their own, each gathered alone and resharded after its forward: in the root unit
            # embeddings and head were gathered together, and FSDP2's copy-out holds its all-gather output
            # beside the unsharded parameters, so a forward held twice both vocabulary matrices
            # (a 32k-vocabulary teacher of 600 MB: 0.5 GB more per rank, docs/executor.md).
            fully_shard(model.model.embed_tokens, mesh=mesh)
            fully_shard(model.lm_head, mesh=mesh)
        fully_shard(model, mesh=mesh)
        self.model, self.C = model, completion_len

    @torch.no_grad()
    def request(self, batch: Batch) -> Wait:
        logits = completion_logits(self.model, batch.input_ids, batch.attention_mask, batch.completion_len)
        self.model.reshard()  # FSDP2 keeps the root's weights gathered after forward, waiting for a backward that never comes
        return lambda: logits


class Stage(nn.Module):
    """Layers [lo, hi) of a Hugging Face decoder; the first stage embeds, the last one ends in logits."""

    def __init__(self, model: nn.Module, lo: int, hi: int, completion_len: int):
        super().__init__()
        inner, n = model.model, model.config.num_hidden_layers
        self.config, self.C = model.config, completion_len
        self.embed = inner.embed_tokens if lo == 0 else None
        self.layers = nn.ModuleList(inner.layers[lo:hi])
        self.rotary = inner.rotary_emb
        self.norm, self.head = (inner.norm, model.lm_head) if hi == n else (None, None)

    def forward(self, x: torch.Tensor, mask: torch.Tensor):
        from transformers.masking_utils import create_causal_mask

        from planner.executor.hf_compat import CACHE

        h = self.embed(x) if self.embed is not None else x
        pos = torch.arange(h.shape[1], device=h.device).unsqueeze(0)
        causal = create_causal_mask(config=self.config, inputs_embeds=h, attention_mask=mask, position_ids=pos, **{CACHE: None})
        pe = self.rotary(h, position_ids=pos)
        for layer in self.layers:
            h = layer(h, attention_mask=causal, position_embeddings=pe, position_ids=pos)
        if self.head is None:
            return h, mask
        return self.head(self.norm(h[:, -(self.C + 1):-1]))


def layer_split(num_layers: int, stages: int) -> list[tuple[int, int]]:
    """Contiguous, as-even-as-possible layer ranges, earlier stages taking the remainder."""
    q, r = divmod(num_layers, stages)
    bounds, lo = [], 0
    for i in range(stages):
        hi = lo + q + (i < r)
        bounds.append((lo, hi))
        lo = hi
    return bounds


class Pipelined:
    def __init__(self, model: nn.Module, device: torch.device, completion_len: int, group: dist.ProcessGroup,
                 group_ranks: list[int], micro_batch: int, prompt_len: int):
        from torch.distributed.pipelining import PipelineStage, ScheduleGPipe

        self.group, self.ranks, self.P, self.C, self.device = group, sorted(group_ranks), prompt_len, completion_len, device
        self.index, k = dist.get_rank(group), len(group_ranks)
        lo, hi = layer_split(model.config.num_hidden_layers, k)[self.index]
        self.stage_module = Stage(model, lo, hi, completion_len).to(device)
        stage = PipelineStage(self.stage_module, self.index, k, device, group=group)
        # one sample per pipeline micro-batch: k*b of them, so fill and drain cost (k-1)/(k*b+k-1)
        self.schedule = ScheduleGPipe(stage, n_microbatches=k * micro_batch)

    @torch.no_grad()
    def request(self, batch: Batch) -> Wait:
        k, first, last = len(self.ranks), self.ranks[0], self.ranks[-1]
        width = batch.completion_len
        batch = batch.pad(self.P, self.C)  # the stages' shapes are fixed at their first forward
        gathered = None
        if self.index == 0:
            gathered = [torch.empty_like(batch.input_ids) for _ in range(k)], [torch.empty_like(batch.attention_mask) for _ in range(k)]
        dist.gather(batch.input_ids, gathered[0] if gathered else None, dst=first, group=self.group)
        dist.gather(batch.attention_mask, gathered[1] if gathered else None, dst=first, group=self.group)
        if self.index == 0:
            out = self.schedule.eval(torch.cat(gathered[0]), torch.cat(gathered[1]))
        else:
            out = self.schedule.eval()
        b, V = batch.input_ids.shape[0], self.stage_module.config.vocab_size
        mine = torch.empty(b, self.C, V, device=self.device, dtype=next(self.stage_module.parameters()).dtype)
        chunks = list(out.split(b)) if self.index == k - 1 else None
        dist.scatter(mine, [c.contiguous() for c in chunks] if chunks else None, src=last, group=self.group)
        return lambda: mine[:, :width]  # right padding does not change the logits before it (causal)


def teacher_rank_of(dp_rank: int, teacher_ranks: list[int]) -> int:
    """Disaggregated: student rank i is served by teacher rank i mod n_T."""
    return teacher_ranks[dp_rank % len(teacher_ranks)]


class Remote:
    """Student side of a disaggregated teacher: send tokens, receive logits (or top-k if `topk`)."""

    def __init__(self, teacher: int, vocab: int, completion_len: int, dtype: torch.dtype, device: torch.device,
                 topk: int | None = None):
        self.teacher, self.V, self.C, self.dtype, self.device, self.k = teacher, vocab, completion_len, dtype, device, topk

    def request(self, batch: Batch) -> Wait:
        head = torch.tensor([batch.input_ids.shape[1], batch.completion_len], dtype=torch.long, device=self.device)
        outgoing = [t.contiguous() for t in (head, batch.input_ids, batch.attention_mask)]  # alive until sent
        sends = [dist.isend(t, self.teacher) for t in outgoing]
        shape = (batch.input_ids.shape[0], batch.completion_len, self.k or self.V)
        bufs = [torch.empty(shape, dtype=self.dtype, device=self.device)]
        if self.k:
            bufs.append(torch.empty(shape, dtype=torch.int32, device=self.device))
        recvs = [dist.irecv(b, self.teacher) for b in bufs]

        def wait() -> torch.Tensor | TopK:
            for w in sends + recvs:
                w.wait()
            outgoing.clear()
            return TopK(*bufs) if self.k else bufs[0]
        return wait


@torch.no_grad()
def serve(teacher: Replicated, students: list[int], requests: int, micro_batch: int,
          dtype: torch.dtype, device: torch.device) -> None:
    """Teacher side of a disaggregated teacher: answer `requests` micro-batches from each student, in turn."""
    pending: dict[int, tuple] = {}  # student -> (send works, tensors kept alive until sent)
    head = torch.empty(2, dtype=torch.long, device=device)
    for _ in range(requests):
        for s in students:
            dist.recv(head, s)  # (length, completion width) of this micro-batch
            length, width = head.tolist()
            ids = torch.empty(micro_batch, length, dtype=torch.long, device=device)
            mask = torch.empty_like(ids)
            dist.recv(ids, s)
            dist.recv(mask, s)
            out = teacher.request(Batch(ids, mask, ids[:, :width]))()  # logits or a TopK; of the labels only their width is read
            parts = [out.values.to(dtype).contiguous(), out.indices.contiguous()] if isinstance(out, TopK) else [out.to(dtype).contiguous()]
            if s in pending:  # at most one answer in flight per student
                for w in pending[s][0]:
                    w.wait()
            pending[s] = ([dist.isend(p, s) for p in parts], parts)
    for works, _ in pending.values():
        for w in works:
            w.wait()

"""Evaluation: the GKD loss of the student against the teacher on the eval split, without gradients.

The eval split's samples are dealt out as the training batches are: micro-step m gives student
rank r the samples m*N*b + r*b ... (+b-1) for N ranks and micro-batch b. The last micro-step is
filled by wrapping around to the first samples, with their labels masked out, so every rank runs
the same number of forwards (a sharded or pipelined teacher needs every rank at each one) and each
sample counts once. The result is the mean over every labelled completion token of the split,
which is what one no-grad loss over the whole split in one batch gives.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Callable

import torch
import torch.distributed as dist

from planner.executor.data import IGNORE, Samples
from planner.executor.groups import Layout
from planner.executor.loss import generalized_jsd
from planner.executor.student import unwrapped
from planner.executor.teacher import completion_logits


def micro_steps(n: int, micro_batch: int, dp_size: int) -> int:
    """Forwards each rank runs to cover `n` eval samples."""
    return -(-n // (micro_batch * dp_size))


def rank_indices(m: int, dp_rank: int, dp_size: int, micro_batch: int) -> list[int]:
    start = (m * dp_size + dp_rank) * micro_batch
    return list(range(start, start + micro_batch))


@torch.no_grad()
def evaluate(model, teacher, samples: Samples, n: int, lay: Layout, plan, amp: Callable[[], AbstractContextManager],
             ldtype: torch.dtype) -> float:
    """Mean GKD loss over the `n` samples of `samples` (collective over every rank that holds a model)."""
    w = plan.workload
    chunk = w.loss_chunk_tokens if w.loss == "chunked" else None
    net = unwrapped(model)
    net.eval()
    total = torch.zeros(2, dtype=torch.float64, device=lay.device)  # loss x tokens, tokens
    for m in range(micro_steps(n, plan.micro_batch, lay.dp_size)):
        idx = rank_indices(m, lay.dp_rank, lay.dp_size, plan.micro_batch)
        batch = samples.batch([i % n for i in idx])
        batch.labels[torch.tensor([i >= n for i in idx])] = IGNORE  # wrapped-around fillers count for nothing
        batch = batch.to(lay.device)
        wait = teacher.request(batch)
        with amp():
            s_logits = completion_logits(net, batch.input_ids, batch.attention_mask, batch.completion_len)
            loss = generalized_jsd(s_logits, wait(), batch.labels, w.beta, w.temperature, chunk, ldtype)
        count = (batch.labels != IGNORE).sum()
        total += torch.stack([loss.double() * count, count.double()])
    net.train()
    dist.all_reduce(total, group=lay.student_group)
    return float(total[0] / total[1].clamp(min=1))

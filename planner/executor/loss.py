"""The GKD loss: generalized Jensen-Shannon divergence between student and teacher next tokens.

The formula is TRL's `GKDTrainer.generalized_jsd_loss` (Agarwal et al. 2023, arXiv 2306.13649):
with temperature T, log-probabilities s = log_softmax(z_s / T), t = log_softmax(z_t / T) and
mixture m = log((1 - beta) e^s + beta e^t),

    jsd = beta * KL(t || m) + (1 - beta) * KL(s || m)     (0 < beta < 1)
    jsd = KL(t || s) at beta = 0 (forward KL),  KL(s || t) at beta = 1 (reverse KL),

summed over the vocabulary, averaged over the completion tokens whose label is not -100
("batchmean" with labels). Here it is computed in chunks of the sequence: each chunk's
loss and its gradient with respect to the student logits are computed at once, so the only
[B, S, V] tensors alive are the two inputs and one gradient buffer, never the ten or so fp32
intermediates autograd would save for the whole sequence.

Top-k teacher output (`teacher_output: topk | cached`): the teacher gives, per token, its k largest
logits and their vocabulary indices (`TopK`). The tail is handled by renormalisation: the teacher's
probabilities at its top-k indices renormalised to sum 1, the student's log-probabilities (log-softmax
over the full vocabulary at temperature T) gathered at the same indices and renormalised over that
support, and the same generalized JSD over the k-support. Renormalising a log-softmax over a subset
equals the log-softmax of the logits gathered at that subset, so the chunk gathers the student's
logits first and never needs the full-vocabulary softmax. Anchor: TRL 1.16
`trl/experimental/async_distillation/async_distillation_trainer.py`, `_jsd_loss_chunk` with
`add_tail_bucket=False` (TRL's default there is a (k+1)-th tail bucket; see docs/executor.md).
With k = V this is exactly the full-logits loss.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

from planner.executor.data import IGNORE


class TopK(NamedTuple):
    """The teacher's k largest logits per token and their vocabulary indices, [..., k] each."""

    values: torch.Tensor  # in the logits dtype
    indices: torch.Tensor  # int32 on the wire and on disk; int64 for gather


def top_k(logits: torch.Tensor, k: int) -> TopK:
    """The top-k of [..., V] logits (indices as int32, what is sent and cached)."""
    values, indices = logits.topk(k, dim=-1)
    return TopK(values, indices.to(torch.int32))


def token_jsd(student_logits: torch.Tensor, teacher_logits: torch.Tensor, beta: float, temperature: float) -> torch.Tensor:
    """Generalized JSD per token, summed over the vocabulary: [..., V] -> [...]."""
    s = F.log_softmax(student_logits / temperature, dim=-1)
    t = F.log_softmax(teacher_logits / temperature, dim=-1)
    if beta == 0:
        jsd = F.kl_div(s, t, reduction="none", log_target=True)
    elif beta == 1:
        jsd = F.kl_div(t, s, reduction="none", log_target=True)
    else:
        m = torch.logaddexp(s + math.log(1 - beta), t + math.log(beta))
        jsd = beta * F.kl_div(m, t, reduction="none", log_target=True) + (1 - beta) * F.kl_div(m, s, reduction="none", log_target=True)
    return jsd.sum(-1)


class _ChunkedJSD(torch.autograd.Function):
    @staticmethod
    def forward(ctx, student_logits, teacher_logits, indices, labels, beta, temperature, chunk, dtype):
        mask = labels != IGNORE
        count = mask.sum().clamp(min=1)
        want_grad = ctx.needs_input_grad[0]
        grad = torch.empty_like(student_logits) if want_grad else None
        total = torch.zeros((), dtype=torch.float64, device=student_logits.device)
        for lo in range(0, student_logits.shape[1], chunk):
            sl = slice(lo, lo + chunk)
            z = student_logits[:, sl].detach()
            if indices is not None:  # top-k: the student's logits on the teacher's support only
                ix = indices[:, sl].long()
                z = z.gather(-1, ix)
            z = z.to(dtype).requires_grad_(want_grad)
            with torch.enable_grad():
                part = (token_jsd(z, teacher_logits[:, sl].to(dtype), beta, temperature) * mask[:, sl]).sum()
            if want_grad:
                g = torch.autograd.grad(part, z)[0]
                if indices is None:
                    grad[:, sl] = g
                else:  # zero off the support
                    grad[:, sl] = 0
                    grad[:, sl].scatter_(-1, ix, g.to(grad.dtype))
            total += part.detach()
        ctx.save_for_backward(grad, count)
        return (total / count).to(dtype)

    @staticmethod
    def backward(ctx, grad_out):
        grad, count = ctx.saved_tensors
        return grad * (grad_out / count).to(grad.dtype), None, None, None, None, None, None, None


def generalized_jsd(student_logits: torch.Tensor, teacher: torch.Tensor | TopK, labels: torch.Tensor,
                    beta: float = 0.5, temperature: float = 1.0, chunk_tokens: int | None = None,
                    dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Mean generalized JSD over the labelled tokens of [B, S, V] logits, `chunk_tokens` at a time.

    `teacher` is either [B, S, V] logits or a `TopK` ([B, S, k] values and indices): the renormalised
    top-k loss described above.

    `chunk_tokens=None` takes the whole sequence as one chunk (TRL's footprint, still without
    saved intermediates); logits are upcast to `dtype` (TRL: fp32) one chunk at a time.
    """
    b, s = labels.shape
    chunk = s if chunk_tokens is None else max(1, chunk_tokens // b)
    values, indices = teacher if isinstance(teacher, TopK) else (teacher, None)
    return _ChunkedJSD.apply(student_logits, values, indices, labels, float(beta), float(temperature), chunk, dtype)

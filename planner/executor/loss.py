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
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from planner.executor.data import IGNORE


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
    def forward(ctx, student_logits, teacher_logits, labels, beta, temperature, chunk, dtype):
        mask = labels != IGNORE
        count = mask.sum().clamp(min=1)
        want_grad = ctx.needs_input_grad[0]
        grad = torch.empty_like(student_logits) if want_grad else None
        total = torch.zeros((), dtype=torch.float64, device=student_logits.device)
        for lo in range(0, student_logits.shape[1], chunk):
            sl = slice(lo, lo + chunk)
            z = student_logits[:, sl].detach().to(dtype).requires_grad_(want_grad)
            with torch.enable_grad():
                part = (token_jsd(z, teacher_logits[:, sl].to(dtype), beta, temperature) * mask[:, sl]).sum()
            if want_grad:
                grad[:, sl] = torch.autograd.grad(part, z)[0]
            total += part.detach()
        ctx.save_for_backward(grad, count)
        return (total / count).to(dtype)

    @staticmethod
    def backward(ctx, grad_out):
        grad, count = ctx.saved_tensors
        return grad * (grad_out / count).to(grad.dtype), None, None, None, None, None, None


def generalized_jsd(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
                    beta: float = 0.5, temperature: float = 1.0, chunk_tokens: int | None = None,
                    dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Mean generalized JSD over the labelled tokens of [B, S, V] logits, `chunk_tokens` at a time.

    `chunk_tokens=None` takes the whole sequence as one chunk (TRL's footprint, still without
    saved intermediates); logits are upcast to `dtype` (TRL: fp32) one chunk at a time.
    """
    b, s = labels.shape
    chunk = s if chunk_tokens is None else max(1, chunk_tokens // b)
    return _ChunkedJSD.apply(student_logits, teacher_logits, labels, float(beta), float(temperature), chunk, dtype)

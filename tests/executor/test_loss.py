"""The chunked generalized JSD equals TRL's direct formula (copied below) within 1e-6."""

import pytest
import torch
import torch.nn.functional as F

from planner.executor.loss import generalized_jsd


def trl_generalized_jsd_loss(student_logits, teacher_logits, labels=None, beta=0.5, temperature=1.0):
    """TRL `GKDTrainer.generalized_jsd_loss` (trl 0.x-1.x), reduction="batchmean", verbatim in substance."""
    student_logits = student_logits / temperature
    teacher_logits = teacher_logits / temperature
    student_log_probs = F.log_softmax(student_logits, dim=-1)
    teacher_log_probs = F.log_softmax(teacher_logits, dim=-1)
    if beta == 0:
        jsd = F.kl_div(student_log_probs, teacher_log_probs, reduction="none", log_target=True)
    elif beta == 1:
        jsd = F.kl_div(teacher_log_probs, student_log_probs, reduction="none", log_target=True)
    else:
        beta = torch.tensor(beta, dtype=student_log_probs.dtype)
        mixture_log_probs = torch.logsumexp(
            torch.stack([student_log_probs + torch.log(1 - beta), teacher_log_probs + torch.log(beta)]), dim=0)
        kl_teacher = F.kl_div(mixture_log_probs, teacher_log_probs, reduction="none", log_target=True)
        kl_student = F.kl_div(mixture_log_probs, student_log_probs, reduction="none", log_target=True)
        jsd = beta * kl_teacher + (1 - beta) * kl_student
    mask = labels != -100
    jsd = jsd[mask]
    return jsd.sum() / mask.sum()


@pytest.mark.parametrize("beta", [0.0, 0.1, 0.5, 0.9, 1.0])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
@pytest.mark.parametrize("chunk_tokens", [None, 1, 6, 64])
def test_chunked_equals_direct(beta, temperature, chunk_tokens):
    g = torch.Generator().manual_seed(int(beta * 10) + int(temperature * 10))
    s = (3 * torch.randn(3, 11, 37, generator=g, dtype=torch.float64)).requires_grad_()
    t = 3 * torch.randn(3, 11, 37, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 37, (3, 11), generator=g)
    labels[0, :4] = -100
    labels[2, -3:] = -100
    direct = trl_generalized_jsd_loss(s, t, labels, beta, temperature)
    (g_direct,) = torch.autograd.grad(direct, s)
    chunked = generalized_jsd(s, t, labels, beta, temperature, chunk_tokens, dtype=torch.float64)
    (g_chunked,) = torch.autograd.grad(chunked, s)
    assert abs(chunked.item() - direct.item()) < 1e-6
    assert torch.allclose(g_chunked, g_direct, atol=1e-6, rtol=0)


def test_fp32_and_no_grad():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(2, 8, 50, generator=g), torch.randn(2, 8, 50, generator=g)
    labels = torch.randint(0, 50, (2, 8), generator=g)
    assert abs(generalized_jsd(s, t, labels, 0.5, 1.0, 4).item() - trl_generalized_jsd_loss(s, t, labels).item()) < 1e-6
    assert generalized_jsd(s, s, labels, 0.5, 1.0, 4).abs().item() < 1e-6  # identical distributions

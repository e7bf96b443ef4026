"""The renormalised top-k GKD loss equals a dense reference written out here (the k-support
distributions built explicitly, the JSD by its definition), gradients included; with k = V it is the
full-logits loss."""

import pytest
import torch

from planner.executor.loss import TopK, generalized_jsd, top_k


def dense_topk_jsd(s_logits, t_logits, k, labels, beta, temperature):
    """The rule agreed with the planner side, step by step: teacher probabilities at its top-k
    renormalised to 1; the student's full-vocabulary log-softmax gathered there and renormalised;
    beta * KL(t || m) + (1 - beta) * KL(s || m) with m = beta t + (1 - beta) s (KL(t || s) at beta 0,
    KL(s || t) at beta 1); mean over labelled tokens."""
    idx = t_logits.topk(k, dim=-1).indices
    p_t = torch.softmax(t_logits / temperature, dim=-1).gather(-1, idx)
    p_t = p_t / p_t.sum(-1, keepdim=True)
    p_s = torch.exp(torch.log_softmax(s_logits / temperature, dim=-1).gather(-1, idx))
    p_s = p_s / p_s.sum(-1, keepdim=True)

    def kl(p, q):
        return (p * (p.log() - q.log())).sum(-1)

    if beta == 0:
        per_token = kl(p_t, p_s)
    elif beta == 1:
        per_token = kl(p_s, p_t)
    else:
        m = beta * p_t + (1 - beta) * p_s
        per_token = beta * kl(p_t, m) + (1 - beta) * kl(p_s, m)
    mask = labels != -100
    return per_token[mask].sum() / mask.sum()


def _inputs(seed: int, v: int = 41):
    g = torch.Generator().manual_seed(seed)
    s = (3 * torch.randn(3, 9, v, generator=g, dtype=torch.float64)).requires_grad_()
    t = 3 * torch.randn(3, 9, v, generator=g, dtype=torch.float64)
    labels = torch.randint(0, v, (3, 9), generator=g)
    labels[0, :3] = -100
    labels[2, -2:] = -100
    return s, t, labels


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
@pytest.mark.parametrize("chunk_tokens", [None, 1, 7])
@pytest.mark.parametrize("k", [1, 5, 40])
def test_topk_equals_dense_reference(beta, temperature, chunk_tokens, k):
    s, t, labels = _inputs(int(10 * beta) + k)
    want = dense_topk_jsd(s, t, k, labels, beta, temperature)
    (g_want,) = torch.autograd.grad(want, s)
    got = generalized_jsd(s, top_k(t, k), labels, beta, temperature, chunk_tokens, dtype=torch.float64)
    (g_got,) = torch.autograd.grad(got, s)
    assert abs(got.item() - want.item()) < 1e-9 * max(1.0, abs(want.item()))
    assert torch.allclose(g_got, g_want, atol=1e-9, rtol=0)
    if k == 1:  # one token of support: both distributions are 1 there, nothing to learn
        assert abs(got.item()) < 1e-12
    else:
        assert got.item() > 1e-3
    off_support = torch.ones_like(s, dtype=torch.bool).scatter_(-1, t.topk(k, dim=-1).indices, False)
    assert g_got[off_support].abs().max() == 0  # no gradient off the teacher's support


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("chunk_tokens", [None, 4])
def test_k_equal_to_vocab_is_the_full_loss(beta, chunk_tokens):
    s, t, labels = _inputs(3)
    full = generalized_jsd(s, t, labels, beta, 0.9, chunk_tokens, dtype=torch.float64)
    (g_full,) = torch.autograd.grad(full, s)
    topk = generalized_jsd(s, top_k(t, t.shape[-1]), labels, beta, 0.9, chunk_tokens, dtype=torch.float64)
    (g_topk,) = torch.autograd.grad(topk, s)
    assert abs(topk.item() - full.item()) < 1e-10
    assert torch.allclose(g_topk, g_full, atol=1e-10, rtol=0)


def test_wire_format_and_low_precision_values():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(2, 6, 50, generator=g), torch.randn(2, 6, 50, generator=g)
    labels = torch.randint(0, 50, (2, 6), generator=g)
    tk = top_k(t, 8)
    assert tk.indices.dtype == torch.int32 and tk.values.shape == (2, 6, 8)
    assert torch.equal(tk.values, t.gather(-1, tk.indices.long()))
    fp32 = generalized_jsd(s, tk, labels, 0.5, 1.0, 4)
    bf16 = generalized_jsd(s.bfloat16(), TopK(tk.values.bfloat16(), tk.indices), labels, 0.5, 1.0, 4)
    assert abs(bf16.item() - fp32.item()) < 2e-2 * fp32.item()  # upcast per chunk: only the inputs' rounding differs

"""Activation memory: bytes autograd keeps for the backward pass (sympy only, no torch).

The Llama terms count, tensor by tensor, what the autograd ops of Hugging Face
`transformers` `LlamaDecoderLayer` (transformers 5.x, `models/llama/modeling_llama.py`) save:
RMSNorm, q/k/v/o projections, rotary embedding, eager or SDPA attention with GQA, SwiGLU MLP.
tests/cost/test_activations.py checks them against the storages that a real training
forward hands to `torch.autograd.graph.saved_tensors_hooks`.

Symbols: b micro-batch sequences, s sequence length, h hidden, a query heads, g key/value
heads, d head dim, f MLP inner width, V vocabulary, L layers, q bytes per activation element
(2 for bf16/fp16, 4 for fp32; only q <= 4 is modelled). `flash` is a 0/1 multiplier.
"""

from __future__ import annotations

import sympy as sp

CKPT_MODES = ("none", "selective", "op", "full")


def _cast_copy(q) -> sp.Expr:
    """1 when activations are narrower than fp32 (an fp32 result is cast down to a second, saved copy), else 0."""
    return sp.Piecewise((1, sp.Lt(q, 4)), (0, True))


def rmsnorm_saved_bytes(b, s, h, q) -> sp.Expr:
    """One `LlamaRMSNorm` plus the input it feeds to the following Linear layers.

    `x.to(float32)`: in 16-bit a new fp32 copy; `pow(2)` and `x * rsqrt(var)` save it (4*b*s*h,
    always fp32; under fp32 it is the input tensor itself); `rsqrt` saves its fp32 result (4*b*s);
    `weight * n` saves the normalized `n`, cast back to the input dtype (q*b*s*h); the Linear
    layers after the norm save its output `weight * n` (q*b*s*h).
    """
    return b * s * h * (4 + 2 * q) + 4 * b * s


def attention_saved_bytes(b, s, a, g, d, q, flash, core: int = 1) -> sp.Expr:
    """Self-attention of one layer, from rotary to `o_proj` (q/k/v_proj inputs are in the norm term).

    Rotary `q*cos + rotate_half(q)*sin` saves only cos/sin (no grad needed for them), shared by all
    layers: counted once in `model_saved_bytes`.  `o_proj` saves the attention output (q*b*s*a*d).
    flash = 1 (SDPA flash / memory-efficient kernel, `scaled_dot_product_attention` with
      `enable_gqa`): saves query (q*b*s*a*d), key and value un-repeated (2*q*b*s*g*d), its output
      (the same storage `o_proj` saves) and the fp32 logsumexp (4*b*a*s).
    flash = 0 (eager `eager_attention_forward`): `repeat_kv` copies k and v to all a heads, and the
      two matmuls save query, repeated key and repeated value (3*q*b*s*a*d, so GQA saves nothing);
      `softmax(dtype=float32)` saves its fp32 probabilities (4*b*a*s*s) and, in 16-bit, the matmul
      with V saves the probabilities cast back (q*b*a*s*s).  Dropout with p = 0 saves nothing
      (a nonzero p would add a mask of b*a*s*s bool bytes, not modelled).
    core = 0 drops what recomputing the attention core regenerates (probabilities, logsumexp).
    """
    kv = 2 * q * b * s * d * (flash * g + (1 - flash) * a)
    lse = flash * 4 * b * a * s
    probs = (1 - flash) * b * a * s**2 * (4 + q * _cast_copy(q))
    return 2 * q * b * s * a * d + kv + core * (lse + probs)


def mlp_saved_bytes(b, s, f, q) -> sp.Expr:
    """SwiGLU `down(silu(gate(x)) * up(x))`; x is in the norm term.

    `silu` saves gate(x); `*` saves silu(gate(x)) and up(x); `down_proj` saves the product: 4*q*b*s*f.
    """
    return 4 * q * b * s * f


def op_policy_layer_bytes(b, s, h, a, g, d, f, q, flash) -> sp.Expr:
    """What torchtitan's selective "op" policy keeps of one Llama block until its backward.

    torchtitan (`apply_ac`, `_save_list`; models/llama3/infra/parallelize.py, or
    parallelisms/parallelize_llama.py at 9dec370) wraps each block in a non-reentrant checkpoint
    whose policy stores the outputs of `aten.mm` except every second one, of the SDPA flash /
    memory-efficient kernels, of `max` (a scalar) and of TP's reduce-scatter (none without TP);
    everything else is recomputed in backward. The block's matmuls, in forward order: wq, wk, wv,
    wo, w1, w3, w2 (`Attention.forward`, `FeedForward.forward`: `w2(silu(w1(x)) * w3(x))`), so the
    1st, 3rd, 5th and 7th are kept: wq (b*s*a*d), wv (b*s*g*d), w1 (b*s*f), w2 (b*s*h), in the
    activation dtype. The checkpoint also holds the block input (q*b*s*h); the flash kernel's
    output (q*b*s*a*d) and fp32 logsumexp (4*b*a*s) are kept when flash = 1 (eager attention runs
    none of the listed kernels, so it is recomputed). Assumes the gated (SwiGLU) MLP, like the rest.
    """
    matmuls = a * d + g * d + f + h
    return q * b * s * (h + matmuls) + flash * (q * b * s * a * d + 4 * b * a * s)


def op_policy_recompute_flops(b, s, h, a, g, d, f) -> sp.Expr:
    """FLOPs one block recomputes in backward under the "op" policy: the matmuls it did not keep,
    the 2nd, 4th and 6th (wk, wo, w3), 2 FLOPs per multiply-add; the flash attention is kept, and
    the norms, rotary and SwiGLU products it recomputes are memory-bound (not counted)."""
    return 2 * b * s * h * (g * d + a * d + f)


def layer_saved_bytes(b, s, h, a, g, d, f, q, flash, ckpt: str = "none") -> sp.Expr:
    """Bytes saved for backward by one `LlamaDecoderLayer` during a training forward.

    ckpt = 'none': 2 RMSNorms + attention + SwiGLU MLP (the residual adds save nothing);
      = 'selective' (Korthikanti et al. 2022, sec. 5): the attention core is recomputed, so the
        s x s probabilities (eager) and the logsumexp (flash) are dropped; q, k, v and the output kept;
      = 'op': torchtitan's selective op policy (`op_policy_layer_bytes`);
      = 'full' (`gradient_checkpointing_enable`, non-reentrant): only the layer input, q*b*s*h.
    """
    if ckpt == "full":
        return q * b * s * h
    if ckpt == "op":
        return op_policy_layer_bytes(b, s, h, a, g, d, f, q, flash)
    if ckpt not in CKPT_MODES:
        raise ValueError(f"ckpt must be one of {CKPT_MODES}, got {ckpt!r}")
    core = 0 if ckpt == "selective" else 1
    return (2 * rmsnorm_saved_bytes(b, s, h, q) + attention_saved_bytes(b, s, a, g, d, q, flash, core)
            + mlp_saved_bytes(b, s, f, q))


def model_saved_bytes(L, b, s, h, a, g, d, f, V, q, flash, ckpt: str = "none") -> sp.Expr:
    """Bytes saved for backward by a whole `LlamaForCausalLM` forward, logits excluded.

    Included: L * `layer_saved_bytes`; the token ids saved by the embedding backward (int64,
    8*b*s); the rotary cos and sin ([1, s, d] each, shared by all layers, 2*q*s*d; under full
    checkpointing they are held by the recompute closure instead); the final RMSNorm with its
    input (the last layer's output) and its output, the LM-head input (`rmsnorm_saved_bytes`).
    Not included: the logits [b, s, V] and whatever the loss saves (a separate term; V is accepted
    for that symmetry only), parameters, and under full checkpointing with eager attention the
    additive causal mask (b or 1) * s * s * q held by the recompute closure.
    """
    del V
    return (L * layer_saved_bytes(b, s, h, a, g, d, f, q, flash, ckpt)
            + 8 * b * s + 2 * q * s * d + rmsnorm_saved_bytes(b, s, h, q))


def gpt_block_bytes_korthikanti(s, b, h, a) -> sp.Expr:
    """Korthikanti et al. 2022, "Reducing Activation Recomputation in Large Transformer Models"
    (arXiv:2205.05198), eq. 1: bytes of one GPT block (LayerNorm, MHA, 4h GeLU MLP, dropout) with
    16-bit activations and no recomputation, s*b*h*(34 + 5*a*s/h); 5*a*s^2*b is the s x s part
    (softmax output 2, dropout mask 1, dropout output 2 bytes per element)."""
    return s * b * h * (34 + 5 * a * s / h)

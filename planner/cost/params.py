"""Parameter counts and forward FLOPs of a dense decoder-only transformer.

Counts follow the module list of Hugging Face `LlamaForCausalLM` and its relatives exactly
(tests/cost/test_params.py compares with `transformers` for every bundled model).
"""

from __future__ import annotations

import sympy as sp

from planner.cost.symbols import ModelSymbols


def attention_params(m: ModelSymbols) -> sp.Expr:
    """q: h*a*d, k and v: h*g*d each, o: a*d*h; biases a*d + 2*g*d on q, k, v and h on o."""
    return m.h * m.a * m.d + 2 * m.h * m.g * m.d + m.a * m.d * m.h + m.qkv_bias * (m.a * m.d + 2 * m.g * m.d) + m.o_bias * m.h


def mlp_params(m: ModelSymbols) -> sp.Expr:
    """Gated (SwiGLU/GeGLU) MLP: gate, up, down = 3*h*f; plain: 2*h*f; biases f per input projection + h."""
    return (2 + m.gated) * m.h * m.f + m.mlp_bias * ((1 + m.gated) * m.f + m.h)


def norm_params(m: ModelSymbols) -> sp.Expr:
    """`norms` vectors of width h per layer (RMSNorm weight; LayerNorm adds a bias) plus the final norm."""
    return (1 + m.norm_bias) * m.h * (m.norms * m.L + 1)


def embedding_params(m: ModelSymbols) -> sp.Expr:
    """Input embedding V*h."""
    return m.V * m.h


def lm_head_params(m: ModelSymbols) -> sp.Expr:
    """Output projection V*h unless tied to the input embedding."""
    return m.untied * m.V * m.h


def params_breakdown(m: ModelSymbols) -> dict[str, sp.Expr]:
    """Parameters by component; their sum is the model's total."""
    return {
        "embeddings": embedding_params(m),
        "attention": m.L * attention_params(m),
        "mlp": m.L * mlp_params(m),
        "norms": norm_params(m),
        "lm_head": lm_head_params(m),
    }


def root_params(m: ModelSymbols) -> sp.Expr:
    """What is not in a decoder layer (FSDP's root unit): embeddings, final norm, untied head."""
    return embedding_params(m) + lm_head_params(m) + (1 + m.norm_bias) * m.h


def total_params(m: ModelSymbols) -> sp.Expr:
    return sp.Add(*params_breakdown(m).values())


def matmul_params(m: ModelSymbols) -> sp.Expr:
    """Weights used in matrix multiplies per token: layers plus the LM head (tied or not); not the lookup."""
    return m.L * (attention_params(m) + mlp_params(m)) + m.V * m.h


def forward_flops_per_token(m: ModelSymbols, s: sp.Expr, causal: sp.Expr = sp.Rational(1, 2)) -> sp.Expr:
    """Forward FLOPs per token at context length s.

    2 FLOPs per multiply-add on every matmul weight (Kaplan et al. 2020, eq. 2.2) plus the attention
    scores and the weighted sum, 2*2*s*a*d per layer (Narayanan et al. 2021); `causal` = 1/2 for
    kernels that skip the masked half.
    """
    return 2 * matmul_params(m) + 4 * causal * m.L * s * m.a * m.d


def param_tensors(m: ModelSymbols) -> sp.Expr:
    """Parameter tensors (what a per-tensor collective such as ZeroRedundancyOptimizer's broadcast
    issues one call for): per layer q, k, v, o, the MLP matrices, norms and biases; embedding,
    final norm and an untied head."""
    per_layer = 4 + (2 + m.gated) + m.norms * (1 + m.norm_bias) + 3 * m.qkv_bias + m.o_bias + m.mlp_bias * (2 + m.gated)
    return m.L * per_layer + 1 + (1 + m.norm_bias) + m.untied


def evaluate(expr: sp.Expr, m: ModelSymbols, shape) -> int:
    """Exact integer value of a shape-only expression for a `ModelShape`."""
    return int(expr.subs(m.values(shape)))

"""Parameter counts and forward FLOPs of a decoder-only transformer, dense or mixture-of-experts.

Counts follow the module list of Hugging Face `LlamaForCausalLM` and its relatives exactly
(tests/inputs/test_hf_parity.py compares with `transformers` for every bundled model). A
mixture-of-experts layer (`MixtralSparseMoeBlock`, `Qwen3MoeSparseMoeBlock`, `Qwen2MoeSparseMoeBlock`)
holds E gated experts of width f_e, a router h -> E without bias and, in Qwen2-MoE, a shared expert
with a sigmoid gate h -> 1. Memory counts every expert (`total_params`); FLOPs count the E_act
experts a token is routed to (`matmul_params`, Fedus et al. 2022, sec. 2).
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


def expert_params(m: ModelSymbols) -> sp.Expr:
    """One routed expert: a gated MLP of width f_e, no biases (3*h*f_e)."""
    return (2 + m.gated) * m.h * m.f_e


def shared_expert_params(m: ModelSymbols) -> sp.Expr:
    """The always-active shared expert of an MoE layer (width f_sh; 0 when absent)."""
    return (2 + m.gated) * m.h * m.f_sh


def router_params(m: ModelSymbols) -> sp.Expr:
    """Router h -> E of an MoE layer, plus the shared expert's gate h -> 1 where there is one."""
    return m.E * m.h + m.sh_gate * m.h


def norm_params(m: ModelSymbols) -> sp.Expr:
    """`norms` vectors of width h per layer (RMSNorm weight; LayerNorm adds a bias) plus the final
    norm; q/k norms (Qwen3, Gemma 3) add two vectors of width d per layer."""
    return (1 + m.norm_bias) * m.h * (m.norms * m.L + 1) + m.qk_norm * 2 * m.d * m.L


def embedding_params(m: ModelSymbols) -> sp.Expr:
    """Input embedding V*h."""
    return m.V * m.h


def lm_head_params(m: ModelSymbols) -> sp.Expr:
    """Output projection V*h unless tied to the input embedding."""
    return m.untied * m.V * m.h


def params_breakdown(m: ModelSymbols) -> dict[str, sp.Expr]:
    """Parameters by component; their sum is the model's total. `mlp` is what every token runs
    (dense layers' MLPs and shared experts), `experts` the routed experts, 0 for a dense model."""
    return {
        "embeddings": embedding_params(m),
        "attention": m.L * attention_params(m),
        "mlp": (m.L - m.L_moe) * mlp_params(m) + m.L_moe * shared_expert_params(m),
        "experts": m.L_moe * m.E * expert_params(m),
        "router": m.L_moe * router_params(m),
        "norms": norm_params(m),
        "lm_head": lm_head_params(m),
    }


def root_params(m: ModelSymbols) -> sp.Expr:
    """What is not in a decoder layer (FSDP's root unit): embeddings, final norm, untied head."""
    return embedding_params(m) + lm_head_params(m) + (1 + m.norm_bias) * m.h


def total_params(m: ModelSymbols) -> sp.Expr:
    """Every parameter, every expert included: what weights, gradients and optimizer state hold."""
    return sp.Add(*params_breakdown(m).values())


def active_params(m: ModelSymbols) -> sp.Expr:
    """Parameters one token uses: the total less the experts it is not routed to (embeddings and
    head included, as Mistral and Qwen count "active" parameters)."""
    return total_params(m) - m.L_moe * (m.E - m.E_act) * expert_params(m)


def matmul_params(m: ModelSymbols) -> sp.Expr:
    """Weights used in matrix multiplies per token: layers (attention, dense MLP or the routed and
    shared experts plus the router) and the LM head (tied or not); not the lookup."""
    moe = m.E_act * expert_params(m) + shared_expert_params(m) + router_params(m)
    return m.L * attention_params(m) + (m.L - m.L_moe) * mlp_params(m) + m.L_moe * moe + m.V * m.h


def attended_keys(m: ModelSymbols, s: sp.Expr, causal: sp.Expr) -> sp.Expr:
    """Keys each query is scored against, averaged over the s positions and summed over layers.

    `causal` = 1 computes the whole s x s score matrix (eager or masked kernels: a window saves
    nothing); `causal` = 1/2 skips masked blocks (flash kernels), so a full layer averages s/2 keys
    and a sliding layer of window W averages sum_i min(i, W) / s = w - w^2/(2s) with w = min(s, W).
    """
    skip = 2 - 2 * causal  # 1 where masked blocks are skipped
    w = sp.Min(s, m.W)
    windowed = (1 - skip) * s + skip * (w - w**2 / (2 * s))
    return (m.L - m.L_win) * causal * s + m.L_win * windowed


def attention_flops_per_token(m: ModelSymbols, s: sp.Expr, causal: sp.Expr = sp.Rational(1, 2)) -> sp.Expr:
    """Scores q.k and the weighted sum of v: 2*2*a*d FLOPs per attended key (Narayanan et al. 2021)."""
    return 4 * m.a * m.d * attended_keys(m, s, causal)


def forward_flops_per_token(m: ModelSymbols, s: sp.Expr, causal: sp.Expr = sp.Rational(1, 2)) -> sp.Expr:
    """Forward FLOPs per token at context length s.

    2 FLOPs per multiply-add on every matmul weight a token uses (Kaplan et al. 2020, eq. 2.2) plus
    the attention scores and the weighted sum, 2*2*s*a*d per full layer (Narayanan et al. 2021);
    `causal` = 1/2 for kernels that skip the masked half (and what lies outside a sliding window).
    """
    return 2 * matmul_params(m) + attention_flops_per_token(m, s, causal)


def kv_cache_elements(m: ModelSymbols, b: sp.Expr, s: sp.Expr) -> sp.Expr:
    """Keys and values cached for b sequences of s tokens: 2*g*d per token and layer; a sliding
    layer keeps its last W - 1 tokens (transformers' `DynamicSlidingWindowLayer`: the next token
    makes W)."""
    return 2 * m.g * m.d * b * ((m.L - m.L_win) * s + m.L_win * sp.Min(s, m.W - 1))


def param_tensors(m: ModelSymbols) -> sp.Expr:
    """Parameter tensors (what a per-tensor collective such as ZeroRedundancyOptimizer's broadcast
    issues one call for): per layer q, k, v, o, norms, q/k norms and biases, then the dense MLP's
    matrices, or an MoE layer's fused experts (gate_up and down: 2), router and shared expert;
    embedding, final norm and an untied head. Phi-3 fuses q, k, v into one tensor and gate, up into one."""
    per_layer = 4 - 2 * m.fused + m.norms * (1 + m.norm_bias) + 2 * m.qk_norm + 3 * m.qkv_bias + m.o_bias
    dense = (2 + m.gated - m.fused * m.gated) * (1 + m.mlp_bias)
    moe = 3 + sp.Min(1, m.f_sh) * (2 + m.gated) + m.sh_gate
    return m.L * per_layer + (m.L - m.L_moe) * dense + m.L_moe * moe + 1 + (1 + m.norm_bias) + m.untied


def evaluate(expr: sp.Expr, m: ModelSymbols, shape) -> int:
    """Exact integer value of a shape-only expression for a `ModelShape`."""
    return int(expr.subs(m.values(shape)))

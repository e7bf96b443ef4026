"""Mixture-of-experts terms: expert parallelism of the teacher, the routed MLP width, and the
experts a decode step reads.

**Expert parallelism** (Megatron-Core `expert_model_parallel_size`; GShard, Lepikhin et al. 2020;
DeepSpeed-MoE, Rajbhandari et al. 2022): a group of `ep` consecutive ranks (of each pipeline stage)
splits every MoE layer's E routed experts, E/ep whole experts per rank. The rest of the teacher
(attention, router, dense MLPs, embeddings, head) is held as its split says: a full copy per rank
(`replicate+ep`), FSDP shards over the shard group (`shard:K+ep`, the EP groups inside it), or a
pipeline stage's layers (`pipeline:K+ep`). Each rank runs attention on its own samples; before each
MoE layer a dispatch all-to-all sends every token's hidden state to the ranks that hold its top-k
experts, and a combine all-to-all brings the k results back.

**Balanced routing is assumed**: every expert gets the same share of tokens, so each rank computes
as many expert-token products as its own tokens route (the FLOPs of `params.matmul_params`, as
without EP) and (ep-1)/ep of its token copies leave it. Real routers are not balanced: the busiest
rank paces each layer (Megatron reports its `moe_expert_capacity_factor` and aux-loss for this), so
the time here is a lower bound of what an unbalanced batch takes.
"""

from __future__ import annotations

import sympy as sp

from planner.cost import comm
from planner.cost import symbols as y
from planner.cost.params import expert_params
from planner.cost.symbols import ModelSymbols


def routed_params(m: ModelSymbols) -> sp.Expr:
    """Every routed expert of every MoE layer (0 for a dense model)."""
    return m.L_moe * m.E * expert_params(m)


def teacher_weight_elements(total: sp.Expr, unit: sp.Expr) -> sp.Expr:
    """Teacher parameters per rank when `total` (all of them) is split by `unit` (pp*tp*t_sh) and,
    under expert parallelism, the routed experts by pp*ep instead (whole experts, never FSDP-sharded
    or gathered). ep = 1 gives total / unit."""
    experts = routed_params(y.T)
    return (total - y.ep_on * experts) / unit + y.ep_on * experts / (y.pp * y.ep)


def gathered_elements(total: sp.Expr) -> sp.Expr:
    """Teacher parameters an FSDP all-gather moves: all of them, or, under expert parallelism, all
    but the routed experts (which stay where they are)."""
    return total - y.ep_on * routed_params(y.T)


def dispatch_bytes(tokens: sp.Expr) -> sp.Expr:
    """One dispatch (or combine) send buffer of one MoE layer: every token's hidden state once per
    routed expert, tokens x h x top_k x bytes; (ep-1)/ep of it leaves the rank (`comm.all_to_all`)."""
    return tokens * y.T.h * y.T.E_act * y.q_T


def all_to_all(tokens: sp.Expr, passes: sp.Expr) -> sp.Expr:
    """The teacher's expert-parallel exchange in one micro-step of a rank: a dispatch and a combine
    all-to-all per MoE layer, for the `tokens` the rank scores (its own samples' every position),
    in `passes` forward passes over its pp-th of the layers (one collective per layer and pass).
    Vanishes at ep = 1."""
    calls = 2 * y.T.L_moe / y.pp * passes
    return comm.all_to_all(y.ep, 2 * y.T.L_moe * dispatch_bytes(tokens), y.A2A, calls=calls)


def dispatch_buffers(tokens: sp.Expr) -> sp.Expr:
    """Bytes alive at one MoE layer under expert parallelism: the permuted tokens sent and those
    received, one dispatch buffer each."""
    return y.ep_on * 2 * dispatch_bytes(tokens)


def mlp_width(m: ModelSymbols) -> sp.Expr:
    """Inner MLP width a token's activations span, averaged over the layers: f in a dense layer,
    top_k x f_e (plus a shared expert) in an MoE layer, where each token runs through its k routed
    experts (Fedus et al. 2022, sec. 2). Equals f for a dense model."""
    return ((m.L - m.L_moe) * m.f + m.L_moe * (m.E_act * m.f_e + m.f_sh)) / m.L


def decode_read_params(m: ModelSymbols, total: sp.Expr, b: sp.Expr) -> sp.Expr:
    """Weights one decode step of b sequences reads: every weight but the experts no token routes
    to. b tokens activate at most min(E, b x top_k) experts per MoE layer (fewer when tokens share
    experts: with uniform routing about E(1 - (1 - k/E)^b)); this upper bound is what is charged."""
    return total - m.L_moe * (m.E - sp.Min(m.E, b * m.E_act)) * expert_params(m)

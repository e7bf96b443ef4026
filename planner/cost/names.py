"""Names shared by the cost model and its numeric users, importable without sympy.

The compiled model (planner.cost.compile) is addressed by these strings, so the search, the CLI
and the plan file never need to import sympy on the hot path.
"""

from __future__ import annotations

STUDENT_TERMS = ("student_weights", "student_gathered", "student_grads", "student_optimizer",
                 "student_activations", "logits", "loss_buffers", "student_generation", "rollout_engine")
TEACHER_TERMS = ("teacher_weights", "teacher_gathered", "teacher_activations", "teacher_logits")
MEMORY_TERMS = STUDENT_TERMS + TEACHER_TERMS

# Short names of the collectives in symbol names (`bw_ag_T`), in the order of
# planner.inputs.cluster.COLLECTIVES: all-reduce, all-gather, reduce-scatter, send/recv.
COLLECTIVE_SHORT = ("ar", "ag", "rs", "p2p")

SHAPE_FIELDS = ("L", "h", "a", "g", "d", "f", "V", "untied", "gated", "qkvb", "ob", "mlpb", "nrm", "nrmb",
                "fus", "qkn", "Lw", "W", "Lm", "E", "Ek", "fe", "fsh", "shg")


def shape_values(shape, tag: str) -> dict[str, int]:
    """`{"L_T": 80, "h_T": 8192, ...}`: a `ModelShape` as the model's symbol values (tag T or S).
    A model without sliding layers gets a window of its whole context (`W` only matters times `Lw`)."""
    v = (shape.num_layers, shape.hidden, shape.num_heads, shape.kv_heads, shape.head_width, shape.ffn,
         shape.vocab, int(not shape.tied_embeddings), int(shape.gated_mlp), int(shape.qkv_bias),
         int(shape.o_bias), int(shape.mlp_bias), shape.norms_per_layer, int(shape.norm_bias),
         int(shape.fused_proj), int(shape.qk_norm), shape.sliding_layers, shape.sliding_window or shape.max_positions,
         shape.expert_layers, shape.num_experts, shape.experts_per_token, shape.expert_ffn or 0,
         shape.shared_expert_ffn, int(shape.shared_expert_gate))
    return {f"{k}_{tag}": x for k, x in zip(SHAPE_FIELDS, v, strict=True)}

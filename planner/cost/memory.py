"""Memory per device, by term, in bytes.

Student model states follow ZeRO (Rajbhandari et al. 2020, sec. 5): weights of q_W bytes,
gradients of q_G and k_O bytes of optimizer state per parameter, each divided by the shard degree
once its ZeRO stage shards it. Under autocast (PyTorch AMP, the executor) that is 4 + 4 + 8; with
16-bit weights and an fp32 master copy (Megatron, DeepSpeed, the ZeRO paper) 2 + 2 + 12. The teacher keeps weights only.
Activations come from `planner.cost.activations` (checked against autograd's saved bytes).
With an offline teacher cache (`cached`), the teacher terms are those of the one-time pass that
writes it, when no student is on the devices: the training GPUs hold no teacher at all.
"""

from __future__ import annotations

import sympy as sp

from planner.cost import activations, experts
from planner.cost import symbols as y
from planner.cost.names import STUDENT_TERMS, TEACHER_TERMS
from planner.cost.params import kv_cache_elements, root_params, total_params

S, T = y.S, y.T
seq = y.s_p + y.s_c
head_tokens = y.ext * seq + (1 - y.ext) * y.s_c  # per sample: positions the LM heads and the loss cover (runtime)


def _split(degree, on) -> sp.Expr:
    """Divisor of a state that is sharded over `degree` ranks when `on` is 1."""
    return 1 + on * (degree - 1)


def student_weights() -> sp.Expr:
    return total_params(S) * y.q_W / _split(y.s_sh, y.z_p)


def student_gathered() -> sp.Expr:
    """Unsharded 16-bit (compute-dtype) weights alive during a micro-step: ZeRO-3/FSDP the current
    and the prefetched layer plus the root unit (embeddings, final norm, head), which FSDP2 keeps
    gathered from forward to backward; ZeRO-2 (FSDP2 without resharding after forward) the whole
    model from forward to backward; DDP/ZeRO-1 under autocast the cached casts of every fp32 weight
    (none when the weights are already in the compute dtype)."""
    P, root = total_params(S), root_params(S)
    autocast_copies = sp.Min(1, y.q_W - y.q_S)  # 1 when fp32 weights are cast to a 16-bit compute dtype
    return y.z_p * (2 * (P - root) / S.L + root) * y.q_S + y.z_g * (1 - y.z_p) * P * y.q_S + (1 - y.z_g) * autocast_copies * P * y.q_S


def student_grads() -> sp.Expr:
    return total_params(S) * y.q_G / _split(y.s_sh, y.z_g)


def student_optimizer() -> sp.Expr:
    return total_params(S) * y.k_O / _split(y.s_sh, y.z_o)


def student_activations() -> sp.Expr:
    """Saved activations of one micro-batch, by recomputation mode (0/1 switches rc_full, rc_op, rc_sel)."""
    args = (S.L, y.b, seq, S.h, S.a, S.g, S.d, experts.mlp_width(S), S.V, y.q_S, y.flash)  # MoE: the routed width
    none, sel, op, full = (activations.model_saved_bytes(*args, ckpt=m) for m in ("none", "selective", "op", "full"))
    return y.rc_full * full + (1 - y.rc_full) * (y.rc_op * op + (1 - y.rc_op) * ((1 - y.rc_sel) * none + y.rc_sel * sel))


def student_generation() -> sp.Expr:
    """What on-policy generation (lmbda > 0) holds beyond the training phase, which it precedes:
    the KV cache, 2 * L * g * d * b * s elements (a sliding-window layer's capped at its window,
    `params.kv_cache_elements`), and a student gathered once per generation (its whole model in
    the compute dtype, TRL's ds3_gather_for_generation) against the activations, logits, loss
    buffers and gathered units of the training phase. Only the excess counts, so the terms still
    sum to the peak. A separate engine split over g_tp GPUs (vLLM) holds 1/g_tp of the 16-bit
    student instead, whatever the student's split."""
    kv = y.kv_cache * kv_cache_elements(S, gen_batch(), seq) * y.q_S
    engine = sp.Min(1, y.g_tp - 1)  # 1 with a separate generation engine
    whole = y.g_once * ((1 - engine) * y.z_p * (total_params(S) * y.q_S - student_gathered()) + engine * total_params(S) * y.q_S / y.g_tp)
    # a serving engine (vLLM) holds its copy and the cache in its own reservation: `rollout_engine`
    return y.gen * (1 - y.eng) * (1 - y.ded) * sp.Max(0, kv + whole - training_transients())


def gen_batch() -> sp.Expr:
    """Sequences one generation holds on a rank: its micro-batch, or every sample of its optimizer
    step at once (ga x b: TRL 1.16 DistillationTrainer's generation batch, a vLLM engine's); on
    dedicated rollout GPUs, one engine's share of the whole step, the global batch over n_R / g_tp
    replicas (the trainer ranks' requests spread over the servers)."""
    here = y.b * (1 + y.g_bat * (y.B / (y.b * y.n_S) - 1))
    return (1 - y.ded) * here + y.ded * y.B * y.g_tp / y.n_R


def training_transients() -> sp.Expr:
    """What the training phase holds beyond the resident states and frees before the next
    generation: activations, logits, loss buffers and, colocated, the teacher's output."""
    return student_activations() + logits() + loss_buffers() + (1 - y.disagg - y.cache) * teacher_logits()


def engine_weights() -> sp.Expr:
    """A serving engine's 16-bit copy of the student, 1/g_tp of it per GPU."""
    return total_params(S) * y.q_S / y.g_tp


def engine_kv_per_sequence() -> sp.Expr:
    """KV cache of one whole sequence (prompt + completion) on one engine GPU; under tensor
    parallelism each GPU holds 1/g_tp of the heads for g_tp x as many sequences: the same per GPU."""
    return kv_cache_elements(S, 1, seq) * y.q_S


def engine_kv_room() -> sp.Expr:
    """The KV cache a serving engine has room for per GPU: its reservation (vLLM: gpu_memory_utilization
    x the device's memory) less its weights, at least one sequence; under `fill`, the cache of every
    sequence one generation holds (the planner writes the share that takes into the plan; where it
    does not fit, the plan is out of memory, not slower)."""
    need = gen_batch() * engine_kv_per_sequence()
    share = (1 - y.ded) * y.u_eng + y.ded * y.u_ded  # a dedicated engine has its GPU to itself (vLLM's default share)
    fixed = sp.Max(share * y.M_dev - engine_weights(), engine_kv_per_sequence())
    fill = (1 - y.ded) * y.u_fill
    return fill * need + (1 - fill) * fixed


def engine_reservation() -> sp.Expr:
    """What a serving engine holds per GPU while it generates: its weights and its KV room."""
    return engine_weights() + engine_kv_room()


def rollout_engine() -> sp.Expr:
    """A serving engine beside the trainer (vLLM): awake, its whole reservation beside the trainer's
    resident states and training transients; asleep while the trainer runs (sleep mode), only what
    its reservation adds over the training transients it replaces (the terms still sum to the peak)."""
    R = engine_reservation()
    return y.gen * y.eng * (1 - y.ded) * ((1 - y.slp) * R + y.slp * sp.Max(0, R - training_transients()))


def rollout_gpu_shortfall() -> sp.Expr:
    """Bytes by which a dedicated rollout engine's weights (1/g_tp of the 16-bit student) and one
    sequence's cache exceed its share of the GPU (vLLM refuses to start below that); 0 when it fits
    or when there is no dedicated rollout. The rest of its share is KV cache (`engine_kv_room`):
    vLLM sizes it to the share, so the rollout GPUs' peak is the share by construction."""
    return y.gen * y.ded * sp.Max(0, engine_weights() + engine_kv_per_sequence() - y.u_ded * y.M_dev)


def topk_bytes() -> sp.Expr:
    """Bytes per token of a top-k teacher output: k values in the loss dtype and k int32 indices."""
    return y.K * (y.q_L + 4)


def logits() -> sp.Expr:
    """Student logits [b, tokens, V] in its dtype and what the loss receives from a teacher that does
    not share its device, for the owner's micro-batch, over the positions the runtime's heads cover
    (every position, or the completion only): disaggregated, the teacher's full logits or its top-k
    (values and int32 indices); with an offline cache, the top-k read from it. Colocated, the
    teacher's own output is in `teacher_logits`."""
    received = y.disagg * ((1 - y.topk) * T.V * y.q_T + y.topk * topk_bytes()) + y.cache * topk_bytes()
    return y.b * head_tokens * (S.V * y.q_S + received)


def loss_buffers() -> sp.Expr:
    """fp32 intermediates of the generalized JSD: n_buf [tokens, V] tensors over all the micro-batch's
    covered tokens (TRL's full-vocabulary loss) or over C tokens at a time (chunked). A top-k loss
    (renormalised over the teacher's k tokens, docs/cost-model.md) holds its n_buf tensors over k
    instead of V, plus the n_dense [tokens, V] tensors it still needs (the student logits' gradient)."""
    tokens = (1 - y.chunked) * y.b * head_tokens + y.chunked * sp.Min(y.C_loss, y.b * head_tokens)
    return tokens * loss_width() * y.q_L


def loss_width() -> sp.Expr:
    """Vocabulary-wide elements per token that the loss keeps: n_buf x V, or n_buf x k + n_dense x V for top-k."""
    return y.n_buf * ((1 - y.topk) * S.V + y.topk * y.K) + y.topk * y.n_dense * S.V


def teacher_weights() -> sp.Expr:
    """Weights only: pipeline stages, tensor-parallel slices and FSDP shards each hold 1/degree
    (embedding imbalance between pipeline stages ignored); under expert parallelism each rank of a
    stage holds 1/ep of its routed experts (`experts.teacher_weight_elements`)."""
    return experts.teacher_weight_elements(total_params(T), y.pp * y.tp * y.t_sh) * y.q_T


def teacher_gathered() -> sp.Expr:
    """FSDP teacher: the current and the prefetched layer, and the root unit (embeddings, final
    norm, head) that FSDP2 keeps gathered through the forward, in full; under expert parallelism
    the routed experts are not gathered."""
    P, root = experts.gathered_elements(total_params(T)), root_params(T)
    return (1 - 1 / y.t_sh) * (2 * (P - root) / T.L + root) * y.q_T


def teacher_activations() -> sp.Expr:
    """Forward-only: one layer's transient tensors (residual, norm, attention and MLP inner widths;
    an MoE layer's routed width, top_k x f_e) plus, in a pipeline, the stage outputs of the pp
    micro-batches in flight; under expert parallelism the dispatched tokens sent and received.
    Tensor parallel: a TP group runs its tp*b rows at once (planner/executor/tensor_parallel.py
    gathers them; Megatron without sequence parallelism alike), each rank holding their whole hidden
    width and 1/tp of the MLP's inner width."""
    rows = y.tp * y.b
    return rows * seq * y.q_T * (4 * T.h + 2 * experts.mlp_width(T) / y.tp + (y.pp - 1) * T.h) + experts.dispatch_buffers(y.b * seq)


def teacher_logits() -> sp.Expr:
    """The teacher's output for one micro-batch where it computes it (colocated: the loss's device;
    disaggregated: its own; cached: the one-time pass that writes the cache): [b, tokens, V] logits
    in its dtype, then their copy in the loss dtype that is sent (disaggregated, full logits), or
    their top-k (values and int32 indices) that is kept, sent or written."""
    return y.b * head_tokens * (T.V * y.q_T + (1 - y.topk) * y.disagg * T.V * y.q_L + y.topk * topk_bytes())



def terms() -> dict[str, sp.Expr]:
    """Every memory term by its stable name."""
    return {name: globals()[name]() for name in STUDENT_TERMS + TEACHER_TERMS}

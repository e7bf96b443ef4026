"""Step time by term, in seconds, for one optimizer step on the busiest student rank.

The timeline is TRL's serial GKD micro-step, repeated `ga` times, then the gradient sync and the
optimizer step: [generate (lmbda)] -> student forward -> teacher forward -> loss -> backward.
Overlap is modelled only where the executor overlaps: FSDP prefetch hides all-gathers behind
compute (only the excess, `Max(0, comm - ovl * compute)`, is charged; `ovl` is the topology's
`comm_overlap`, 0 for gloo on CPU), and a disaggregated teacher
works on the next micro-batch while the students train (`disaggregated_wait`: on policy, only what
the student has generated can be scored). An offline teacher cache replaces the teacher's forward
by a read from local storage and charges the one-time pass, amortised over the epochs. Rollouts
on GPUs of their own (vLLM servers of the student) take the generation off the trainer's ranks:
synchronously the trainer waits for them (`generation`); one step ahead only the part longer than
the trainer's step is exposed (`rollout_wait`); the weight push to them is serial either way.
FLOPs: forward 2 per matmul weight per token plus attention (Kaplan et al. 2020; Narayanan et al.
2021), backward 2x forward, full recomputation one more forward, torchtitan's op policy the matmuls
it did not keep (`op_recompute`). Every forward pass of a layer also costs a fixed `ov` (kernel
launches, framework; the runtime's `overheads.<backend>.layer_overhead_us`).
"""

from __future__ import annotations

import sympy as sp

from planner.cost import activations, comm, experts, memory
from planner.cost import symbols as y
from planner.cost.memory import loss_width, topk_bytes
from planner.cost.params import (attention_flops_per_token, forward_flops_per_token, kv_cache_elements, matmul_params,
                                 param_tensors, total_params)

S, T = y.S, y.T
seq = y.s_p + y.s_c
ga = y.B / (y.b * y.n_S)  # micro-steps per optimizer step on a student rank
ga_T = y.B / (y.b * y.n_T)  # teacher micro-batches per step per teacher rank (disaggregated)
causal = 1 - y.flash / 2  # flash kernels skip the masked half of the scores


head_tokens = y.ext * seq + (1 - y.ext) * y.s_c  # per sample: positions the LM heads and the loss cover (runtime)


def forward_flops(m, tokens) -> sp.Expr:
    """Forward FLOPs of `tokens` samples' full sequences: the layers over every position (Kaplan
    et al. 2020; attention as in `forward_flops_per_token`), the LM head over the positions the
    runtime keeps (every one, or the completion only: `logits_to_keep`)."""
    head = 2 * m.V * m.h
    return tokens * (seq * (forward_flops_per_token(m, seq, causal) - head) + head_tokens * head)


def student_fwd_flops() -> sp.Expr:
    return forward_flops(S, y.b)


def op_recompute() -> sp.Expr:
    """Backward's extra matmuls under torchtitan's op policy (`activations.op_policy_recompute_flops`), every layer."""
    return S.L * activations.op_policy_recompute_flops(y.b, seq, S.h, S.a, S.g, S.d, experts.mlp_width(S)) / y.F_S


def decode_step(n=y.b) -> sp.Expr:
    """One decode step of n samples (default: the micro-batch) at the mean context s_p + s_c/2 (every step reads every weight
    once plus the KV cache: bandwidth bound, or its matmuls: compute bound; without a cache the
    whole prefix is recomputed, TRL with gradient checkpointing), or the host's launches, L x
    ov_dec, whichever is slower: eager decoding is launch-bound at small batch (gpt-fast,
    Hugging Face static-cache docs); plus the topology's fixed per-layer time. An MoE student reads
    only the experts its tokens are routed to (`experts.decode_read_params`); a separate engine
    split over g_tp GPUs (vLLM tensor parallel) reads 1/g_tp of the weights per GPU for g_tp x n
    sequences, each GPU's n sequences' cache and matmuls as before, then waits for its all-reduces
    (`engine_all_reduces`: serial with the step's kernels, as Megatron-style TP runs them)."""
    ctx = y.s_p + y.s_c / 2
    kv_read = y.kv_cache * kv_cache_elements(S, n, ctx) * y.q_S
    flops = 2 * matmul_params(S) * n * (1 + (1 - y.kv_cache) * (ctx - 1)) + n * attention_flops_per_token(S, ctx, 1)
    # MoE: only the experts the tokens route to; an engine split over g_tp GPUs decodes the sequences of
    # g_tp ranks at once and each GPU reads 1/g_tp of the weights they route to
    read = experts.decode_read_params(S, total_params(S), y.g_tp * n) * y.q_S / y.g_tp
    device = sp.Max((read + kv_read) / y.H_bw, flops / y.F_S)
    return sp.Max(device, S.L * y.ov_dec) + engine_all_reduces(n)


def engine_all_reduces(rows) -> sp.Expr:
    """A tensor-parallel engine's all-reduces in one forward of `rows` token rows per GPU (the g_tp x
    rows of the group): two per layer (after attention and after the MLP, Shoeybi et al. 2019) of
    [g_tp x rows, h] activations in the compute dtype, over the engine's group (`G`); 0 at g_tp = 1."""
    return comm.all_reduce(y.g_tp, 2 * S.L * y.g_tp * rows * S.h * y.q_S, y.link("G", "ar"), calls=2 * S.L)


def prefill(n=y.b) -> sp.Expr:
    """The forward over n prompts that fills the KV cache: compute bound, one pass of layer overheads,
    and a tensor-parallel engine's all-reduces of the prompts' rows."""
    return n * y.s_p * forward_flops_per_token(S, y.s_p, causal) / y.F_S + S.L * (y.ov + y.ov_dec) + engine_all_reduces(n * y.s_p)


def student_gather_for_generation() -> sp.Expr:
    """One all-gather of a sharded student's weights (in the compute dtype), per FSDP unit."""
    units, nbytes = S.L + 1, total_params(S) * y.q_S
    return comm.all_gather(y.s_sh, nbytes, y.link("S", "ag"), calls=units) + fsdp_overhead(units, nbytes)


def decode_waves() -> sp.Expr:
    """A serving engine decodes the sequences of one generation in waves of as many as its KV cache
    holds at once (vLLM admits a sequence when its blocks fit; continuous batching refills a finished
    one's slot, modelled as whole waves of equal length, since every completion here runs to s_c
    tokens): the sequences' cache over the engine's KV room (`memory.engine_kv_room`); 1 without an engine."""
    need = memory.gen_batch() * memory.engine_kv_per_sequence()
    return 1 + y.eng * sp.Max(0, need / memory.engine_kv_room() - 1)


def generation(n=y.b) -> sp.Expr:
    """One generation of s_c tokens for n samples (Agarwal et al. 2023 on-policy GKD): a prefill of
    the n prompts (compute bound), then s_c decode steps (a serving engine's in `decode_waves`, each
    of n/waves sequences). A ZeRO-3/FSDP student is gathered once
    per generation (TRL's `unwrap_model_for_generation`) or, under FSDP2's hooks, layer by layer at
    every decode step, where only the part that prefetch cannot hide behind the step is charged; a
    serving engine gets the gathered weights in the step's refresh instead (`weight_refresh`) and,
    asleep while the trainer runs, is woken once per generation.
    Weights are read in the compute dtype: autocast casts fp32 weights once per generation and
    caches the casts."""
    waves = decode_waves()
    step = decode_step(n / waves)
    per_step_gather = y.z_p * (1 - y.g_once) * sp.Max(0, student_gather_for_generation() - y.ovl * step)
    return prefill(n) + waves * y.s_c * (step + S.L * y.ov + per_step_gather) \
        + (1 - y.eng) * y.z_p * y.g_once * student_gather_for_generation() + y.eng * y.slp * y.t_wake


def generations_per_step() -> sp.Expr:
    """Generations a student rank runs per optimizer step, on policy (lmbda of them, in expectation):
    one per micro-batch, or one for all of them (`memory.gen_batch`); on dedicated rollout GPUs, one
    per engine replica for the whole step (lmbda in expectation)."""
    return (1 - y.ded) * y.lam * ga * y.b / memory.gen_batch() + y.ded * y.lam


def weight_refresh() -> sp.Expr:
    """Once per step that generates (at most one, in expectation lmbda x generations), the trainer's
    weights into a serving engine beside it: a sharded student gathered first (once per step), then
    its 16-bit copy read and written on the device (1/g_tp per GPU) and a fixed `ov_ref` per
    parameter tensor (TRL 1.16 colocate: a `load_weights` call per tensor). 0 without an engine."""
    copy = 2 * total_params(S) * y.q_S / y.g_tp / y.H_bw + param_tensors(S) * y.ov_ref
    return y.eng * sp.Min(1, generations_per_step()) * (copy + y.z_p * student_gather_for_generation() + y.ded * weight_push())


def weight_push() -> sp.Expr:
    """Dedicated rollout GPUs: the trainer's 16-bit weights sent to the engines (a broadcast from one
    trainer rank, pipelined, so about the bytes over the link from the trainer to the rollout GPUs:
    NVLink in a node, one NIC across nodes; TRL's NCCL weight transfer, verl's), one call per
    parameter tensor; on the critical path of both sides in either schedule."""
    return comm.p2p(total_params(S) * y.q_S, y.link("W", "p2p"), calls=param_tensors(S))


def loss_pass() -> sp.Expr:
    """Generalized JSD forward and backward: its vocabulary-wide fp32 tensors (`memory.loss_width`:
    n_buf x V per token, or for a top-k loss n_buf x k plus the dense student-logit gradient) each
    written and read, twice (forward and backward), bound by device-memory bandwidth, over the tokens
    the runtime's heads cover; or, where its exp/log work is slower (CPUs), the calibrated time per
    [token x V] element of the full loss, scaled by the loss's width against the full loss's
    n_buf x V, over the completion tokens the loss covers; plus a fixed `ov_loss` per call."""
    width = loss_width()
    return sp.Max(4 * y.b * head_tokens * width * y.q_L / y.H_bw, y.b * y.s_c * width / y.n_buf * y.loss_el) + y.ov_loss


def teacher_ticks() -> sp.Expr:
    """Forward-only pipeline over pp stages with m = pp*tp*b one-sample micro-batches: m + pp - 1 ticks."""
    return y.pp * y.tp * y.b + y.pp - 1


def teacher_per_sample() -> sp.Expr:
    """FLOP time of one sample through the busiest (last) stage: its share of the layers and the
    LM head, which the last stage runs alone."""
    layers = matmul_params(T) - T.V * T.h
    return (seq * (2 * layers + attention_flops_per_token(T, seq, causal)) / (y.pp * y.tp) + head_tokens * 2 * T.V * T.h / y.tp) / y.F_T


def teacher_passes() -> sp.Expr:
    """Forward passes a stage runs per micro-step: one over the whole micro-batch, or, pipelined,
    one per one-sample pipeline micro-batch (m = pp*b); each costs L/pp layer overheads."""
    return 1 + y.pipe * (y.pp * y.b - 1)


def teacher_compute() -> sp.Expr:
    """Teacher forward of one micro-step: the group's pp*tp*b samples, bubble excluded; with a
    top-k output, the last stage reads its [tokens, V] logits once more to select the top k."""
    select = y.topk * y.pp * y.b * head_tokens * T.V * y.q_T / y.H_bw
    return y.pp * y.tp * y.b * teacher_per_sample() + teacher_passes() * T.L / y.pp * y.ov + select


def teacher_bubble() -> sp.Expr:
    """Fill and drain: pp-1 extra ticks of one sample each, (pp-1)/m of the compute (DESIGN.md sec. 2)."""
    return y.pipe * (y.pp - 1) * (teacher_per_sample() + T.L / y.pp * y.ov)


def fsdp_overhead(units, nbytes) -> sp.Expr:
    """FSDP2's own cost of one gather or reduce-scatter of a model in `units` units holding `nbytes`
    gathered: a fixed `ov_sh` per unit (hooks, DTensor) and `ov_shb` per byte (copy-in/out)."""
    return units * y.ov_sh + nbytes * y.ov_shb


def teacher_gather() -> sp.Expr:
    """FSDP / ZeRO-3 teacher: all-gather of the whole teacher every forward, one collective per
    FSDP unit (each layer and the root); under expert parallelism, all but the routed experts."""
    units, nbytes = T.L + 1, experts.gathered_elements(total_params(T)) * y.q_T / (y.pp * y.tp)
    return comm.all_gather(y.t_sh, nbytes, y.link("T", "ag"), calls=units) \
        + sp.Min(1, y.t_sh - 1) * fsdp_overhead(units, nbytes)  # the overhead is per gather: 1 for any shard degree > 1


def teacher_output_bytes() -> sp.Expr:
    """Teacher output per sample that travels: GKD's loss covers the completion tokens only, so
    their logits (or top-k values and int32 indices)."""
    return y.s_c * ((1 - y.topk) * T.V * y.q_L + y.topk * topk_bytes())


def teacher_comm() -> sp.Expr:
    """Pipeline: an activation send [1, s, h] per tick and stage; the fill chain of pp-1 sends is
    on the critical path, the other m-1 hide behind compute only as far as `ovl` allows; then the
    last stage sends pp-1 owners their logits; every tick also costs the schedule's fixed `ov_pp`. Tensor parallel: two all-reduces of [tp*b, s, h] per
    layer plus gathering the vocabulary-split logits. Expert parallel: a dispatch and a combine
    all-to-all per MoE layer (`experts.all_to_all`), on the critical path."""
    act = comm.p2p(seq * T.h * y.q_T, y.link("T", "p2p"))
    sends = y.pipe * ((y.pp - 1) + (1 - y.ovl) * (y.pp * y.b - 1))
    bw_p2p = y.link("T", "p2p")[0]
    pipe = sends * act + (y.pp - 1) * y.b * teacher_output_bytes() / bw_p2p + y.pipe * teacher_ticks() * y.ov_pp
    tens = 2 * T.L * comm.all_reduce(y.tp, y.tp * y.b * seq * T.h * y.q_T, y.link("T", "ar")) \
        + (y.tp - 1) / y.tp * y.b * teacher_output_bytes() / y.link("T", "ag")[0]
    return pipe + tens + experts.all_to_all(y.b * seq, teacher_passes())


def teacher_microstep() -> sp.Expr:
    return teacher_compute() + teacher_bubble() + sp.Max(0, teacher_gather() - y.ovl * teacher_compute()) + teacher_comm()


def cache_read() -> sp.Expr:
    """Offline cache: one micro-batch's top-k (s_c tokens of k values and int32 indices) read from
    node-local storage, whose bandwidth the node's GPUs share; not hidden behind compute."""
    return y.b * y.s_c * topk_bytes() / y.bw_rd


def cache_pass() -> sp.Expr:
    """The one-time teacher pass that writes the cache, per optimizer step's worth of data: the
    teacher's forward of the step's samples in the plan's teacher split (no student on the devices)
    and the writes of their top-k; paid once and amortised over the `ep` passes over the data."""
    return (ga_T * teacher_microstep() + ga * y.b * y.s_c * topk_bytes() / y.bw_wr) / y.n_ep


# Which student machinery runs (PyTorch's, as the executor applies it): DDP; ZeRO-1 =
# DDP + ZeroRedundancyOptimizer; ZeRO-2 = FSDP2 without resharding after forward; ZeRO-3 and
# HSDP = FSDP2. Gradients are synchronised only on the last micro-step of a step.
is_ddp, is_z1 = 1 - y.z_o, y.z_o * (1 - y.z_g)
is_z2, is_z3 = y.z_g * (1 - y.z_p), y.z_p


def student_fsdp_comm() -> sp.Expr:
    """FSDP2 per micro-step: parameter all-gather in forward (ZeRO-2, ZeRO-3) and again in backward
    (ZeRO-3), one collective per unit (each layer and the root), in the compute dtype (FSDP2's
    MixedPrecisionPolicy casts the fp32 shards of an autocast student before gathering)."""
    units = S.L + 1
    gather = comm.all_gather(y.s_sh, total_params(S) * y.q_S, y.link("S", "ag"), calls=units) + fsdp_overhead(units, total_params(S) * y.q_S)
    return (is_z2 + 2 * is_z3) * gather


def student_ddp_reduction() -> sp.Expr:
    """Once per step, during the last backward, DDP's all-reduce (also under ZeRO-1) with its own
    fixed `ov_dd` and per-byte `ov_ddb` costs."""
    P = total_params(S)
    return (is_ddp + is_z1) * (comm.all_reduce(y.s_sh, P * y.q_G, y.link("S", "ar")) + sp.Min(1, y.s_sh - 1) * (y.ov_dd + P * y.q_G * y.ov_ddb))


def student_fsdp_reduction() -> sp.Expr:
    """Once per step, during the last backward, FSDP2's per-unit reduce-scatter of the gradients."""
    P = total_params(S)
    return (is_z2 + is_z3) * (comm.reduce_scatter(y.s_sh, P * y.q_G, y.link("S", "rs"), calls=S.L + 1) + fsdp_overhead(S.L + 1, P * y.q_G))


def student_after_step() -> sp.Expr:
    """After the optimizer step, not hidden: ZeroRedundancyOptimizer broadcasts every parameter
    tensor from its owner (all-gather volume, one call per tensor); HSDP all-reduces each shard's
    gradients across the replicas."""
    P = total_params(S)
    bcast = comm.all_gather(y.s_sh, P * y.q_W, y.link("S", "ag"), calls=param_tensors(S))
    across = comm.all_reduce(y.r_S, P * y.q_G / y.s_sh, y.link("R", "ar"))
    return is_z1 * bcast + is_z3 * across


def disaggregated_wait(teacher_step, gen, fwd, rest) -> sp.Expr:
    """Students waiting for a disaggregated teacher, as the executor schedules it.

    On policy the teacher can score a micro-batch only after the student generated it; the student
    queues one micro-step ahead (it generates and sends k+1 before training on k: gen0, gen1, fwd0,
    rest0, gen2, fwd1, ...) and the queue starts empty every step; the teacher answers in order,
    tau = its whole step's work over the ga micro-steps per answer. The step is the longest path
    through that schedule: the student's own work ga * (gen + fwd + rest), or a path through the
    teacher: from the first request to its answer and on (gen + tau + the rest of the student's
    work), from the first request through every answer back to back (gen + ga * tau + rest), or
    from the last request (all the generations first, then tau + rest). A replay of the schedule
    (tests/cost/test_gpu_fidelity.py) is never below this and at most about 6 % above it.
    """
    tau = teacher_step / ga
    student = ga * (gen + fwd + rest)
    first = gen + tau + rest + (ga - 1) * (fwd + rest) + sp.Max(0, ga - 2) * gen
    chain = gen + ga * tau + rest
    last = ga * gen + sp.Max(0, ga - 2) * (fwd + rest) + tau + rest
    return sp.Max(student, first, chain, last, evaluate=False) - student  # unevaluated: its four paths are large, comparing them costs minutes


def terms() -> dict[str, sp.Expr]:
    """Step time by stable term name; the step time is their sum."""
    fwd = student_fwd_flops() / y.F_S + S.L * y.ov
    bwd = (2 + y.rc_full) * fwd + y.rc_op * op_recompute()
    window = y.ovl * (fwd + bwd)  # what one micro-step's compute can hide of the collectives on its link
    colo = (1 - y.disagg) * (1 - y.cache)  # a teacher on the training devices (a cached plan has none)
    xfer = teacher_output_bytes() / y.link("X", "p2p")[0]
    t_side = ga_T * teacher_microstep() + ga_T * y.b * xfer
    P_local = total_params(S) / (1 + y.z_o * (y.s_sh - 1))
    gathers = student_fsdp_comm()
    t = {
        "generation": generations_per_step() * generation(memory.gen_batch()),
        "weight_sync": weight_refresh(),
        "student_forward": ga * fwd,
        "student_backward": ga * bwd,
        "loss": ga * loss_pass(),
        "student_fsdp_exposed": ga * sp.Max(0, gathers - window),
        # the last backward's gradient collectives share the link with its gathers: charge what they add
        "grad_sync": sp.Max(0, student_ddp_reduction() - y.ovl * bwd)
        + sp.Max(0, gathers + student_fsdp_reduction() - window) - sp.Max(0, gathers - window) + student_after_step(),
        "optimizer": 2 * P_local * (y.k_O + y.q_W + y.q_G) / y.H_bw
        + param_tensors(S) / (1 + is_z1 * (y.s_sh - 1)) * ((1 - y.z_g) * y.ov_opt + y.z_g * y.ov_opt_sh),  # FSDP: DTensors
        "teacher_forward": colo * ga * teacher_compute(),
        "teacher_bubble": colo * ga * teacher_bubble(),
        "teacher_gather_exposed": colo * ga * sp.Max(0, teacher_gather() - y.ovl * teacher_compute()),
        "teacher_comm": colo * ga * teacher_comm(),
        "teacher_transfer": y.disagg * ga * y.b * xfer,
        "teacher_cache_read": y.cache * ga * cache_read(),
        "teacher_cache_pass": y.cache * cache_pass(),
    }
    rest = bwd + loss_pass() + sp.Max(0, gathers - window) + y.b * xfer
    # a micro-step's share of the rollout work on the student's ranks (none on dedicated rollout GPUs:
    # the step's completions are there before it starts)
    per_micro = (1 - y.ded) * (generations_per_step() * generation(memory.gen_batch()) + weight_refresh()) / ga
    t["teacher_wait"] = y.disagg * disaggregated_wait(t_side, per_micro, fwd, rest)
    # one step ahead on dedicated rollout GPUs: the next step's rollouts run while this one trains, so
    # the step is the longer of the two (the weight push, between them, stays on both paths)
    rollout = t["generation"]
    train = sp.Add(*(v for k, v in t.items() if k not in ("generation", "weight_sync")))
    t["generation"] = (1 - y.ded * y.asy) * rollout
    behind = sp.Add(rollout, sp.Mul(-1, train, evaluate=False), evaluate=False)  # unevaluated: flattening the trainer's terms costs minutes
    t["rollout_wait"] = y.ded * y.asy * sp.Max(0, behind, evaluate=False)
    return t

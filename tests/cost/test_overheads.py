"""Each calibrated fixed cost enters the step time exactly where the executor pays it, and nowhere
else: per loss call, per pipeline tick, per FSDP unit and per gathered byte."""

import pytest

from planner.cost.bind import job_values, strategy_values
from planner.strategy import Strategy
from planner.cost.compile import evaluate
from planner.inputs.load import load_cluster, load_job, load_runtime

JOB = load_job("tiny-cpu")  # global batch 8, 2 ranks: b=2 gives 2 micro-steps
BASE = load_cluster("cpu-local")
RUNTIME = load_runtime("kd-planner")  # the overheads live in the runtime, per backend (cpu-local: gloo)


def terms(strat: Strategy, **overheads) -> dict[str, float]:
    rt = RUNTIME.model_copy(update={"overheads": {"gloo": RUNTIME.overheads_on("gloo").model_copy(update=overheads)}})
    f = evaluate(job_values(JOB, BASE, rt) | strategy_values(strat, BASE))
    return {k[5:]: float(v) for k, v in f.items() if k.startswith("time.")}


def delta(strat: Strategy, field: str, value: float) -> dict[str, float]:
    """Which terms move, and by how much, when one overhead goes from 0 to `value`."""
    zero = {"loss_call_overhead_us": 0.0, "pipeline_tick_overhead_us": 0.0, "shard_unit_overhead_us": 0.0, "shard_copy_gb_per_s": None,
            "optimizer_tensor_overhead_us": 0.0, "sharded_optimizer_tensor_overhead_us": 0.0,
            "ddp_sync_overhead_us": 0.0, "ddp_copy_gb_per_s": None}
    a, b = terms(strat, **zero), terms(strat, **(zero | {field: value}))
    return {k: b[k] - a[k] for k in a if abs(b[k] - a[k]) > 1e-12}


PIPE = Strategy("pipeline", "ddp", "colocated", 2, 2, s_sh=2, b=2, pp=2)
SHARD = Strategy("shard", "ddp", "colocated", 2, 2, s_sh=2, b=2, t_sh=2)
REPL = Strategy("replicate", "ddp", "colocated", 2, 2, s_sh=2, b=2)


def test_loss_call_overhead_once_per_micro_step():
    assert delta(REPL, "loss_call_overhead_us", 1000.0) == {"loss": pytest.approx(2 * 1e-3)}


def test_pipeline_tick_overhead_per_tick_of_pipelined_teachers_only():
    # 2 micro-steps x (m + pp - 1) ticks, m = pp * b = 4 one-sample micro-batches
    assert delta(PIPE, "pipeline_tick_overhead_us", 1000.0) == {"teacher_comm": pytest.approx(2 * (4 + 2 - 1) * 1e-3)}
    assert delta(REPL, "pipeline_tick_overhead_us", 1000.0) == {}
    assert delta(SHARD, "pipeline_tick_overhead_us", 1000.0) == {}


def test_fsdp_copy_cost_per_gathered_byte():
    teacher_bytes = 4 * 6_164_736  # tiny-teacher fp32 parameters, gathered whole at each forward
    per_byte = 1 / 2e9
    d = delta(SHARD, "shard_copy_gb_per_s", 2.0)
    assert d == {"teacher_gather_exposed": pytest.approx(2 * teacher_bytes * per_byte, rel=1e-3)}
    assert delta(REPL, "shard_copy_gb_per_s", 2.0) == {}
    z3 = delta(Strategy("replicate", "zero3", "colocated", 2, 2, s_sh=2, b=2), "shard_copy_gb_per_s", 2.0)
    assert set(z3) == {"student_fsdp_exposed", "grad_sync"}  # gathers in forward and backward, reduce-scatter once


def test_sharded_optimizer_overhead_for_fsdp_students_only():
    tensors = 4 * 9 + 3  # tiny-student: 9 per Llama layer (7 matrices, 2 norms), embedding, final norm, head
    z3 = Strategy("replicate", "zero3", "colocated", 2, 2, s_sh=2, b=2)
    assert delta(z3, "sharded_optimizer_tensor_overhead_us", 1000.0) == {"optimizer": pytest.approx(tensors * 1e-3)}
    assert delta(REPL, "sharded_optimizer_tensor_overhead_us", 1000.0) == {}
    z1 = Strategy("replicate", "zero1", "colocated", 2, 2, s_sh=2, b=2)  # ZeroRedundancyOptimizer: half the tensors each
    assert delta(z1, "optimizer_tensor_overhead_us", 1000.0) == {"optimizer": pytest.approx(tensors / 2 * 1e-3)}


def test_ddp_sync_overhead_once_per_step_and_only_with_a_sync():
    grad_bytes = 4 * 869_504  # tiny-student fp32 gradients
    assert delta(REPL, "ddp_sync_overhead_us", 1000.0) == {"grad_sync": pytest.approx(1e-3)}
    assert delta(REPL, "ddp_copy_gb_per_s", 2.0) == {"grad_sync": pytest.approx(grad_bytes / 2e9, rel=1e-3)}
    z3 = Strategy("replicate", "zero3", "colocated", 2, 2, s_sh=2, b=2)
    assert delta(z3, "ddp_sync_overhead_us", 1000.0) == {}
    alone = Strategy("replicate", "ddp", "disaggregated", 1, 1, s_sh=1, b=2)  # one student rank: nothing to sync
    assert delta(alone, "ddp_sync_overhead_us", 1000.0) == {}


def test_unsharded_compute_copies_of_the_student():
    """student_gathered: autocast's cached 16-bit casts under DDP, ZeRO-2's whole gathered model,
    FSDP's two layers plus its root unit (embeddings, final norm, head: FSDP2 keeps the root
    gathered from forward to backward); nothing for an fp32 DDP student."""
    from planner.cost import memory
    from planner.cost import symbols as y
    from planner.inputs.load import load_model
    P, L = 869_504, 4  # tiny-student

    def gathered(q_W, q_S, z_g, z_p):
        vals = y.S.values(load_model("tiny-student")) | {y.q_W: q_W, y.q_S: q_S, y.z_g: z_g, y.z_p: z_p}
        return float(memory.student_gathered().subs(vals))

    assert gathered(4, 2, 0, 0) == pytest.approx(2 * P)  # DDP under autocast to bf16
    assert gathered(4, 4, 0, 0) == 0  # fp32 DDP
    assert gathered(2, 2, 0, 0) == 0  # bf16 weights (master): nothing to cast
    assert gathered(4, 2, 1, 0) == pytest.approx(2 * P)  # ZeRO-2 keeps the whole model gathered in bf16
    m = load_model("tiny-student")
    root = m.vocab * m.hidden * (2 - m.tied_embeddings) + m.hidden  # embedding, untied head, final RMSNorm
    assert gathered(4, 2, 1, 1) == pytest.approx(2 * (2 * (P - root) / L + root))  # ZeRO-3: current + prefetched layer + root

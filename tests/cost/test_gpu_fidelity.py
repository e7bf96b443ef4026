"""The GPU-fidelity fixes of the cost model, each checked from first principles or against an
independent replay: generation (prefill + decode, host- or device-bound, per-step or once gather),
completion-only loss buffers, a disaggregated teacher's own logits and the on-policy queue of a
disaggregated teacher (issue 12)."""

import random
from dataclasses import replace

import pytest

from planner.cost.bind import job_values, strategy_values
from planner.strategy import Strategy
from planner.cost.compile import evaluate
from planner.inputs.load import load_cluster, load_job, load_model, load_runtime

JOB, CLUSTER = load_job(), load_cluster("dgx-h100")
Z3 = Strategy("shard", "zero3", "colocated", 16, 16, t_sh=16, s_sh=16, b=4)


def figures(st=Z3, runtime="kd-planner", job=JOB, cluster=CLUSTER, **over):
    rt = load_runtime(runtime) if isinstance(runtime, str) else runtime
    values = job_values(job, cluster, rt) | strategy_values(st, cluster) | over
    return {k: float(v) for k, v in evaluate(values).items()}


def with_generation(**kw):
    rt = load_runtime("kd-planner")
    return rt.model_copy(update={"generation": rt.generation.model_copy(update=kw)})


def test_decode_step_is_host_bound_when_eager_and_bandwidth_bound_when_compiled():
    """Llama-3.1-8B, batch 4: eager decoding is L x the host time per layer; without it, a step reads
    every bf16 weight and the KV cache at the mean context once, at the reached HBM rate."""
    m, w = load_model("llama-3.1-8b"), JOB.workload
    eager = figures(runtime=with_generation(layer_overhead_us=1000.0))["generation.decode_step"]
    assert eager == pytest.approx(m.num_layers * 1e-3)
    ctx = w.prompt_len + w.completion_len / 2
    kv = 2 * m.num_layers * m.kv_heads * m.head_width * 4 * ctx * 2
    weights = 8_030_261_248 * 2  # published parameter count, bf16
    hbm = CLUSTER.gpu.hbm_bw_gb_per_s * 1e9 * CLUSTER.gpu.hbm_efficiency
    compiled = figures(runtime=with_generation(layer_overhead_us=0.0))["generation.decode_step"]
    assert compiled == pytest.approx((weights + kv) / hbm, rel=1e-6)


def test_gathering_a_sharded_student_once_per_generation_is_cheaper_than_per_step():
    """The plan chooses (Strategy.gather): per step, one all-gather of the student per decode step
    less what prefetch hides behind the step; once, one per generation."""
    once = figures(Z3)["time.generation"]
    per_step = figures(replace(Z3, gather="per_step"))["time.generation"]
    assert per_step > once
    hsdp = Strategy("shard", "hsdp", "colocated", 16, 16, t_sh=16, s_sh=8, r_S=2, b=4)
    assert figures(replace(hsdp, gather="per_step"))["time.generation"] > figures(hsdp)["time.generation"]


def test_generation_memory_counts_a_gathered_student_only_beyond_the_training_phase():
    """Generation precedes the training phase: its KV cache and, gathered once, the whole bf16
    student count only where they exceed the activations, logits and loss buffers they never meet."""
    m, w, b = load_model("llama-3.1-8b"), JOB.workload, Z3.b
    kv = 2 * m.num_layers * m.kv_heads * m.head_width * b * (w.prompt_len + w.completion_len) * 2
    for gather in ("once", "per_step"):
        f = figures(replace(Z3, gather=gather))
        training = f["mem.student_activations"] + f["mem.logits"] + f["mem.loss_buffers"] + f["mem.teacher_logits"]
        whole = (8_030_261_248 * 2 - f["mem.student_gathered"]) if gather == "once" else 0
        assert f["mem.student_generation"] == pytest.approx(max(0.0, kv + whole - training), rel=1e-9, abs=1)
    off = JOB.model_copy(update={"workload": w.model_copy(update={"lmbda": 0.0})})
    assert figures(job=off)["mem.student_generation"] == 0


def test_a_generation_engine_split_over_gpus_holds_and_reads_its_share():
    """A colocated vLLM engine of tensor-parallel degree 8 holds 1/8 of the bf16 student on every GPU
    (whatever the student's split; counted beyond the training phase as above) and, bandwidth bound,
    reads 1/8 of the weights per decode step for its 8 GPUs' sequences, then waits for two ring
    all-reduces per layer of those sequences' [8 x b, h] bf16 activations on the NVLink tier."""
    m, w, b = load_model("llama-3.1-8b"), JOB.workload, Z3.b
    kv = 2 * m.num_layers * m.kv_heads * m.head_width * b * (w.prompt_len + w.completion_len) * 2
    ddp = Strategy("replicate", "ddp", "colocated", 16, 16, s_sh=16, b=b)
    for st in (Z3, ddp):
        f = figures(st, runtime=with_generation(tensor_parallel=8))
        training = f["mem.student_activations"] + f["mem.logits"] + f["mem.loss_buffers"] + f["mem.teacher_logits"]
        assert f["mem.student_generation"] == pytest.approx(max(0.0, kv + 8_030_261_248 * 2 / 8 - training), rel=1e-9, abs=1)
    one = figures(runtime=with_generation(layer_overhead_us=0.0))["generation.decode_step"]
    eight = figures(runtime=with_generation(layer_overhead_us=0.0, tensor_parallel=8))["generation.decode_step"]
    ctx_kv = 2 * m.num_layers * m.kv_heads * m.head_width * b * (w.prompt_len + w.completion_len / 2) * 2
    bw, alpha = CLUSTER.intra_node.fit("all_reduce")
    calls = 2 * m.num_layers
    all_reduces = 2 * 7 / 8 * calls * 8 * b * m.hidden * 2 / bw + calls * 2 * 7 * alpha
    read = (one - (eight - all_reduces)) * CLUSTER.gpu.hbm_bw_gb_per_s * 1e9 * CLUSTER.gpu.hbm_efficiency
    assert read == pytest.approx(8_030_261_248 * 2 * 7 / 8)
    assert eight > ctx_kv / (CLUSTER.gpu.hbm_bw_gb_per_s * 1e9)  # its own sequences' cache still read whole


def test_loss_buffers_cover_the_sequence_under_trl_and_the_completion_under_ours():
    """TRL's GKDTrainer keeps [b, s_p + s_c, V] fp32 buffers; our executor's heads cover the completion."""
    job = JOB.model_copy(update={"workload": JOB.workload.model_copy(update={"loss": "full"})})
    trl, ours = figures(runtime="trl-gkd", job=job), figures(runtime="kd-planner", job=job)
    w = JOB.workload
    assert trl["mem.loss_buffers"] / ours["mem.loss_buffers"] == pytest.approx((w.prompt_len + w.completion_len) / w.completion_len)
    assert trl["mem.loss_buffers"] == pytest.approx(10 * 4 * (w.prompt_len + w.completion_len) * 128_256 * 4)


def test_a_disaggregated_teacher_holds_its_own_logits():
    """The teacher's logits are their own term on every placement: colocated, the bf16 [b, s_c, V]
    next to the student's; disaggregated, on the teacher's device with the fp32 copy it sends, and
    the student side counts the copy it receives in `logits`."""
    w, V = JOB.workload, load_model("llama-3.1-70b").vocab
    colo = figures()
    disagg = figures(Strategy("shard", "zero2", "disaggregated", 8, 8, t_sh=8, s_sh=8, b=2))
    assert colo["mem.teacher_logits"] == pytest.approx(Z3.b * w.completion_len * V * 2)
    assert colo["mem.logits"] == pytest.approx(Z3.b * w.completion_len * load_model("llama-3.1-8b").vocab * 2)
    assert disagg["mem.teacher_logits"] == pytest.approx(2 * w.completion_len * V * (2 + 4))  # bf16 logits + fp32 copy sent
    assert disagg["mem.logits"] == pytest.approx(2 * w.completion_len * V * (2 + 2))


def replay(ga, gen, fwd, rest, tau):
    """The executor's disaggregated schedule (planner/executor/loop.py), step by step: the student
    generates and sends micro-batch k+1 before training on k, the queue starts empty, the teacher
    answers requests in order, each after tau."""
    t, free, ready = 0.0, 0.0, {}

    def make(k):
        nonlocal t, free
        t += gen
        free = max(t, free) + tau
        ready[k] = free
    make(0)
    if ga > 1:
        make(1)
    for k in range(ga):
        if 1 <= k and k + 1 < ga:
            make(k + 1)
        t = max(t + fwd, ready[k]) + rest
    return t


def test_disaggregated_wait_follows_the_executors_queue():
    """The model's wait plus the student's own work is the longest path through the replayed
    schedule: never above it, at most 6 % below, and exact when one side is the bottleneck."""
    from planner.cost import symbols as y
    from planner.cost import timeline

    import sympy as sp

    g, f, r, t = sp.symbols("gen fwd rest tau", positive=True)
    wait = sp.lambdify((y.B, g, f, r, t), timeline.disaggregated_wait(t * timeline.ga, g, f, r).subs({y.b: 1, y.n_S: 1}))
    rng = random.Random(0)
    for _ in range(2000):
        ga = rng.randint(1, 12)
        gen, fwd, rest, tau = (rng.uniform(0, 3) for _ in range(4))
        model = ga * (gen + fwd + rest) + float(wait(ga, gen, fwd, rest, tau))
        exact = replay(ga, gen, fwd, rest, tau)
        assert exact * 0.94 <= model <= exact * (1 + 1e-9), (ga, gen, fwd, rest, tau)
    assert replay(4, 1, 1, 1, 5) == pytest.approx(1 + 4 * 5 + 1)  # teacher-bound: gen + ga * tau + rest
    assert replay(4, 1, 1, 1, 0.1) == pytest.approx(4 * 3)  # student-bound: no wait

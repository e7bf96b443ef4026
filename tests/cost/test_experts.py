"""Expert parallelism of an MoE teacher and the MoE gaps (issue 14), from first principles: the
all-to-all bytes at small sizes, ep = 1 is the plain split, expert memory divides by ep, the routed
MLP width in activations, and the experts one decode step reads."""

import pytest

from planner.cost.activations import model_saved_bytes
from planner.cost.bind import all_to_all_fit, job_values, strategy_values
from planner.cost.compile import evaluate
from planner.inputs.load import Job, load_cluster, load_model, load_runtime
from planner.inputs.model import ModelShape
from planner.inputs.workload import Workload
from planner.search import space
from planner.strategy import Strategy

# A small MoE teacher: 4 layers, 8 experts of width 32, 2 per token, hidden 64.
MOE = ModelShape(name="tiny-moe", family="qwen3_moe", num_layers=4, hidden=64, num_heads=4, num_kv_heads=2, ffn=96,
                 vocab=256, num_experts=8, experts_per_token=2, expert_ffn=32)
DENSE = ModelShape(name="tiny-dense", num_layers=2, hidden=32, num_heads=4, ffn=64, vocab=256)
W = Workload(global_batch=16, micro_batch_max=2, prompt_len=16, completion_len=16, lmbda=0.0)
JOB = Job(name="tiny-moe", teacher=MOE, student=DENSE, workload=W)
CL = load_cluster("dgx-h100", 2)  # 2 nodes of 8 GPUs
ROUTED = 4 * 8 * 3 * 64 * 32  # layers x experts x (gate, up, down) x h x f_e


def figures(st: Strategy, job: Job = JOB, runtime: str = "megatron-ep", **over) -> dict[str, float]:
    values = job_values(job, CL, load_runtime(runtime)) | strategy_values(st, CL) | over
    return {k: float(v) for k, v in evaluate(values).items()}


def colocated(teacher: str, **degrees) -> Strategy:
    return Strategy(teacher, "zero3", "colocated", 16, 16, s_sh=16, b=1, **degrees)


def test_all_to_all_bytes_at_small_sizes():
    """Dispatch and combine per MoE layer: tokens x h x top_k x 2 bytes each, (ep-1)/ep of it leaves
    the rank, plus (ep-1) latencies per call, two calls per layer."""
    for ep in (2, 4, 8):
        st = colocated("replicate", ep=ep)
        bw, alpha = all_to_all_fit("intra_node", ep, CL)
        tokens = 1 * (16 + 16)
        buffer = tokens * 64 * 2 * 2  # one dispatch: tokens x h x top_k x bf16
        expected = 2 * 4 * ((ep - 1) / ep * buffer / bw + (ep - 1) * alpha)
        assert figures(st)["time.teacher_comm"] == pytest.approx(expected, rel=1e-9)
    assert figures(colocated("replicate"))["time.teacher_comm"] == 0


def test_a_node_spanning_all_to_all_leaves_the_node_over_one_nic_per_gpu():
    """16 ranks on 2 nodes of 8: half of each GPU's buffer goes to the other node, over its own NIC,
    the rest over NVLink at the same time: time = (n - G)/n x bytes / one NIC's rate."""
    nic, _ = CL.inter_node.fit("all_gather")
    bw, _ = all_to_all_fit("inter_node", 16, CL)
    nbytes = 1e9
    assert 15 / 16 * nbytes / bw == pytest.approx(8 / 16 * nbytes / nic)
    assert Strategy.parse("shard:16+ep:16/zero3", CL).links(CL)["E"] == "inter_node"
    assert Strategy.parse("shard:16+ep:8/zero3", CL).links(CL)["E"] == "intra_node"


def test_ep_1_is_the_plain_split():
    """`+ep:1` is no expert parallelism; and the EP terms, switched on at ep = 1, give the plain
    replicated or pipelined teacher's weights, gathers and time (all experts on the rank, no token
    leaves it). (A sharded one differs: EP keeps whole experts, FSDP shards them.)"""
    assert Strategy.parse("shard:16+ep:1/zero3", CL) == Strategy.parse("shard:16/zero3", CL)
    for st in (colocated("replicate"), colocated("pipeline", pp=4)):
        plain, switched = figures(st), figures(st, epx=1.0, ep=1.0)
        for term in ("mem.teacher_weights", "mem.teacher_gathered", "time.teacher_comm", "time.teacher_forward", "step_time"):
            assert switched[term] == pytest.approx(plain[term], rel=1e-12), (st, term)


def test_expert_memory_divides_by_ep():
    """replicate+ep:k holds everything but the routed experts, and 1/k of those; shard:16+ep:k
    shards the rest over 16 and never gathers the experts."""
    total = figures(colocated("replicate"))["mem.teacher_weights"] / 2
    for ep in (2, 4, 8):
        held = figures(colocated("replicate", ep=ep))["mem.teacher_weights"] / 2
        assert held == pytest.approx(total - ROUTED + ROUTED / ep)
        sharded = figures(colocated("shard", t_sh=16, ep=ep))
        assert sharded["mem.teacher_weights"] / 2 == pytest.approx((total - ROUTED) / 16 + ROUTED / ep)
    per_stage = figures(colocated("pipeline", pp=2, ep=8))["mem.teacher_weights"] / 2
    assert per_stage == pytest.approx(total / 2 - ROUTED / 2 + ROUTED / 16)
    gathered = figures(colocated("shard", t_sh=16, ep=8))["mem.teacher_gathered"]
    assert gathered < figures(colocated("shard", t_sh=16))["mem.teacher_gathered"]


def test_a_dense_teacher_gets_no_expert_parallel_candidate():
    dense = Job(name="dense", teacher=DENSE, student=DENSE, workload=W)
    cands, _ = space.enumerate_candidates(dense, CL)
    assert cands and all(c.ep == 1 for c in cands)
    cands, reasons = space.enumerate_candidates(JOB, CL)
    eps = {c.ep for c in cands}
    assert eps == {1, 2, 4, 8}  # every divisor of the 8 experts and the 16 ranks
    assert {why for c, why in zip(cands, reasons) if c.ep > 1 and c.b == 1} == {None, "pipeline degree exceeds teacher layers"}
    assert Strategy.parse("shard:16+ep:2/zero3", CL).rejection(dense) == "expert parallelism needs a mixture-of-experts teacher"
    assert Strategy.parse("shard:16+ep:16/zero3", CL).rejection(JOB) == "expert-parallel degree does not divide the teacher's experts"


def test_expert_parallel_plans_are_ranked_only_under_a_runtime_that_runs_them():
    from planner.search import rank

    ours = rank.search(JOB, CL)
    assert ours.ranked and all(s.strategy.ep == 1 for s in ours.ranked)
    assert any("does not run an expert-parallel teacher" in why for why in ours.rejected)
    assert any("does not split a mixture-of-experts teacher by tensor parallelism" in why for why in ours.rejected)
    assert all(s.strategy.teacher != "tp" for s in ours.ranked)
    assert any(n.startswith("Expert parallelism:") and "none ranked" in n for n in ours.notes)
    megatron = rank.search(JOB, CL, runtime=load_runtime("megatron-ep"))
    assert any(s.strategy.ep > 1 for s in megatron.ranked)
    dense = rank.search(Job(name="dense", teacher=DENSE, student=DENSE, workload=W), CL)
    assert not dense.notes


def test_activations_follow_the_routed_width():
    """An MoE layer's MLP activations span the top_k experts a token runs through (k x f_e), not
    the dense intermediate_size (Mixtral's is the expert width: 2 x 14,336 per token)."""
    mixtral = load_model("mixtral-8x7b")
    job = Job(name="m", teacher=MOE, student=mixtral, workload=W)
    m = mixtral
    st = colocated("replicate")
    expected = model_saved_bytes(m.num_layers, 1, 32, m.hidden, m.num_heads, m.kv_heads, m.head_width,
                                 m.experts_per_token * m.expert_ffn, m.vocab, 2, 1, ckpt="none")
    assert figures(st, job, "kd-planner")["mem.student_activations"] == pytest.approx(float(expected))


def test_a_decode_step_reads_only_the_experts_its_tokens_route_to():
    """Bandwidth-bound decode (no host time) of an MoE student: b sequences read min(E, b x top_k)
    experts per layer, and every other weight once."""
    student = load_model("qwen3-30b-a3b")
    job = Job(name="m", teacher=MOE, student=student, workload=W.model_copy(update={"lmbda": 0.5}))
    rt = load_runtime("kd-planner")
    rt = rt.model_copy(update={"generation": rt.generation.model_copy(update={"layer_overhead_us": 0.0})})
    per_expert = 3 * student.hidden * student.expert_ffn
    total = 30_532_122_624  # published (models/README.md)
    kv_ctx = 16 + 16 / 2
    for b in (1, 4, 32):
        st = Strategy("replicate", "ddp", "colocated", 16, 16, s_sh=16, b=b)
        values = job_values(job, CL, rt) | strategy_values(st, CL)
        step = float(evaluate(values)["generation.decode_step"])
        read = total - student.num_layers * (128 - min(128, b * 8)) * per_expert
        kv = 2 * student.num_layers * student.kv_heads * student.head_width * b * kv_ctx
        assert step == pytest.approx((read + kv) * 2 / values["H"], rel=1e-9)  # bandwidth bound at these batches
    assert read == total  # 32 x 8 tokens reach all 128 experts

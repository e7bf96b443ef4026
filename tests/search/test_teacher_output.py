"""The teacher output as a per-plan choice (issue 17): each term worked out from first principles,
not read back from the model."""

import pytest

from planner.cost import bind
from planner.inputs.load import load_cluster, load_job, load_runtime
from planner.search import baselines as trl
from planner.search import output as outputs
from planner.search import plans, rank
from planner.strategy import Strategy

CLUSTER = load_cluster("dgx-h100")


def job(**workload):
    j = load_job()
    return j.model_copy(update={"workload": j.workload.model_copy(update=workload)})


def scored(text: str, j, output: str, runtime: str = "kd-planner") -> rank.Scored:
    st = Strategy.parse(text, CLUSTER)
    return rank.score([st], [None], outputs.with_output(j, output), CLUSTER, load_runtime(runtime))[0]


def test_topk_transfer_is_k_values_and_int32_indices_per_completion_token():
    """A disaggregated teacher sends s_c * k * (q + 4) bytes per sample instead of s_c * V * q, over
    one NIC (p2p), for each of the ga micro-steps of b samples."""
    j = job()
    w, text = j.workload, "shard:8/zero3/disaggregated:8/2"
    full, topk = scored(text, j, "logits"), scored(text, j, "topk")
    bw = bind.link_fit("one_nic", "p2p", CLUSTER)[0]
    b, ga, q = 2, w.global_batch // (2 * 8), 4  # fp32 logits
    assert full.time_terms()["teacher_transfer"] == pytest.approx(ga * b * w.completion_len * j.teacher.vocab * q / bw)
    assert topk.time_terms()["teacher_transfer"] == pytest.approx(ga * b * w.completion_len * w.topk * (q + 4) / bw)
    # and the student side holds k values and indices per token, not the teacher's [tokens, V] logits
    diff = full.memory_terms()["logits"] - topk.memory_terms()["logits"]
    assert diff == pytest.approx(b * w.completion_len * (j.teacher.vocab * 2 - w.topk * (q + 4)))  # bf16 teacher logits


def test_topk_loss_keeps_its_buffers_k_wide_plus_the_dense_gradient():
    j = job(loss="full")
    w, rt = j.workload, load_runtime("kd-planner")
    full, topk = scored("shard:16/zero3/colocated/2", j, "logits"), scored("shard:16/zero3/colocated/2", j, "topk")
    tokens = 2 * w.completion_len  # completion-only logits under kd-planner
    V = j.student.vocab
    assert full.memory_terms()["loss_buffers"] == pytest.approx(tokens * rt.loss_buffers * V * 4)
    assert topk.memory_terms()["loss_buffers"] == pytest.approx(tokens * (rt.loss_buffers * w.topk + rt.topk_dense_buffers * V) * 4)
    assert topk.time_terms()["loss"] < full.time_terms()["loss"]


def test_a_cached_plan_holds_no_teacher_on_the_training_gpus():
    """Offline cache: no teacher forward, gather or transfer while training, the student side is the
    whole of the training devices' memory, and the pass that writes the cache runs alone."""
    j = job(lmbda=0.0)
    sc = scored("shard:16/zero3/colocated/2", j, "cached")
    t, m, sides = sc.time_terms(), sc.memory_terms(), sc.memory_sides()
    assert t["teacher_forward"] == t["teacher_gather_exposed"] == t["teacher_transfer"] == t["teacher_comm"] == 0
    assert t["teacher_cache_read"] > 0 and t["teacher_cache_pass"] > 0
    student = sum(m[k] for k in ("student_weights", "student_gathered", "student_grads", "student_optimizer",
                                 "student_activations", "logits", "loss_buffers", "student_generation"))
    teacher_pass = m["teacher_weights"] + m["teacher_gathered"] + m["teacher_activations"] + m["teacher_logits"]
    assert sides == pytest.approx({"student_ranks": student, "teacher_pass": teacher_pass})
    assert sc.figures["mem_peak"] == pytest.approx(max(student, teacher_pass))
    live = scored("shard:16/zero3/colocated/2", j, "topk")  # the same layout with a live teacher holds both at once
    assert live.figures["mem_peak"] == pytest.approx(sum(live.memory_terms().values()))
    # the read: b * s_c * k * (q + 4) bytes per micro-step from the node's storage, shared by its GPUs
    w, b = j.workload, 2
    read_bw = CLUSTER.storage.read_gb_per_s * 1e9 / CLUSTER.gpus_per_node
    ga = w.global_batch // (b * CLUSTER.world)
    assert t["teacher_cache_read"] == pytest.approx(ga * b * w.completion_len * w.topk * 8 / read_bw)


def test_the_cache_pass_is_amortised_over_the_epochs():
    one, two = (scored("shard:16/zero3/colocated/2", job(lmbda=0.0, epochs=e), "cached") for e in (1, 2))
    assert two.time_terms()["teacher_cache_pass"] == pytest.approx(one.time_terms()["teacher_cache_pass"] / 2)
    # with one epoch the pass costs the teacher's own forward (and the writes) once
    live = scored("shard:16/zero3/colocated/2", job(lmbda=0.0), "topk")
    assert one.time_terms()["teacher_cache_pass"] > live.time_terms()["teacher_forward"]


def test_the_search_tries_only_the_outputs_the_job_and_runtime_allow():
    on_policy = rank.search(job(), CLUSTER)
    assert {s.output for s in on_policy.ranked} <= {"logits", "topk"}  # lmbda 0.5: a cache cannot hold generated completions
    fixed = rank.search(job(teacher_output="logits"), CLUSTER)  # a job file that says logits keeps it
    assert {s.output for s in fixed.ranked} == {"logits"}
    off = rank.search(job(lmbda=0.0, epochs=8), CLUSTER)
    assert {"logits", "topk", "cached"} <= {s.output for s in off.ranked}
    assert not any(s.output == "cached" and s.strategy.disaggregated for s in off.ranked)
    only_logits = rank.search(job(lmbda=0.0), CLUSTER, runtime=load_runtime("trl-distillation"))
    assert {s.output for s in only_logits.ranked} == {"logits"}
    assert any("does not train from teacher output 'cached'" in why for why in only_logits.rejected)


def test_the_plan_file_names_the_chosen_output():
    res = rank.search(job(lmbda=0.0, epochs=8), CLUSTER)
    cached = next(s for s in res.ranked if s.output == "cached")
    plan = plans.to_plan(cached, job(lmbda=0.0, epochs=8), CLUSTER, "dgx-h100", None)
    assert plan.workload.teacher_output == "cached" and plan.workload.epochs == 8
    # a plan made from an `auto` job without a search runs the exact loss
    assert cached.strategy.to_plan(job(), CLUSTER, "dgx-h100").workload.teacher_output == "logits"


def test_the_speed_up_is_against_the_strongest_baseline_that_fits():
    def fake(sps: float, feasible: bool) -> rank.Scored:
        return rank.Scored(Strategy.parse("shard:16/zero3", CLUSTER), {"samples_per_s": sps}, feasible)

    base = {"a": fake(3.0, True), "b": fake(9.0, False), "c": fake(5.0, True), "d": None}
    assert rank.strongest(base) == "c"  # the fastest that fits, not the fastest
    assert rank.strongest({"b": fake(9.0, False)}) is None
    res = rank.search(job(), CLUSTER)
    fit = {n: s.samples_per_s for n, s in res.baselines.items() if s is not None and s.feasible}
    assert set(res.baselines) == {b.name for b in trl.BASELINES}
    assert res.strongest == max(fit, key=fit.get)
    p = plans.predicted(res.ranked[0], res.baselines[res.strongest], res.strongest)
    assert p.baseline == res.strongest and p.speedup_vs_baseline == pytest.approx(res.ranked[0].samples_per_s / fit[res.strongest])


def test_baselines_run_under_their_own_runtimes():
    res = rank.search(job(), CLUSTER)
    for b in trl.BASELINES:
        sc = res.baselines[b.name]
        assert sc.runtime == b.runtime and sc.output == b.output
    server = res.baselines["trl-server"].strategy
    assert server.disaggregated and server.teacher in ("replicate", "tp") and server.student == "zero3"
    # GKDTrainer's full-sequence logits and ten full-vocabulary buffers cost more than
    # DistillationTrainer's on the same layout
    gkd, dist = res.baselines["trl-gkd-zero3"], res.baselines["trl-distill-zero3"]
    if gkd.strategy == dist.strategy:
        assert gkd.samples_per_s <= dist.samples_per_s
    assert gkd.memory_terms()["loss_buffers"] > dist.memory_terms()["loss_buffers"]

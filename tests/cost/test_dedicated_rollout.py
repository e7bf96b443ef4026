"""Rollouts on GPUs of their own (issue 26, items 1-2): vLLM servers of the student outside the
trainer's world, their weights pushed every step, synchronous or one step ahead. Each check changes
one thing on one layout of the default job (2 x DGX H100) and compares the evaluations."""

import pytest

from planner.inputs.load import load_cluster, load_job, load_runtime
from planner.plan import Plan
from planner.search import output, plans, rank
from planner.strategy import Strategy

CL = load_cluster("dgx-h100", 2)
JOB = output.with_output(load_job(), "topk")  # a served teacher returns top-k log-probs
SERVED = "tp:2/zero2/served:8/1+vllm"


def _score(layout, job=None, runtime="kd-planner"):
    st = Strategy.parse(layout, CL)
    return rank.score([st], [None], job or JOB, CL, load_runtime(runtime))[0]


def _train(sc):
    """The trainer's side of the step: every term but the rollouts' and the weight push."""
    return sum(v for k, v in sc.time_terms().items() if k not in ("generation", "weight_sync", "rollout_wait"))


def test_grammar_plan_and_back():
    st = Strategy.parse(f"{SERVED}:dedicated:4+async", CL)
    assert (st.n_R, st.ahead, st.rollout, st.n_S, st.n_T) == (4, True, "vllm", 4, 8)
    assert Strategy.parse(str(st), CL) == st
    plan = st.to_plan(JOB, CL, "dgx-h100")
    assert plan.rollout.placement == "dedicated" and plan.rollout.ranks == [12, 13, 14, 15] and plan.schedule == "async"
    assert plan.torch_world == 4 and Strategy.from_plan(Plan(**plan.model_dump())) == st


def test_grammar_refuses_a_rollout_that_takes_every_gpu():
    with pytest.raises(Exception, match="rollout GPUs"):
        Strategy.parse(f"{SERVED}:dedicated:16", CL)


def test_synchronous_rollout_gpus_generate_the_whole_step_and_the_trainer_waits():
    """The trainer holds no engine; the rollouts are on the step's path; twice the rollout GPUs
    generate each replica's half as many sequences, in less time."""
    two, four = _score(f"{SERVED}:dedicated:2"), _score(f"{SERVED}:dedicated:4")
    for sc in (two, four):
        assert sc.figures["mem.rollout_engine"] == 0 and sc.figures["time.rollout_wait"] == 0
        assert sc.figures["time.generation"] > 0 and sc.figures["time.weight_sync"] > 0
    assert four.figures["time.generation"] < two.figures["time.generation"]


def test_one_step_ahead_exposes_only_the_rollouts_longer_than_training():
    for n in (1, 2, 4):
        sync, ahead = _score(f"{SERVED}:dedicated:{n}"), _score(f"{SERVED}:dedicated:{n}+async")
        rollout = sync.figures["time.generation"]
        assert ahead.figures["time.generation"] == 0
        assert ahead.figures["time.rollout_wait"] == pytest.approx(max(0.0, rollout - _train(ahead)), rel=1e-9, abs=1e-12)
        assert ahead.figures["step_time"] == pytest.approx(max(rollout, _train(ahead)) + ahead.figures["time.weight_sync"], rel=1e-9)
        assert ahead.samples_per_s >= sync.samples_per_s


def test_the_weight_push_crosses_the_network_when_the_layout_spans_nodes():
    one = load_cluster("dgx-h100", 1)
    near = rank.score([Strategy.parse("replicate/ddp/colocated/1+vllm:dedicated:2", one)], [None], JOB, one, load_runtime("kd-planner"))[0]
    far = _score("replicate/ddp/colocated/1+vllm:dedicated:2")
    assert far.figures["time.weight_sync"] > near.figures["time.weight_sync"]


def test_a_student_too_large_for_its_rollout_gpu_is_out_of_memory_there():
    job = JOB
    big = job.model_copy(update={"student": job.teacher})  # a 70B "student" in bf16 needs 140 GB: not one 80 GB GPU
    sc = _score(f"{SERVED}:dedicated:4", job=big)
    assert sc.figures["rollout_gpu_shortfall"] > 0 and not sc.feasible and "rollout GPUs" in sc.reason


def test_the_search_places_rollouts_and_says_why():
    """On the default job the search tries rollout GPUs of their own and both schedules; the lines
    that explain the choice name each count it tried; the top plan is not slower than any baseline."""
    res = rank.search(load_job(), CL)
    counts = {s.strategy.n_R for s in res.ranked}
    assert {0, 4, 8} <= counts  # 1 and 2 leave 15 or 14 trainer GPUs (7 or 6 beside a teacher node): the batch of 64 is not reached
    assert {s.strategy.ahead for s in res.ranked if s.strategy.n_R} == {False, True}
    why = rank.rollout_gpus_why(res)
    assert "on the trainer's" in why and "4 of their own" in why and "(this one)" in why
    assert plans.schedule_reason(res.ranked).startswith(plans.schedule(res.ranked[0]))
    assert "trl-async" in res.baselines and res.baselines["trl-async"].strategy.n_R > 0
    fit = [b for b in res.baselines.values() if b is not None and b.feasible]
    assert res.ranked[0].samples_per_s >= max(b.samples_per_s for b in fit)


@pytest.mark.parametrize("placement, schedule", [("colocated", "auto"), ("dedicated", "auto"), ("auto", "async"), ("dedicated", "sync")])
def test_a_job_fixes_where_the_rollouts_run_and_their_schedule(placement, schedule):
    job = load_job()
    job = job.model_copy(update={"workload": job.workload.model_copy(update={"rollout_placement": placement, "schedule": schedule})})
    ranked = rank.search(job, CL).ranked
    assert ranked
    for sc in ranked:
        assert placement == "auto" or bool(sc.strategy.n_R) == (placement == "dedicated")
        assert schedule == "auto" or sc.strategy.ahead == (schedule == "async")


def test_async_beside_colocated_rollouts_is_refused_in_the_job():
    from planner.inputs.workload import Workload

    with pytest.raises(ValueError, match="rollout_placement: dedicated"):
        Workload(**(load_job().workload.model_dump() | {"rollout_placement": "colocated", "schedule": "async"}))

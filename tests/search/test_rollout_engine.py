"""The search tries each rollout engine the runtime runs (workload.rollout_engine can fix one)."""

from planner.inputs.load import load_cluster, load_job
from planner.search import rank
from planner.strategy import Strategy


def test_vllm_rollout_wins_on_gpus_and_a_fixed_engine_is_respected():
    job, cl = load_job(), load_cluster("dgx-h100", nodes=2)
    res = rank.search(job, cl)
    assert res.ranked[0].strategy.rollout == "vllm"
    plan = res.ranked[0].strategy.to_plan(job, cl, "dgx-h100")
    assert plan.rollout.engine == "vllm" and Strategy.from_plan(plan) == res.ranked[0].strategy
    fixed = job.model_copy(update={"workload": job.workload.model_copy(update={"rollout_engine": "hf-eager"})})
    eager = rank.search(fixed, cl)
    assert {s.strategy.rollout for s in eager.ranked} == {"hf-eager"}
    assert res.ranked[0].samples_per_s > 2 * eager.ranked[0].samples_per_s


def test_engine_spelling_round_trips():
    cl = load_cluster("dgx-h100")
    st = Strategy.parse("shard:16/zero3/colocated/4+vllm", cl)
    assert st.rollout == "vllm" and str(st) == "shard:16/zero3/colocated/4+vllm"

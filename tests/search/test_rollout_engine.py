"""The search tries each rollout engine the runtime runs (workload.rollout_engine can fix one)."""

from planner.inputs.load import load_cluster, load_job
from planner.search import plans, rank
from planner.strategy import Strategy


def test_vllm_rollout_wins_on_gpus_and_a_fixed_engine_is_respected():
    job, cl = load_job(), load_cluster("dgx-h100", nodes=2)
    res = rank.search(job, cl)
    assert res.ranked[0].strategy.rollout == "vllm"
    plan = plans.to_plan(res.ranked[0], job, cl, "dgx-h100", None)  # with the plan's teacher output
    assert plan.rollout.engine == "vllm" and Strategy.from_plan(plan) == res.ranked[0].strategy
    fixed = job.model_copy(update={"workload": job.workload.model_copy(update={"rollout_engine": "hf-eager"})})
    eager = rank.search(fixed, cl)
    assert {s.strategy.rollout for s in eager.ranked} == {"hf-eager"}
    assert res.ranked[0].samples_per_s > 2 * eager.ranked[0].samples_per_s


def test_engine_spelling_round_trips():
    cl = load_cluster("dgx-h100")
    st = Strategy.parse("shard:16/zero3/colocated/4+vllm", cl)
    assert st.rollout == "vllm" and str(st) == "shard:16/zero3/colocated/4+vllm"


def test_the_search_serves_the_teacher_where_the_runtime_can_and_the_job_lets_it():
    """The default job on 2 DGX H100 with the teacher served (workload.teacher_serving): behind vLLM
    servers on 8 GPUs of its own (top-k), vLLM rollouts beside the trainer; the plan file says so,
    trainer ranks first; a job that fixes the teacher in-process gets none, and a served teacher is
    never paired with full logits."""
    job, cl = load_job(), load_cluster("dgx-h100", nodes=2)
    res = rank.search(job.model_copy(update={"workload": job.workload.model_copy(update={"teacher_serving": "vllm-server"})}), cl)
    first = res.ranked[0]
    assert first.strategy.served and first.output == "topk" and str(first.strategy).startswith(first.strategy.teacher_part + "/")
    plan = plans.to_plan(first, job, cl, "dgx-h100", None)
    assert plan.teacher.engine == "vllm-server" and plan.student.ranks == list(range(8)) and plan.teacher.ranks == list(range(8, 16))
    assert Strategy.from_plan(plan) == first.strategy and Strategy.parse(str(first.strategy), cl) == first.strategy
    default = rank.search(job, cl)
    assert any(s.strategy.served for s in default.ranked) and not any(s.strategy.served and s.output != "topk" for s in default.ranked)
    fixed = job.model_copy(update={"workload": job.workload.model_copy(update={"teacher_serving": "in-process"})})
    assert not any(s.strategy.served for s in rank.search(fixed, cl).ranked)
    served = job.model_copy(update={"workload": job.workload.model_copy(update={"teacher_serving": "vllm-server"})})
    assert all(s.strategy.served for s in rank.search(served, cl).ranked)
    # an in-process teacher on ranks of its own is never paired with the executor's vLLM rollouts (its launcher spans the world)
    assert not any(s.strategy.disaggregated and not s.strategy.served and s.strategy.rollout == "vllm" for s in default.ranked)

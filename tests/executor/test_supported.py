"""The executor's capability check reads the plan through the one strategy type (no processes)."""

import pytest

pytest.importorskip("torch")

from planner.executor.groups import check_supported  # noqa: E402
from planner.inputs.errors import InputError  # noqa: E402
from planner.inputs.load import load_cluster, load_job  # noqa: E402
from planner.plan import Plan  # noqa: E402
from planner.strategy import Strategy  # noqa: E402

JOB, CLUSTER = load_job("tiny-cpu"), load_cluster("cpu-local")


def plan(text: str, **teacher_shape) -> Plan:
    data = Strategy.parse(text, CLUSTER).to_plan(JOB, CLUSTER, "cpu-local").model_dump(mode="json")
    data["teacher"]["shape"].update(teacher_shape)
    return Plan(**data)


@pytest.mark.parametrize("text", ["replicate/ddp/colocated/2", "shard:2/zero3/colocated/4", "pipeline:2/zero2/colocated/1",
                                  "replicate/ddp/disaggregated:1/4", "shard:1/ddp/disaggregated:1/8", "tp:2/ddp/colocated/2"])
def test_what_the_executor_runs_passes(text):
    check_supported(plan(text))


@pytest.mark.parametrize("text, shape, words", [
    ("tp:2/ddp/colocated/2", {"num_heads": 4, "num_kv_heads": 1}, "strategy tp:2/ddp/colocated/2: tensor-parallel degree does not divide the teacher heads"),
    ("tp:2/ddp/colocated/2", {"num_experts": 4, "experts_per_token": 2, "expert_ffn": 128},
     "teacher tp:2: the executor's tensor parallelism splits dense layers only"),
    ("pipeline:2/ddp/colocated/2", {"num_layers": 1}, "strategy pipeline:2/ddp/colocated/2: pipeline degree exceeds teacher layers"),
])
def test_what_it_does_not_run_is_named_in_the_grammar(text, shape, words):
    with pytest.raises(InputError, match=words):
        check_supported(plan(text, **shape))


@pytest.mark.parametrize("topology", ["cpu-local", "cpu-tight"])
def test_every_plan_the_search_ranks_under_the_executors_runtime_runs(topology):
    """`recommend` (runtime kd-planner) only ranks plans the executor accepts: the runtime's
    capability lists (runtimes/kd-planner.yaml) agree with `check_supported`."""
    from planner.search import rank

    cl = load_cluster(topology)
    res = rank.search(JOB, cl)
    assert res.ranked
    for sc in res.ranked:
        check_supported(sc.strategy.to_plan(JOB, cl, topology))
    assert any(sc.strategy.teacher == "tp" for sc in res.ranked)  # a tp teacher runs, colocated
    assert not any("tp teacher" in why for why in res.rejected)


@pytest.mark.parametrize("text", ["replicate/ddp/colocated/2", "shard:2/zero3/colocated/4", "pipeline:2/zero2/colocated/1",
                                  "replicate/ddp/disaggregated:1/4", "tp:2/ddp/colocated/2"])
@pytest.mark.parametrize("output", ["topk", "cached"])
def test_topk_and_cached_teacher_output_run(text, output):
    p = plan(text)
    check_supported(p.model_copy(update={"workload": p.workload.model_copy(update={"teacher_output": output, "topk": 16, "lmbda": 0.0})}))


def test_topk_beyond_the_vocabulary_is_refused():
    p = plan("replicate/ddp/colocated/2")
    with pytest.raises(InputError, match=r"workload.topk: k = 100000 exceeds the vocabulary"):
        check_supported(p.model_copy(update={"workload": p.workload.model_copy(update={"teacher_output": "topk", "topk": 100_000})}))


def test_vllm_rollouts_beside_an_in_process_teacher_on_ranks_of_its_own_are_refused_in_one_line():
    """vLLM's external launcher builds its groups over the whole torch world: a teacher rank that
    starts no engine would hang the student's (the search never pairs them: `beside_teacher_ranks`)."""
    on = JOB.model_copy(update={"workload": JOB.workload.model_copy(update={"lmbda": 1.0})})
    data = Strategy.parse("replicate/ddp/disaggregated:1/4+vllm", CLUSTER).to_plan(on, CLUSTER, "cpu-local").model_dump(mode="json")
    with pytest.raises(InputError, match="rollout.engine vllm beside an in-process teacher on ranks of its own is not implemented"):
        check_supported(Plan(**data))
    data["rollout"]["engine"] = "hf-eager"
    check_supported(Plan(**data))


def dedicated(text: str, schedule: str, endpoints: list[str]) -> Plan:
    """The strategy's plan, on-policy, with its rollout on one more GPU of its own (a vLLM server of the student)."""
    on = JOB.model_copy(update={"workload": JOB.workload.model_copy(update={"lmbda": 1.0})})
    data = Strategy.parse(text, CLUSTER).to_plan(on, CLUSTER, "cpu-local").model_dump(mode="json")
    world = data["nodes"] * data["gpus_per_node"]
    data.update(gpus_per_node=data["gpus_per_node"] + 1, schedule=schedule,
                rollout={"engine": "vllm", "placement": "dedicated", "ranks": [world], "endpoints": endpoints})
    return Plan(**data)


@pytest.mark.parametrize("text", ["replicate/ddp/colocated/2", "replicate/zero3/colocated/2"])
@pytest.mark.parametrize("schedule", ["sync", "async"])
def test_dedicated_rollout_runs_sync_and_async_with_any_student(text, schedule):
    """Dedicated servers generate over HTTP: the async thread makes no collective, whatever the student's split."""
    p = dedicated(text, schedule, ["http://127.0.0.1:8000"])
    check_supported(p)
    assert p.torch_world == p.world - 1  # the rollout GPU is the server's, not torchrun's


def test_dedicated_rollout_without_servers_and_colocated_vllm_async_are_refused_in_one_line():
    with pytest.raises(InputError, match=r"rollout.endpoints: dedicated rollout needs its vLLM servers' URLs") as e:
        check_supported(dedicated("replicate/ddp/colocated/2", "sync", []))
    assert len(e.value.lines) == 1
    p = dedicated("replicate/ddp/colocated/2", "async", ["http://127.0.0.1:8000"]).model_dump(mode="json")
    p.update(gpus_per_node=2, rollout={"engine": "vllm"})
    with pytest.raises(InputError, match=r"schedule: async is implemented for dedicated rollout servers.*not colocated rollout.engine vllm"):
        check_supported(Plan(**p))

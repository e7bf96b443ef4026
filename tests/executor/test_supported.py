"""The executor's capability check reads the plan through the one strategy type (no processes)."""

import pytest

pytest.importorskip("torch")

from planner.executor.groups import check_supported  # noqa: E402
from planner.inputs.errors import InputError  # noqa: E402
from planner.inputs.load import load_cluster, load_job  # noqa: E402
from planner.plan import Plan  # noqa: E402
from planner.search.strategy import Strategy  # noqa: E402

JOB, CLUSTER = load_job("tiny-cpu"), load_cluster("cpu-local")


def plan(text: str, **teacher_shape) -> Plan:
    data = Strategy.parse(text, CLUSTER).to_plan(JOB, CLUSTER, "cpu-local").model_dump(mode="json")
    data["teacher"]["shape"].update(teacher_shape)
    return Plan(**data)


@pytest.mark.parametrize("text", ["replicate/ddp/colocated/2", "shard:2/zero3/colocated/4", "pipeline:2/zero2/colocated/1",
                                  "replicate/ddp/disaggregated:1/4", "shard:1/ddp/disaggregated:1/8"])
def test_what_the_executor_runs_passes(text):
    check_supported(plan(text))


@pytest.mark.parametrize("text, shape, words", [
    ("tp:2/ddp/colocated/2", {}, "teacher tp:2: tensor parallelism is not implemented"),
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
    assert any("does not run a tp teacher" in why for why in res.rejected)

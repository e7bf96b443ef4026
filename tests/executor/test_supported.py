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

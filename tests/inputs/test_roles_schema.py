"""The plan's roles: a served teacher and a rollout engine are plan fields with rules of their own,
and plans written before roles keep their meaning and fingerprint."""

from pathlib import Path

import pytest
from pydantic import ValidationError

from planner.plan import Plan, fingerprint, load_plan

ROOT = Path(__file__).resolve().parents[2]


def _data(example: str = "tiny-disaggregated") -> dict:
    return load_plan(ROOT / "examples" / f"{example}.yaml").model_dump(mode="json")


def _served(data: dict) -> dict:
    """The disaggregated example with its teacher behind a vLLM server on the last GPU."""
    world = data["nodes"] * data["gpus_per_node"]
    n_T = len(data["teacher"]["ranks"])
    data["teacher"].update(engine="vllm-server", strategy="replicate", ranks=list(range(world - n_T, world)), endpoints=["http://127.0.0.1:8000"])
    data["student"]["ranks"] = list(range(world - n_T))
    data["workload"]["teacher_output"] = "topk"
    return data


def test_old_plans_keep_their_fingerprint_and_defaults():
    data = _data()
    plan = Plan(**data)
    assert (plan.rollout.engine, plan.rollout.placement, plan.schedule, plan.teacher.engine) == ("hf-eager", "colocated", "sync", "pytorch")
    assert plan.torch_world == plan.world
    old = dict(data)
    for key in ("rollout", "schedule"):
        old.pop(key)
    old["teacher"] = {k: v for k, v in data["teacher"].items() if k not in ("engine", "endpoints")}
    old["workload"] = {k: v for k, v in data["workload"].items() if k not in ("rollout_engine", "teacher_serving")}
    assert fingerprint(Plan(**old)) == fingerprint(plan)


def test_a_served_teacher_is_outside_the_trainers_world():
    plan = Plan(**_served(_data()))
    assert plan.teacher.served and plan.torch_ranks == plan.student.ranks and plan.torch_world == len(plan.student.ranks)
    moved = _served(_data())
    moved["teacher"]["endpoints"] = ["http://10.0.0.1:9000"]
    assert fingerprint(Plan(**moved)) == fingerprint(plan)  # where it listens changes nothing it computes


@pytest.mark.parametrize("change, words", [
    (lambda d: d["workload"].update(teacher_output="logits"), "top-k"),
    (lambda d: d["teacher"].update(strategy="pipeline", pp=len(d["teacher"]["ranks"])), "replicate or tp"),
    (lambda d: d.update(schedule="async") or d["workload"].update(lmbda=0.0), "lmbda 0"),
    (lambda d: d.update(rollout={"engine": "hf-eager", "placement": "dedicated", "ranks": [0]}), "engine: vllm"),
])
def test_served_and_rollout_rules(change, words):
    data = _served(_data())
    change(data)
    with pytest.raises(ValidationError, match=words):
        Plan(**data)


def test_served_gpus_follow_the_trainers():
    data = _served(_data())
    data["teacher"]["ranks"], data["student"]["ranks"] = data["student"]["ranks"][:len(data["teacher"]["ranks"])], data["teacher"]["ranks"] + data["student"]["ranks"][len(data["teacher"]["ranks"]):]
    with pytest.raises(ValidationError, match="must come first"):
        Plan(**data)

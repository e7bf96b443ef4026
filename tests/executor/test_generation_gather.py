"""The plan's choice of how a ZeRO-3 student is gathered for generation (`student.gather`), on 2 gloo
processes: `once` and `per_step` sample the same tokens and train to the same losses; per step holds
at most two decoder layers unsharded where once holds every layer; the training loop gathers as
the plan says."""

import json

from executor_helpers import ROOT, tiny_plan, torchrun

from planner.inputs.yamlio import dump_yaml
from planner.plan import load_plan

STEPS = 2


def _plan(tmp, gather: str):
    path = tiny_plan(tmp, "shard-zero3", f"z3-{gather}", lmbda=1.0)  # every micro-step generates
    data = load_plan(path).model_dump(mode="json")
    data["student"]["gather"] = gather
    path.write_text(dump_yaml(data))
    return path


def test_once_and_per_step_generate_and_train_alike(tmp_path):
    plans = {g: _plan(tmp_path, g) for g in ("once", "per_step")}
    jobs = [{"plan": str(p), "metrics_out": str(tmp_path / f"{g}.json"), "steps": STEPS} for g, p in plans.items()]
    (tmp_path / "jobs.json").write_text(json.dumps(jobs))
    torchrun([str(ROOT / "tests" / "executor" / "gather_modes.py"), str(plans["once"]), str(tmp_path / "probe.json"),
              str(tmp_path / "jobs.json")], timeout=300)
    probe = json.loads((tmp_path / "probe.json").read_text())
    layers = probe["layer_bytes"]
    assert len(layers) == 4 and min(layers) > 0
    for rank in probe["ranks"]:
        once, step = rank["once"], rank["per_step"]
        assert once["tokens"] == step["tokens"]
        assert once["peak_unsharded_bytes"] == sum(layers)  # every layer gathered for the whole generation
        assert 0 < step["peak_unsharded_bytes"] <= 2 * max(layers)  # the current layer (and a prefetched one)
        assert once["unsharded_after"] == step["unsharded_after"] == 0  # sharded again for training
    assert probe["ranks"][0]["once"]["tokens"] != probe["ranks"][1]["once"]["tokens"]  # each rank its own samples
    assert probe["gathers"] == {str(plans["once"]): ["once"], str(plans["per_step"]): ["per_step"]}
    got = {g: json.loads((tmp_path / f"{g}.json").read_text()) for g in plans}
    assert got["once"]["on_policy"] == got["per_step"]["on_policy"] and all(got["once"]["on_policy"])
    for a, b in zip(got["once"]["loss"], got["per_step"]["loss"], strict=True):
        assert abs(a - b) < 1e-6, (got["once"]["loss"], got["per_step"]["loss"])
    for a, b in zip(got["once"]["grad_norm"], got["per_step"]["grad_norm"], strict=True):
        assert abs(a - b) <= 1e-6 * b

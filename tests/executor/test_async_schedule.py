"""schedule: async: rollouts one step ahead in a background thread (planner/executor/rollout/ahead.py)."""

import math

import yaml
from executor_helpers import run_plan, tiny_plan


def test_async_run_is_one_step_stale(tmp_path):
    path = tiny_plan(tmp_path, "replicate-ddp", "async", lmbda=1.0)
    data = yaml.safe_load(path.read_text())
    data["schedule"] = "async"
    path.write_text(yaml.safe_dump(data))
    m = run_plan(path, tmp_path / "m.json", 4)
    assert m["schedule"] == "async" and m["end_step"] == 4 and all(math.isfinite(x) for x in m["loss"]), m["loss"]
    assert m["rollout_version"] == [0, 0, 1, 2] and m["staleness"] == 1  # step 0: initial weights; step n+1: step n's
    assert m["phase_s"]["rollout_overlapped"] > 0

"""Each teacher strategy gives the single-process reference's per-step loss (within 1e-5) and
gradient norm (relative 1e-5) over 5 steps on 2 CPU processes with the tiny models."""

import pytest

from planner.executor.loop import RunOptions
from planner.executor.reference import reference_losses
from planner.plan import load_plan

from executor_helpers import run_plan, tiny_plan

STEPS = 5


@pytest.mark.parametrize("example, workload", [
    ("replicate-ddp", {}),
    ("shard-zero3", {}),
    ("pipeline-ddp", {}),
    ("disaggregated", {}),
    ("replicate-ddp", {"lmbda": 0.5}),  # on-policy: the student's samples match too
    ("shard-zero3", {"lmbda": 0.5}),  # an FSDP2 student gathered once per generation samples the same
])
def test_matches_single_process(tmp_path, example, workload):
    plan = tiny_plan(tmp_path, example, **workload)
    got = run_plan(plan, tmp_path / "metrics.json", STEPS)
    want_loss, want_norm = reference_losses(load_plan(plan), RunOptions(steps=STEPS, random_init=True))
    assert len(got["loss"]) == STEPS
    for step, (a, b) in enumerate(zip(got["loss"], want_loss)):
        assert abs(a - b) < 1e-5, f"step {step}: loss {a} vs reference {b}"
    for step, (a, b) in enumerate(zip(got["grad_norm"], want_norm)):
        assert abs(a - b) <= 1e-5 * abs(b), f"step {step}: grad norm {a} vs reference {b}"
    if workload.get("lmbda"):
        assert sum(got["on_policy"]) > 0

"""Each teacher strategy gives the single-process reference's per-step loss (within 1e-5) and
gradient norm (relative 1e-5) over 5 steps on 2 CPU processes with the tiny models."""

import json
from pathlib import Path

import pytest

from planner.executor.loop import RunOptions
from planner.executor.reference import reference_losses
from planner.plan import load_plan

from executor_helpers import ROOT, tiny_plan, torchrun

STEPS = 5
CASES = [
    ("replicate-ddp", {}),
    ("shard-zero3", {}),
    ("pipeline-ddp", {}),
    ("disaggregated", {}),
    ("replicate-ddp", {"lmbda": 0.5}),  # on-policy: the student's samples match too
    ("shard-zero3", {"lmbda": 0.5}),  # an FSDP2 student gathered once per generation samples the same
]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> list[tuple[Path, dict]]:
    """Every case's plan and metrics, all run in one torchrun launch (run_many.py: the workers start once)."""
    tmp = tmp_path_factory.mktemp("correctness")
    jobs = [{"plan": str(tiny_plan(tmp, example, f"case-{i}", **workload)), "metrics_out": str(tmp / f"case-{i}.json"), "steps": STEPS}
            for i, (example, workload) in enumerate(CASES)]
    (tmp / "jobs.json").write_text(json.dumps(jobs))
    torchrun([str(ROOT / "tests" / "executor" / "run_many.py"), str(tmp / "jobs.json")], timeout=600)
    return [(Path(j["plan"]), json.loads(Path(j["metrics_out"]).read_text())) for j in jobs]


@pytest.mark.parametrize("example, workload", CASES)
def test_matches_single_process(runs, example, workload):
    plan, got = runs[CASES.index((example, workload))]
    want_loss, want_norm = reference_losses(load_plan(plan), RunOptions(steps=STEPS, random_init=True))
    assert len(got["loss"]) == STEPS
    for step, (a, b) in enumerate(zip(got["loss"], want_loss)):
        assert abs(a - b) < 1e-5, f"step {step}: loss {a} vs reference {b}"
    for step, (a, b) in enumerate(zip(got["grad_norm"], want_norm)):
        assert abs(a - b) <= 1e-5 * abs(b), f"step {step}: grad norm {a} vs reference {b}"
    if workload.get("lmbda"):
        assert sum(got["on_policy"]) > 0

"""Each teacher strategy gives the single-process reference's per-step loss (within 1e-5) and
gradient norm (relative 1e-5) over 5 steps on 2 CPU processes with the tiny models."""

import json
from pathlib import Path

import pytest

from executor_helpers import ROOT, assert_matches_reference, tiny_plan, torchrun

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
    assert_matches_reference(plan, got, STEPS)
    if workload.get("lmbda"):
        assert sum(got["on_policy"]) > 0

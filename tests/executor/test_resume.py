"""Checkpoints: rank 1 dies once mid-run under `torchrun --max-restarts 1`; the restarted job resumes
from the last complete checkpoint and ends at the requested step with the reference's losses."""

import pytest

from executor_helpers import run_plan, tiny_plan

from planner.executor import checkpoint
from planner.executor.loop import RunOptions
from planner.executor.reference import reference_losses
from planner.plan import load_plan


@pytest.mark.parametrize("example, student", [("replicate-ddp", None), ("replicate-ddp", "zero1"), ("shard-zero3", None)])
def test_kill_and_resume(tmp_path, example, student):
    plan = tiny_plan(tmp_path, example, student=student)
    ckpt, marker = tmp_path / "ckpt", tmp_path / "died"
    env = {"PLANNER_EXECUTOR_FAIL_AT_STEP": "5", "PLANNER_EXECUTOR_FAIL_MARKER": str(marker)}
    m = run_plan(plan, tmp_path / "m.json", 6, "--checkpoint-dir", str(ckpt), "--checkpoint-every", "2", env=env, max_restarts=1)
    assert marker.exists(), "rank 1 never died: the test hook did not fire"
    assert (m["start_step"], m["end_step"]) == (4, 6)
    assert sorted(p.name for p in ckpt.iterdir()) == ["step-00000004", "step-00000006"]  # the two newest, no temp folders
    want, _ = reference_losses(load_plan(plan), RunOptions(steps=6))
    assert all(abs(a - b) < 1e-5 for a, b in zip(m["loss"], want[4:])), (m["loss"], want[4:])


def test_incomplete_checkpoints_are_ignored(tmp_path):
    for name in ("step-00000002", "step-00000004.tmp", "step-00000006"):
        (tmp_path / name).mkdir()
    (tmp_path / "step-00000002" / ".metadata").write_text("x")
    (tmp_path / "step-00000004.tmp" / ".metadata").write_text("x")  # written, never renamed
    assert checkpoint.latest(tmp_path) == (2, tmp_path / "step-00000002")  # step 6 has no .metadata
    assert checkpoint.latest(tmp_path / "absent") is None

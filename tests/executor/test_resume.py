"""Checkpoints: rank 1 dies once mid-run under `torchrun --max-restarts 1`; the restarted job resumes
from the last complete checkpoint and ends at the requested step with the reference's losses.
Stray folders do not count for retention, another run's checkpoints are refused, and a truncated
newest checkpoint falls back to the one before it."""

import json

import pytest

from executor_helpers import run_plan, tiny_plan, torchrun

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
    assert sorted(p.name for p in ckpt.iterdir() if p.name != ".kd-planner.lock") == ["step-00000004", "step-00000006"]  # the two newest, no temp folders
    want, _ = reference_losses(load_plan(plan), RunOptions(steps=6, random_init=True))
    assert all(abs(a - b) < 1e-5 for a, b in zip(m["loss"], want[4:])), (m["loss"], want[4:])


def test_incomplete_checkpoints_are_ignored(tmp_path):
    for name in ("step-00000002", "step-00000004.tmp", "step-00000006"):
        (tmp_path / name).mkdir()
    (tmp_path / "step-00000002" / ".metadata").write_text("x")
    (tmp_path / "step-00000004.tmp" / ".metadata").write_text("x")  # written, never renamed
    assert checkpoint.latest(tmp_path) == (2, tmp_path / "step-00000002")  # step 6 has no .metadata
    assert checkpoint.latest(tmp_path / "absent") is None


def test_retention_counts_only_complete_checkpoints(tmp_path):
    for step in (2, 4, 6, 8, 10):
        (tmp_path / f"step-{step:08d}").mkdir()
    for step in (2, 4, 6):
        (tmp_path / f"step-{step:08d}" / ".metadata").write_text("x")
        (tmp_path / f"step-{step:08d}" / checkpoint.FINGERPRINT).write_text("{}")  # kd-planner's own: only those are pruned
    checkpoint.prune(tmp_path)  # step 8 and 10 are stray empty folders: they must not push 4 and 6 out
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != ".kd-planner.lock") == ["step-00000004", "step-00000006", "step-00000008", "step-00000010"]


def _truncate(folder):
    for f in sorted(folder.glob("*.distcp")):
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def test_fingerprint_and_corrupt_fallback(tmp_path):
    plan = tiny_plan(tmp_path, "replicate-ddp")
    ckpt = tmp_path / "ckpt"
    args = ["-m", "planner", "run", str(plan), "--no-progress", "--checkpoint-dir", str(ckpt), "--checkpoint-every", "2", "--random-init"]
    run_plan(plan, tmp_path / "m1.json", 4, *args[5:])
    for stray in ("step-00000010", "step-00000012"):  # newer, empty: not checkpoints
        (ckpt / stray).mkdir()

    # another run's checkpoints: refused in one line, before any training
    res = torchrun(args + ["--steps", "6", "--seed", "1"], check=False)
    assert res.returncode != 0
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert lines and "step-00000004 was written by another run (seed is 0 there, 1 now)" in lines[0], res.stderr[-3000:]

    # a truncated newest checkpoint: named, and the run resumes from the one before it
    _truncate(ckpt / "step-00000004")
    res = torchrun(args + ["--steps", "6", "--metrics-out", str(tmp_path / "m2.json")])
    assert "step-00000004 is damaged" in res.stderr, res.stderr[-3000:]
    m = json.loads((tmp_path / "m2.json").read_text())
    assert (m["start_step"], m["end_step"]) == (2, 6)
    want, _ = reference_losses(load_plan(plan), RunOptions(steps=6, random_init=True))
    assert all(abs(a - b) < 1e-5 for a, b in zip(m["loss"], want[2:])), (m["loss"], want[2:])
    assert sorted(p.name for p in ckpt.iterdir() if p.name != ".kd-planner.lock") == ["step-00000004", "step-00000006", "step-00000010", "step-00000012"]

    # nothing loads: a clear stop, not a silent start from step 0
    for step in (4, 6):
        _truncate(ckpt / f"step-{step:08d}")
    res = torchrun(args + ["--steps", "8"], check=False)
    assert res.returncode != 0
    assert any(ln.startswith("error:") and "no checkpoint in" in ln and "loads" in ln for ln in res.stderr.splitlines()), res.stderr[-3000:]


def test_fingerprint_names_the_teacher_output(tmp_path):
    """A top-k run's checkpoint does not resume as a full-logits run (or with another k), while a
    full-logits fingerprint has no teacher_output key, as before the field existed."""
    from transformers import PreTrainedTokenizerFast

    from planner.executor.checkpoint import _differences, fingerprint
    from tokenizers import Tokenizer, models

    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"[UNK]": 0, "a": 1}, unk_token="[UNK]")))
    plan = load_plan(tiny_plan(tmp_path, "replicate-ddp"))
    full = fingerprint(plan, 0, tok)
    assert "teacher_output" not in full
    topk = fingerprint(plan.model_copy(update={"workload": plan.workload.model_copy(update={"teacher_output": "topk", "topk": 8})}), 0, tok)
    k4 = fingerprint(plan.model_copy(update={"workload": plan.workload.model_copy(update={"teacher_output": "topk", "topk": 4})}), 0, tok)
    assert _differences(topk, full) == ['teacher_output is {"kind": "topk", "k": 8} there, null now']
    assert _differences(topk, k4) == ["teacher_output.k is 8 there, 4 now"]

"""Every teacher x student pair the executor implements runs 2 steps on 2 gloo processes (on-policy
half the time) and writes finite losses; bad plans fail as one line, exit 1."""

import json
import math
from pathlib import Path

import pytest
from executor_helpers import ROOT, tiny_plan, torchrun

from planner.plan import fingerprint, load_plan

TEACHERS = {"replicate": "replicate-ddp", "shard": "shard-zero3", "pipeline": "pipeline-ddp", "disaggregated": "disaggregated"}
STUDENTS = ("ddp", "zero1", "zero2", "zero3")


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> dict[str, tuple[Path, dict]]:
    """Every pair's plan and metrics, by name (teacher-student), all run in one torchrun launch (run_many.py)."""
    tmp = tmp_path_factory.mktemp("pairs")
    jobs = []
    for teacher, example in TEACHERS.items():
        for student in STUDENTS:
            name = f"{teacher}-{student}"
            plan = tiny_plan(tmp, example, name, student=student, lmbda=0.5)
            jobs.append({"plan": str(plan), "metrics_out": str(tmp / f"{name}.json"), "steps": 2})
    (tmp / "jobs.json").write_text(json.dumps(jobs))
    torchrun([str(ROOT / "tests" / "executor" / "run_many.py"), str(tmp / "jobs.json")], timeout=240)
    return {Path(j["plan"]).stem: (Path(j["plan"]), json.loads(Path(j["metrics_out"]).read_text())) for j in jobs}


def test_all_pairs_write_finite_losses(pairs):
    assert len(pairs) == len(TEACHERS) * len(STUDENTS)
    for name, (_, m) in pairs.items():
        assert len(m["loss"]) == 2 and all(math.isfinite(x) and x > 0 for x in m["loss"]), name
        assert m["samples_per_s"] > 0 and m["versions"]["torch"]
        mem = m["peak_memory_bytes"]
        student_ranks = [r for r, role in m["roles"].items() if role != "teacher"]
        assert all(mem[r]["student_params"] > 0 and mem[r]["student_grads"] > 0 and mem[r]["peak_rss"] > 0 for r in student_ranks)


def test_sharded_student_holds_half(pairs):
    """zero3 holds half the parameters per rank, and its optimizer state; the sharded teacher half its weights
    (read from the pairs' runs: a replicated teacher with a DDP student, a sharded one with a ZeRO-3 student)."""
    plan, metrics = pairs["replicate-ddp"]
    # the metrics name the plan that ran; the plan's predictions are not copied (validate recomputes them)
    assert metrics["plan_fingerprint"] == fingerprint(load_plan(plan)) and "predicted" not in metrics
    ddp = metrics["peak_memory_bytes"]["0"]
    z3 = pairs["shard-zero3"][1]["peak_memory_bytes"]["0"]
    assert z3["student_params"] * 2 == ddp["student_params"]
    assert z3["teacher_params"] * 2 == ddp["teacher_params"]
    # AdamW keeps a 4-byte `step` per parameter tensor on every rank: not sharded
    assert abs(z3["student_optimizer"] * 2 - ddp["student_optimizer"]) <= 4 * 40


def test_bad_plan_is_one_line(tmp_path, runner):
    from planner.cli import app

    res = runner.invoke(app, ["run", str(tmp_path / "missing.yaml")])
    assert res.exit_code == 1 and "Traceback" not in res.output
    bad = tiny_plan(tmp_path, "replicate-ddp", "bad")
    bad.write_text(bad.read_text().replace("micro_batch: 2", "micro_batch: 3"))
    res = runner.invoke(app, ["run", str(bad)])
    assert res.exit_code == 1 and "global_batch" in res.output

"""Every teacher x student pair the executor implements runs 2 steps on 2 gloo processes (on-policy
half the time) and writes finite losses; bad plans fail as one line, exit 1."""

import json
import math

from executor_helpers import ROOT, run_plan, tiny_plan, torchrun

from planner.plan import fingerprint, load_plan

TEACHERS = {"replicate": "replicate-ddp", "shard": "shard-zero3", "pipeline": "pipeline-ddp", "disaggregated": "disaggregated"}
STUDENTS = ("ddp", "zero1", "zero2", "zero3")


def test_all_pairs_write_finite_losses(tmp_path):
    jobs = []
    for teacher, example in TEACHERS.items():
        for student in STUDENTS:
            name = f"{teacher}-{student}"
            plan = tiny_plan(tmp_path, example, name, student=student, lmbda=0.5)
            jobs.append({"plan": str(plan), "metrics_out": str(tmp_path / f"{name}.json"), "steps": 2})
    (tmp_path / "jobs.json").write_text(json.dumps(jobs))
    torchrun([str(ROOT / "tests" / "executor" / "run_many.py"), str(tmp_path / "jobs.json")], timeout=240)
    for job in jobs:
        m = json.loads(open(job["metrics_out"]).read())
        assert len(m["loss"]) == 2 and all(math.isfinite(x) and x > 0 for x in m["loss"]), job["plan"]
        assert m["samples_per_s"] > 0 and m["versions"]["torch"]
        mem = m["peak_memory_bytes"]
        student_ranks = [r for r, role in m["roles"].items() if role != "teacher"]
        assert all(mem[r]["student_params"] > 0 and mem[r]["student_grads"] > 0 and mem[r]["peak_rss"] > 0 for r in student_ranks)


def test_sharded_student_holds_half(tmp_path):
    """zero3 holds half the parameters per rank, and its optimizer state; the sharded teacher half its weights."""
    plan = tiny_plan(tmp_path, "replicate-ddp")
    metrics = run_plan(plan, tmp_path / "ddp.json", 1)
    # the metrics name the plan that ran; the plan's predictions are not copied (validate recomputes them)
    assert metrics["plan_fingerprint"] == fingerprint(load_plan(plan)) and "predicted" not in metrics
    ddp = metrics["peak_memory_bytes"]["0"]
    z3 = run_plan(tiny_plan(tmp_path, "shard-zero3"), tmp_path / "z3.json", 1)["peak_memory_bytes"]["0"]
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

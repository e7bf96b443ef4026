"""`planner validate` compares the cost model's figures with the executor's metrics."""

import json

import pytest

from planner import validate
from planner.cli import app
from planner.inputs.load import load_cluster
from planner.plan import fingerprint, load_plan

PLAN = "examples/tiny-replicate-ddp.yaml"


def fake_metrics(plan, step_s, state_scale=1.0):
    pred = validate.predict(plan, load_cluster(plan.cluster)).figures
    mem = {"student_params": pred["mem.student_weights"] * state_scale, "student_grads": pred["mem.student_grads"],
           "student_optimizer": pred["mem.student_optimizer"], "teacher_params": pred["mem.teacher_weights"], "peak_rss": 4e8}
    return {"plan_fingerprint": fingerprint(plan), "step_times_s": [9.0, step_s, step_s, step_s], "warmup_steps": 1, "samples_per_s": 8 / step_s,
            "device": "cpu", "peak_memory_bytes": {"0": mem, "1": mem}, "roles": {"0": "both", "1": "both"}}


def test_compare_judges_step_time_and_state_bytes(root):
    plan = load_plan(root / PLAN)
    step = validate.predict(plan, load_cluster("cpu-local")).figures["step_time"]
    rows = validate.compare(plan, fake_metrics(plan, step * 1.1), load_cluster("cpu-local"))
    assert all(r.ok in (True, None) for r in rows) and validate.verdict(rows).startswith("agrees")
    rows = validate.compare(plan, fake_metrics(plan, step * 2, state_scale=1.05), load_cluster("cpu-local"))
    assert {r.what for r in rows if r.ok is False} == {"step time (s)", "student_weights (bytes)"}


def test_validate_cli_reads_metrics(runner, root, tmp_path):
    plan = load_plan(root / PLAN)
    m = tmp_path / "m.json"
    m.write_text(json.dumps(fake_metrics(plan, 0.05)))
    r = runner.invoke(app, ["validate", str(root / PLAN), "--metrics", str(m), "-f", "json"])
    assert r.exit_code in (0, 3), r.stderr  # 3 where 0.05 s is off the prediction by more than the tolerance
    d = json.loads(r.stdout)
    assert d["rows"][0]["what"] == "step time (s)" and "verdict" in d
    assert runner.invoke(app, ["validate", str(root / PLAN)]).exit_code == 1  # neither --metrics nor --run


def test_validate_exits_3_when_the_prediction_disagrees(runner, root, tmp_path):
    plan = load_plan(root / PLAN)
    step = validate.predict(plan, load_cluster(plan.cluster)).figures["step_time"]
    m = tmp_path / "m.json"
    m.write_text(json.dumps(fake_metrics(plan, step * 1.05)))
    r = runner.invoke(app, ["validate", str(root / PLAN), "--metrics", str(m)])
    assert r.exit_code == 0 and "Verdict: agrees" in r.stdout, r.stdout
    m.write_text(json.dumps(fake_metrics(plan, step * 2)))
    r = runner.invoke(app, ["validate", str(root / PLAN), "--metrics", str(m), "-f", "json"])
    assert r.exit_code == 3 and json.loads(r.stdout)["verdict"].startswith("disagrees")


@pytest.mark.slow
def test_validate_run_measures_exact_state_bytes(runner, root):
    pytest.importorskip("torch")
    r = runner.invoke(app, ["validate", str(root / PLAN), "--run", "--random-init", "--steps", "3", "-f", "json"])
    assert r.exit_code in (0, 3), r.stderr  # 3: the step time disagrees (a busy machine); judged below: state bytes
    rows = {x["what"]: x for x in json.loads(r.stdout)["rows"]}
    for term in ("student_weights", "student_grads", "student_optimizer", "teacher_weights"):
        assert abs(rows[f"{term} (bytes)"]["rel_error"]) < 0.01
    # --run times the phases: the teacher and student sides add up to the step
    t, s = rows["teacher side of the step (s)"], rows["student side of the step (s)"]
    assert t["measured"] > 0 and s["measured"] > 0 and t["predicted"] > 0 and s["predicted"] > 0
    assert t["measured"] + s["measured"] == pytest.approx(rows["step time (s)"]["measured"], rel=0.02)
    assert t["predicted"] + s["predicted"] == pytest.approx(rows["step time (s)"]["predicted"], rel=1e-9)


@pytest.mark.parametrize("student", ["ddp", "zero3"])
def test_bf16_student_state_bytes_match_under_autocast(runner, root, tmp_path, student):
    """A 16-bit student under autocast holds fp32 weights, gradients and AdamW moments (4 + 4 + 8
    bytes per parameter), as the executor does; FSDP gathers it in bf16."""
    pytest.importorskip("torch")
    from planner.plan import write_plan
    plan = load_plan(root / "examples/tiny-shard-zero3.yaml")
    w = plan.workload.model_copy(update={"student_dtype": "bf16", "grad_dtype": None, "mixed_precision": "autocast"})
    s = plan.student.model_copy(update={"strategy": student, "shard": 2 if student == "zero3" else 1})
    path = tmp_path / "bf16.yaml"
    write_plan(plan.model_copy(update={"workload": w, "student": s}), path)
    r = runner.invoke(app, ["validate", str(path), "--run", "--random-init", "--steps", "3", "-f", "json"])
    assert r.exit_code in (0, 3), r.stderr  # 3: the step time disagrees; judged here: state bytes
    rows = {x["what"]: x for x in json.loads(r.stdout)["rows"]}
    for term in ("student_weights", "student_grads", "student_optimizer", "teacher_weights"):
        assert abs(rows[f"{term} (bytes)"]["rel_error"]) < 0.01, term


def test_master_precision_is_refused_by_the_executor(runner, root, tmp_path):
    from planner.plan import write_plan
    plan = load_plan(root / PLAN)
    w = plan.workload.model_copy(update={"student_dtype": "bf16", "grad_dtype": None, "mixed_precision": "master"})
    path = tmp_path / "master.yaml"
    write_plan(plan.model_copy(update={"workload": w}), path)
    r = runner.invoke(app, ["validate", str(path), "--run", "--random-init", "--steps", "2"])
    assert r.exit_code == 1 and "mixed_precision: master" in r.stderr


def test_validate_recomputes_an_edited_prediction_and_refuses_another_plans_metrics(runner, root, tmp_path):
    """The plan's `predicted` block is never what validate shows: an edited one changes nothing. Metrics
    of a run of another plan (another student strategy) are refused, naming what differs."""
    from planner.inputs.yamlio import dump_yaml, read_mapping

    plan = load_plan(root / PLAN)
    m = tmp_path / "m.json"
    m.write_text(json.dumps(fake_metrics(plan, 0.05)))
    honest = runner.invoke(app, ["validate", str(root / PLAN), "--metrics", str(m), "-f", "json"])
    data = read_mapping(root / PLAN)
    data["predicted"] = {"samples_per_s": 160.0, "step_time_s": 0.05, "memory_bytes_per_device": 1.0, "memory_bytes": {}, "time_s": {}}
    edited = tmp_path / "edited.yaml"
    edited.write_text(dump_yaml(data))
    assert fingerprint(load_plan(edited)) == fingerprint(plan)  # the same plan to run
    r = runner.invoke(app, ["validate", str(edited), "--metrics", str(m), "-f", "json"])
    assert r.exit_code == honest.exit_code and json.loads(r.stdout)["rows"] == json.loads(honest.stdout)["rows"]

    other = read_mapping(root / PLAN)
    other["student"] = other["student"] | {"strategy": "zero1", "shard": len(other["student"]["ranks"])}
    (tmp_path / "other.yaml").write_text(dump_yaml(other))
    r = runner.invoke(app, ["validate", str(tmp_path / "other.yaml"), "--metrics", str(m)])
    assert r.exit_code == 1 and "measured with another plan" in r.stderr and "Traceback" not in r.output, r.output


def test_generation_is_its_own_side_when_the_executor_times_it():
    """`planner run --phases` times on-policy generation as `generation`: validate compares it with
    the model's generation term; a run without it keeps the two sides."""
    from planner.validate import measured_sides

    steps = [{"teacher": 1.0, "generation": 2.0, "student_forward": 0.5, "backward": 0.25}, {"teacher": 3.0, "backward": 1.0}]
    assert measured_sides(steps) == {"teacher": 2.0, "generation": 1.0, "student": 0.875}
    assert measured_sides([{"teacher": 1.0, "backward": 1.0}]) == {"teacher": 1.0, "student": 1.0}

"""The `training:` section: `planner schema` shows it, `recommend` copies it into the plan (the cost
model ignores it), and a bad value is one line naming the file and the field."""

import json

import pytest
import yaml

from planner.cli import app
from planner.inputs.errors import InputError
from planner.plan import fingerprint, load_plan

TINY_JOB = {"name": "tiny", "teacher": "tiny-teacher", "student": "tiny-student",
            "workload": {"global_batch": 8, "micro_batch_max": 4, "prompt_len": 32, "completion_len": 32, "lmbda": 0.0,
                         "student_dtype": "fp32", "teacher_dtype": "fp32"}}
TRAINING = {"lr": 3e-4, "schedule": "cosine", "warmup_steps": 10, "steps": 100, "eval_fraction": 0.1, "eval_every": 20,
            "checkpoint_dir": "ckpt", "checkpoint_every": 25, "keep_checkpoints": 3, "output_dir": "out",
            "log_jsonl": "log.jsonl", "max_grad_norm": 0.5, "betas": [0.9, 0.95], "weight_decay": 0.01}


def _job(folder, training):
    folder.mkdir(exist_ok=True)
    path = folder / "job.yaml"
    path.write_text(yaml.safe_dump(TINY_JOB | ({"training": training} if training is not None else {})))
    return path


def test_schema_shows_the_training_section(runner):
    for kind in ("job", "plan"):
        r = runner.invoke(app, ["schema", kind])
        assert r.exit_code == 0, r.output
        props = json.loads(r.stdout)["$defs"]["Training"]["properties"]
        assert {"lr", "schedule", "warmup_steps", "steps", "eval_fraction", "checkpoint_every", "keep_checkpoints",
                "output_dir", "log_jsonl", "tensorboard_dir"} <= props.keys()
        assert all(p.get("description") for p in props.values())


def test_recommend_copies_training_and_the_cost_ignores_it(runner, tmp_path):
    out, bare = tmp_path / "plan.yaml", tmp_path / "bare.yaml"
    for job, plan in ((_job(tmp_path, TRAINING), out), (_job(tmp_path / "bare", None), bare)):
        r = runner.invoke(app, ["recommend", "-m", str(job), "-c", "cpu-local", "--nodes", "1", "-o", str(plan)])
        assert r.exit_code == 0, r.output
    with_training, without = load_plan(out), load_plan(bare)
    assert with_training.training.model_dump(mode="json") == {**without.training.model_dump(mode="json"), **TRAINING}
    assert without.training.lr == 1e-4 and without.training.max_grad_norm == 1.0  # the executor's old fixed values
    assert with_training.predicted == without.predicted
    assert fingerprint(with_training) == fingerprint(without)


def test_recommend_copies_the_jobs_dataset_and_tokenizer(runner, tmp_path):
    """A job's `dataset` and `tokenizer` reach the plan, so `recommend -o plan.yaml && export` trains on
    them; without them the plan has none (synthetic prompts, the student's tokenizer)."""
    job, plan = tmp_path / "job.yaml", tmp_path / "plan.yaml"
    job.write_text(yaml.safe_dump(TINY_JOB | {"dataset": "data/train.jsonl", "tokenizer": "tok"}))
    r = runner.invoke(app, ["recommend", "-m", str(job), "-c", "cpu-local", "--nodes", "1", "-o", str(plan)])
    assert r.exit_code == 0, r.output
    got = load_plan(plan)
    assert (got.dataset, got.tokenizer) == ("data/train.jsonl", "tok")
    job.write_text(yaml.safe_dump(TINY_JOB))
    r = runner.invoke(app, ["recommend", "-m", str(job), "-c", "cpu-local", "--nodes", "1", "-o", str(plan), "--force"])
    assert r.exit_code == 0, r.output
    assert (load_plan(plan).dataset, load_plan(plan).tokenizer) == (None, None)


@pytest.mark.parametrize("training, field", [
    ({"lr": -1}, "training.lr"),
    ({"schedule": "exponential"}, "training.schedule"),
    ({"warmup_steps": 10, "steps": 5}, "warmup_steps (10) must be below steps (5)"),
    ({"betas": [0.9, 1.5]}, "betas"),
    ({"eval_every": 10}, "eval_every (10) needs an eval split"),
    ({"checkpoint_every": 5}, "checkpoint_every needs checkpoint_dir"),
    ({"learning_rate": 1e-3}, "training.learning_rate: unknown key"),
    ({"keep_checkpoints": 0}, "training.keep_checkpoints"),
])
def test_bad_training_is_one_line(runner, root, tmp_path, training, field):
    job = _job(tmp_path, training)
    r = runner.invoke(app, ["recommend", "-m", str(job), "-c", "cpu-local"])
    assert r.exit_code == 1 and not isinstance(r.exception, Exception), r.exception
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert str(job) in lines[0] and field in lines[0], lines[0]
    # the same section in a plan file
    data = yaml.safe_load((root / "examples" / "tiny-replicate-ddp.yaml").read_text()) | {"training": training}
    plan = tmp_path / "plan.yaml"
    plan.write_text(yaml.safe_dump(data))
    with pytest.raises(InputError) as e:
        load_plan(plan)
    assert len(e.value.lines) == 1 and str(plan) in e.value.lines[0] and field in e.value.lines[0], e.value.lines


def test_steps_come_from_the_flag_then_steps_then_epochs_then_ten():
    from planner.inputs.training import DEFAULT_STEPS, Training, resolve_steps

    assert resolve_steps(7, Training(steps=100), 3, 1000, 8) == 7
    assert resolve_steps(None, Training(steps=100), 3, 1000, 8) == 100
    assert resolve_steps(None, Training(), 3, 1001, 8) == 376  # 3 x 1001 samples in batches of 8, the last one partial
    assert resolve_steps(None, Training(), 1, None, 8) == DEFAULT_STEPS  # synthetic data has no size


def test_eval_points():
    pytest.importorskip("torch")
    from planner.executor.loop import eval_points

    assert eval_points(0, 10, 4) == [4, 8, 10]
    assert eval_points(4, 8, 4) == [8]  # a resumed run: after its start, and the last one once
    assert eval_points(0, 5, 0) == [5]
    assert eval_points(5, 5, 2) == []  # nothing left to run

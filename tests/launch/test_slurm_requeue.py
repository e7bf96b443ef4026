"""A requeue on a real Slurm, from a job file to a loadable student.

`planner recommend -o plan.yaml` on a tiny job with a training section (eval split and interval,
checkpoints, JSONL log, final save), `planner export plan.yaml --to slurm --requeue --random-init`,
`sbatch`. After the first logged step, `scancel --signal=USR1 --batch` does what the script's
`#SBATCH --signal=B:USR1@T` makes Slurm do before the time limit: the batch shell's trap asks the
run to stop, the run saves a checkpoint and exits 0, the script requeues the job, and the requeued
job resumes from that checkpoint and runs to the end. Both parts' losses, learning rates and eval
losses must be those of an uninterrupted run (the single-process reference), and the saved student
must load with `from_pretrained` and give the reference's logits.

Needs a Slurm that answers (`scripts/slurm-local.sh start`, as root: its `cred_expire=10` lets a
requeued job start again after 10 s instead of Slurm's default 120) and torch + transformers.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import time
from pathlib import Path

import pytest

from slurm_helpers import SKIP, free_port, logs, show, state, submit, wait_for

from planner.cli import app
from planner.inputs.yamlio import dump_yaml, read_mapping

ROOT = Path(__file__).resolve().parents[2]
STEPS = 16  # long enough that the signal (after step 1) lands well before the end
EVAL_EVERY = 5

pytestmark = [pytest.mark.slurm, pytest.mark.slow, SKIP]


def _job(tmp: Path) -> Path:
    """The bundled tiny-cpu job with short sequences and a training section; every path absolute."""
    g = random.Random(3)
    with open(tmp / "eval.jsonl", "w") as f:
        for _ in range(6):
            f.write(json.dumps({"prompt": [g.randrange(3, 512) for _ in range(g.randrange(3, 9))],
                                "completion": [g.randrange(3, 512) for _ in range(g.randrange(2, 8))]}) + "\n")
    data = read_mapping(ROOT / "jobs" / "tiny-cpu.yaml")
    data["workload"].update(prompt_len=8, completion_len=8)
    data["training"] = {"lr": 2e-3, "schedule": "cosine", "warmup_steps": 2, "min_lr": 1e-4, "steps": STEPS,
                        "eval_dataset": str(tmp / "eval.jsonl"), "eval_every": EVAL_EVERY,
                        "checkpoint_dir": str(tmp / "ckpt"), "checkpoint_every": 4, "output_dir": str(tmp / "student"),
                        "log_jsonl": str(tmp / "log.jsonl")}
    (tmp / "job.yaml").write_text(dump_yaml(data))
    return tmp / "job.yaml"


def _lines(log: Path) -> list[dict]:
    return [json.loads(x) for x in log.read_text().splitlines()] if log.exists() else []


def _after_first_step(log: Path, job_id: str, folder: Path, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while not any("loss" in x for x in _lines(log)):
        text = show(job_id)
        assert state(text) in ("PENDING", "CONFIGURING", "RUNNING"), f"the job ended before its first step:\n{text}{logs(folder)}"
        assert time.monotonic() < deadline, f"no step logged within {timeout_s} s\n{logs(folder)}"
        time.sleep(0.5)


def test_requeue_resumes_as_an_uninterrupted_run(tmp_path, runner):
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from transformers import AutoModelForCausalLM

    from planner.executor.loop import RunOptions
    from planner.executor.reference import reference_run
    from planner.plan import load_plan

    torch.set_num_threads(1)
    plan, script, metrics, log = tmp_path / "plan.yaml", tmp_path / "job.sbatch", tmp_path / "metrics.json", tmp_path / "log.jsonl"
    r = runner.invoke(app, ["recommend", "-m", str(_job(tmp_path)), "-c", "cpu-local", "-o", str(plan)])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["export", str(plan), "--to", "slurm", "--requeue", "--random-init", "--time", "00:10:00",
                            "--port", str(free_port()), "--metrics-out", str(metrics), "-o", str(script)])
    assert r.exit_code == 0, r.output

    job_id = submit(script, tmp_path, os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)})
    try:
        _after_first_step(log, job_id, tmp_path)
        # what `#SBATCH --signal=B:USR1@T` does at T seconds before the time limit: USR1 to the batch shell only
        subprocess.run(["scancel", "--signal=USR1", "--batch", job_id], check=True, timeout=20)
        want = reference_run(load_plan(plan), RunOptions(random_init=True))  # the uninterrupted run, while the job requeues
        text = wait_for(job_id)
    finally:
        subprocess.run(["scancel", job_id], capture_output=True, timeout=20)  # nothing left behind if the test failed
    out = logs(tmp_path)
    assert state(text) == "COMPLETED" and re.search(r"\bExitCode=0:0\b", text), text + out
    assert re.search(r"\bRestarts=1\b", text), text + out
    said = "".join(p.read_text() for p in tmp_path.glob("*.out"))  # both parts, appended (--open-mode=append)
    assert said.count(f"requeueing job {job_id}") == 1 and said.count("USR1: asking the run") == 1, out

    # the log: a first part from step 0 that stopped after step k, a second from k to the end
    lines = _lines(log)
    starts = [i for i, x in enumerate(lines) if x.get("event") == "start"]
    assert len(starts) == 2 and lines[starts[0]]["start_step"] == 0, lines
    k = lines[starts[1]]["start_step"]
    assert 1 <= k < STEPS, f"the signal came after the run had ended (k = {k}); raise STEPS"
    steps = [x for x in lines if "loss" in x]
    assert [x["step"] for x in steps] == list(range(1, STEPS + 1))
    assert [x["step"] for x in lines[starts[0]:starts[1]] if "loss" in x] == list(range(1, k + 1))
    # the resumed run is the uninterrupted one: losses, learning rates, evaluations
    assert [x["loss"] for x in steps] == pytest.approx(want["loss"], abs=1e-5)
    assert [x["lr"] for x in steps] == pytest.approx(want["lr"], rel=1e-9)
    evals = [[x["step"], x["eval_loss"]] for x in lines if "eval_loss" in x]
    assert [s for s, _ in evals] == [s for s, _ in want["eval_loss"]] == [5, 10, 15, 16]
    assert [v for _, v in evals] == pytest.approx([v for _, v in want["eval_loss"]], abs=1e-5)
    m = json.loads(metrics.read_text())  # the requeued part's metrics (it may replace its first part's)
    assert (m["start_step"], m["end_step"], m["stopped"]) == (k, STEPS, False)

    # the final save loads and gives the trained student's logits
    saved = AutoModelForCausalLM.from_pretrained(tmp_path / "student", local_files_only=True).eval()
    ids = torch.randint(3, 512, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = saved(input_ids=ids).logits, want["student"].eval()(input_ids=ids).logits
        fresh = AutoModelForCausalLM.from_config(saved.config)(input_ids=ids).logits
    assert torch.allclose(a, b, atol=1e-4), (a - b).abs().max()
    assert not torch.allclose(a, fresh, atol=1e-3)

"""`planner export --to slurm --requeue`: USR1 to the batch shell makes a stop file, the run (a
stand-in srun here) acts on it and removes it, and only then is the job requeued. The executor's
side (stop file and SIGUSR1 to real workers, then resume) is tests/executor/test_stop.py."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from planner.cli import app
from planner.inputs.errors import InputError
from planner.launch import env, render

ROOT = Path(__file__).resolve().parents[2]
PLAN = ROOT / "examples" / "tiny-replicate-ddp.yaml"

# srun: note that it started, wait for the stop file named after --stop-file, then (if CONSUME) remove it
SRUN = """#!/bin/bash
stop=""; prev=""
for a in "$@"; do [ "$prev" = --stop-file ] && stop=$a; prev=$a; done
printf '%s\\n' "$@" > "$WORK/srun-args"
touch "$WORK/started"
for _ in $(seq 300); do [ -e "$stop" ] && break; sleep 0.1; done
[ "$CONSUME" = 1 ] && rm -f "$stop"
exit 0
"""
SCONTROL = """#!/bin/bash
if [ "$1" = requeue ]; then echo "$@" >> "$WORK/requeued"; else printf "node001\\n"; fi
"""


def _script(tmp_path: Path) -> Path:
    script = tmp_path / "job.sbatch"
    script.write_text(render(PLAN, None, "slurm", requeue=True, checkpoint_dir=tmp_path / "ckpt", steps=50, python="python3"))
    return script


def _run(tmp_path: Path, consume: bool) -> subprocess.CompletedProcess:
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    for name, text in (("srun", SRUN), ("scontrol", SCONTROL)):
        (bin_ / name).write_text(text)
        (bin_ / name).chmod(0o755)
    env = os.environ | {"PATH": f"{bin_}:{os.environ['PATH']}", "WORK": str(tmp_path), "CONSUME": str(int(consume)),
                        "SLURM_JOB_NODELIST": "node001", "SLURM_NNODES": "1", "SLURM_JOB_ID": "7"}
    with subprocess.Popen(["bash", str(_script(tmp_path))], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True) as p:
        deadline = time.monotonic() + 20
        while not (tmp_path / "started").exists():
            assert p.poll() is None and time.monotonic() < deadline, p.stderr.read() if p.poll() is not None else "srun never started"
            time.sleep(0.05)
        p.send_signal(signal.SIGUSR1)
        out, err = p.communicate(timeout=30)
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)


def test_usr1_stops_the_run_and_requeues(tmp_path):
    res = _run(tmp_path, consume=True)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "requeued").read_text().split() == ["requeue", "7"]
    args = (tmp_path / "srun-args").read_text().split("\n")
    assert args[args.index("--stop-file") + 1] == str(tmp_path / "ckpt" / ".kd-planner-stop")
    assert args[args.index("--checkpoint-dir") + 1] == str(tmp_path / "ckpt")
    assert "saved and stopped; requeueing" in res.stdout


def test_a_run_that_did_not_stop_is_not_requeued(tmp_path):
    res = _run(tmp_path, consume=False)  # the stop file is left: the run had ended before it looked
    assert res.returncode == 0, res.stderr
    assert not (tmp_path / "requeued").exists()


def test_script_says_requeue_and_error_handling(tmp_path):
    text = _script(tmp_path).read_text()
    for line in ("#SBATCH --requeue", "#SBATCH --signal=B:USR1@120", "#SBATCH --open-mode=append", "trap on_usr1 USR1",
                 'export PYTHONFAULTHANDLER="${PYTHONFAULTHANDLER:-1}"'):
        assert line in text.splitlines(), line
    assert "TORCH_NCCL_ASYNC_ERROR_HANDLING" not in text  # a gloo plan
    assert 'export TORCH_NCCL_ASYNC_ERROR_HANDLING="${TORCH_NCCL_ASYNC_ERROR_HANDLING:-1}"' in env.error_handling("nccl")


def test_requeue_needs_a_checkpoint_folder_and_slurm(runner):
    with pytest.raises(InputError, match="--requeue: a requeued run resumes from its checkpoints"):
        render(PLAN, None, "slurm", requeue=True)
    r = runner.invoke(app, ["export", str(PLAN), "--to", "torchrun", "--requeue"])
    assert r.exit_code == 2 and "only applies to --to slurm" in r.output
    r = runner.invoke(app, ["export", str(PLAN), "--to", "slurm", "--requeue"])
    assert r.exit_code == 1 and len(r.stderr.strip().splitlines()) == 1 and "--checkpoint-dir" in r.stderr

"""Requeue: SIGUSR1 to a running CPU run (as Slurm's `--signal=USR1@T` sends it) and a stop file (as
the exported sbatch script's trap writes it) each make the run save a checkpoint and exit 0; the
runs that resume from them end with the losses of an uninterrupted run. A disaggregated plan stops
on every rank when only its teacher's rank is signalled."""

import json
import os
import signal
import subprocess
import time

from executor_helpers import ROOT, TORCHRUN, tiny_plan

from planner.executor.loop import RunOptions
from planner.executor.reference import reference_losses
from planner.inputs.yamlio import dump_yaml
from planner.plan import load_plan

STEPS = 8


def _workers(pid: int) -> list[int]:
    return [int(c) for c in open(f"/proc/{pid}/task/{pid}/children").read().split()]


def _run(args: list[str], on_start=None, timeout: int = 600) -> subprocess.CompletedProcess:
    cmd = [str(TORCHRUN), "--standalone", "--nproc-per-node", "2", "-m", "planner", "run", *args, "--no-progress", "--random-init"]
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT, start_new_session=True) as p:
        try:
            if on_start:
                on_start(p)
            out, err = p.communicate(timeout=timeout)
        except BaseException:
            os.killpg(p.pid, signal.SIGKILL)
            raise
    assert p.returncode == 0, err[-4000:]
    return subprocess.CompletedProcess(cmd, p.returncode, out, err)


def test_signal_and_stop_file_then_resume(tmp_path):
    plan = tiny_plan(tmp_path, "replicate-ddp")
    ckpt, log, stop = tmp_path / "ckpt", tmp_path / "log.jsonl", tmp_path / "STOP"
    data = load_plan(plan).model_dump(mode="json")
    data["training"]["log_jsonl"] = str(log)
    plan.write_text(dump_yaml(data))
    base = [str(plan), "--steps", str(STEPS), "--checkpoint-dir", str(ckpt), "--checkpoint-every", "100"]

    def usr1_after_first_step(p):  # the workers only: torchrun itself (the agent) is not ours to signal
        deadline = time.monotonic() + 500
        while not (log.exists() and '"loss"' in log.read_text()):
            assert p.poll() is None and time.monotonic() < deadline, "the run ended or stalled before its first step"
            time.sleep(0.2)
        for pid in _workers(p.pid):
            os.kill(pid, signal.SIGUSR1)

    first = _run(base + ["--metrics-out", str(tmp_path / "m1.json")], on_start=usr1_after_first_step)
    m1 = json.loads((tmp_path / "m1.json").read_text())
    assert m1["stopped"] and 1 <= m1["end_step"] < STEPS, m1["end_step"]
    assert "stopped on request" in first.stderr
    assert [s for s, _ in checkpoint_steps(ckpt)] == [m1["end_step"]]  # saved although no interval was due

    stop.write_text("")  # present from the start: the resumed run stops after one step
    _run(base + ["--metrics-out", str(tmp_path / "m2.json"), "--stop-file", str(stop)])
    m2 = json.loads((tmp_path / "m2.json").read_text())
    assert m2["stopped"] and (m2["start_step"], m2["end_step"]) == (m1["end_step"], m1["end_step"] + 1)

    assert not stop.exists()  # acted on: removed (the sbatch script requeues only then)
    _run(base + ["--metrics-out", str(tmp_path / "m3.json"), "--stop-file", str(stop)])
    m3 = json.loads((tmp_path / "m3.json").read_text())
    assert not m3["stopped"] and (m3["start_step"], m3["end_step"]) == (m2["end_step"], STEPS)

    want, _ = reference_losses(load_plan(plan), RunOptions(steps=STEPS, random_init=True))
    got = m1["loss"] + m2["loss"] + m3["loss"]
    assert len(got) == STEPS and all(abs(a - b) < 1e-5 for a, b in zip(got, want)), (got, want)


def _rank_of(pid: int) -> int:
    env = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
    return int(next(e for e in env if e.startswith(b"RANK="))[5:])


def test_disaggregated_teacher_rank_signal_stops_every_rank(tmp_path):
    """SIGUSR1 to the teacher's own rank (it serves the student, holds no student): every rank
    agrees after the step, the student saves, all exit 0, and the rerun resumes to the end."""
    plan = tiny_plan(tmp_path, "disaggregated")
    ckpt, log = tmp_path / "ckpt", tmp_path / "log.jsonl"
    data = load_plan(plan).model_dump(mode="json")
    data["training"]["log_jsonl"] = str(log)
    plan.write_text(dump_yaml(data))
    teacher = data["teacher"]["ranks"]
    base = [str(plan), "--steps", str(STEPS), "--checkpoint-dir", str(ckpt), "--checkpoint-every", "100"]

    def usr1_to_the_teacher(p):
        deadline = time.monotonic() + 500
        while not (log.exists() and '"loss"' in log.read_text()):
            assert p.poll() is None and time.monotonic() < deadline, "the run ended or stalled before its first step"
            time.sleep(0.2)
        pids = [pid for pid in _workers(p.pid) if _rank_of(pid) in teacher]
        assert len(pids) == len(teacher) == 1
        os.kill(pids[0], signal.SIGUSR1)

    _run(base + ["--metrics-out", str(tmp_path / "m1.json")], on_start=usr1_to_the_teacher)
    m1 = json.loads((tmp_path / "m1.json").read_text())
    assert m1["stopped"] and 1 <= m1["end_step"] < STEPS, m1["end_step"]
    assert [s for s, _ in checkpoint_steps(ckpt)] == [m1["end_step"]]
    _run(base + ["--metrics-out", str(tmp_path / "m2.json")])
    m2 = json.loads((tmp_path / "m2.json").read_text())
    assert not m2["stopped"] and (m2["start_step"], m2["end_step"]) == (m1["end_step"], STEPS)

    want, _ = reference_losses(load_plan(plan), RunOptions(steps=STEPS, random_init=True))
    got = m1["loss"] + m2["loss"]
    assert len(got) == STEPS and all(abs(a - b) < 1e-5 for a, b in zip(got, want)), (got, want)


def checkpoint_steps(root):
    from planner.executor.checkpoint import complete

    return complete(root)

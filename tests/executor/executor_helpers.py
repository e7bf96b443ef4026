"""Helpers for the executor tests (imported by name: tests/ has no packages): small plan variants and 2-process gloo jobs under torchrun."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

import torch  # noqa: E402

# One thread, like each torchrun worker (OMP_NUM_THREADS=1): two OpenMP threads on a busy 2-core
# machine spin against each other and made the single-process reference 30x slower.
torch.set_num_threads(1)

from planner.inputs.yamlio import dump_yaml  # noqa: E402
from planner.plan import load_plan  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TORCHRUN = Path(sys.executable).with_name("torchrun")


def tiny_plan(tmp: Path, example: str, name: str | None = None, *, student: str | None = None, teacher: str | None = None,
              **workload) -> Path:
    """An example plan with short sequences (and optionally another student/teacher strategy)."""
    data = load_plan(ROOT / "examples" / f"tiny-{example}.yaml").model_dump(mode="json")
    data["workload"].update({"prompt_len": 8, "completion_len": 8} | workload)
    if student:
        data["student"]["strategy"] = student
        data["student"]["shard"] = 1 if student in ("ddp", "zero1") else len(data["student"]["ranks"])
    if teacher:
        data["teacher"].update(strategy=teacher, shard=2 if teacher == "shard" else 1, pp=2 if teacher == "pipeline" else 1,
                               tp=2 if teacher == "tp" else 1)
    path = tmp / f"{name or example}.yaml"
    path.write_text(dump_yaml(data))
    return path


def torchrun(args: list[str], *, env: dict | None = None, max_restarts: int = 0, timeout: int = 120,
             check: bool = True, nproc: int = 2) -> subprocess.CompletedProcess:
    """`torchrun --standalone --nproc-per-node NPROC <args>` with gloo; fails the test on a non-zero exit if `check`."""
    cmd = [str(TORCHRUN), "--standalone", "--nproc-per-node", str(nproc), f"--max-restarts={max_restarts}", *args]
    # PYTHONFAULTHANDLER: a rank that aborts prints every thread's Python stack. In two CI runs a rank
    # of a rank script aborted with "terminate called without an active exception" (exit -6; where is not
    # known, and 68 reruns of tp_families.py here, half under load, did not repeat it): the scripts meet
    # at a barrier before they destroy the group, and a next abort says where it happened.
    full_env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "PYTHONFAULTHANDLER": "1"} | (env or {})
    # its own session, so that a timeout kills torchrun's workers too instead of orphaning them
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=full_env, cwd=ROOT,
                          start_new_session=True) as p:
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            out, err = p.communicate()
            raise AssertionError(f"{' '.join(cmd)} timed out after {timeout} s:\n{err[-4000:]}") from None
    proc = subprocess.CompletedProcess(cmd, p.returncode, out, err)
    assert proc.returncode == 0 or not check, f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return proc


def run_plan(plan: Path, out: Path, steps: int, *extra: str, random_init: bool = True, **kw) -> dict:
    """`planner run` under torchrun; the tiny bundled shapes have no weights, hence `--random-init`."""
    init = ["--random-init"] if random_init else []
    torchrun(["-m", "planner", "run", str(plan), "--steps", str(steps), "--metrics-out", str(out), "--no-progress", *init, *extra], **kw)
    return json.loads(out.read_text())


def assert_matches_reference(plan: Path, got: dict, steps: int) -> None:
    """`got`'s per-step loss within 1e-5 and gradient norm within relative 1e-5 of the single-process reference."""
    from planner.executor.loop import RunOptions
    from planner.executor.reference import reference_losses
    from planner.plan import load_plan

    want_loss, want_norm = reference_losses(load_plan(plan), RunOptions(steps=steps, random_init=True))
    assert len(got["loss"]) == steps
    for step, (a, b) in enumerate(zip(got["loss"], want_loss)):
        assert abs(a - b) < 1e-5, f"{Path(plan).name} step {step}: loss {a} vs reference {b}"
    for step, (a, b) in enumerate(zip(got["grad_norm"], want_norm)):
        assert abs(a - b) <= 1e-5 * abs(b), f"{Path(plan).name} step {step}: grad norm {a} vs reference {b}"

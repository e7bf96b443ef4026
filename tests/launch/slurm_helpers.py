"""Helpers for the tests that submit to a real Slurm (imported by name: tests/ has no packages)."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import time

import pytest

RUNNING = ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED")  # REQUEUED: it runs again


def slurm_answers() -> bool:
    if not (shutil.which("sbatch") and shutil.which("sinfo") and shutil.which("scontrol")):
        return False
    try:
        res = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return res.returncode == 0 and any(s.strip("*~#") in ("idle", "mixed", "allocated") for s in res.stdout.split())


SKIP = pytest.mark.skipif(not slurm_answers(), reason="no Slurm answers (run `scripts/slurm-local.sh start` as root)")


def show(job_id: str) -> str:
    return subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True, timeout=20).stdout


def state(text: str) -> str | None:
    m = re.search(r"\bJobState=(\w+)", text)
    return m.group(1) if m else None


def wait_for(job_id: str, timeout_s: float = 600) -> str:
    """`scontrol show job` once the job has ended (polled every second: `sbatch --wait` backs off to
    tens of seconds); a requeued job has not ended. Without accounting, scontrol remembers a
    finished job for MinJobAge (300 s in slurm-local.sh), plenty for this."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        text = show(job_id)
        if state(text) and state(text) not in RUNNING:
            return text
        time.sleep(1)
    subprocess.run(["scancel", job_id], timeout=20)
    pytest.fail(f"job {job_id} did not end within {timeout_s} s")


def submit(script, cwd, env: dict | None = None) -> str:
    """`sbatch --parsable SCRIPT` from `cwd`; the job id."""
    res = subprocess.run(["sbatch", "--parsable", str(script)], cwd=cwd, capture_output=True, text=True, timeout=60, env=env)
    assert res.returncode == 0, f"sbatch exited {res.returncode}: {res.stderr}"
    return res.stdout.strip().split(";")[0]


def free_port() -> int:
    """A port nobody listens on now, for the job's rendezvous (other jobs on the machine may hold 29500)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def logs(folder) -> str:
    """The tails of the job's .out and .err files, for a failure message."""
    return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(folder.glob("*.out")) + sorted(folder.glob("*.err")))

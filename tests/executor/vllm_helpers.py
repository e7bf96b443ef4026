"""Helpers for the vLLM tests (imported by name): tiny random checkpoints with a tokenizer, a vLLM
OpenAI server of one on 127.0.0.1 (its own process group, killed whole), a served-teacher plan and a
dedicated-rollout plan."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def vllm_env(tmp: Path) -> dict:
    """What every vLLM process of the tests gets: 1 GiB of CPU KV cache, its caches in `tmp`."""
    return {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CACHE_ROOT": str(tmp / "vllm-cache"), "TORCHINDUCTOR_CACHE_DIR": str(tmp / "inductor-cache")}


def tiny_checkpoints(work: Path, seed: int = 0) -> dict:
    """bench/vs_trl_inputs.py's tiny pair (6.2M teacher, 0.9M student, vocabulary 512) saved with
    the byte-level tokenizer vLLM needs in the folder."""
    sys.path.insert(0, str(ROOT))
    from bench.vs_trl_inputs import build_tokenizer, save_models

    out = save_models(work, "tiny", seed)
    for role in ("teacher", "student"):
        build_tokenizer(out[role])
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`python -m vllm.entrypoints.openai.api_server` of `model` on 127.0.0.1 (the export's command line)."""

    def __init__(self, model: Path, tmp: Path, max_logprobs: int = 20, max_len: int = 256, timeout: float = 240,
                 args: tuple[str, ...] = (), env: dict | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tmp / f"vllm-server-{self.port}.log"
        cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model), "--host", "127.0.0.1",
               "--port", str(self.port), "--tensor-parallel-size", "1", "--max-logprobs", str(max_logprobs), "--enforce-eager",
               "--max-model-len", str(max_len), "--dtype", "float32", *args]
        self.proc = subprocess.Popen(cmd, stdout=self.log.open("w"), stderr=subprocess.STDOUT, env=os.environ | vllm_env(tmp) | (env or {}),
                                     start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"vLLM server exited {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(1)
        self.stop()
        raise RuntimeError(f"vLLM server not healthy after {timeout} s:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            except ProcessLookupError:
                pass


def served_plan(tmp: Path, teacher: Path, student: Path, *, k: int = 8, lmbda: float = 1.0, rollout: str = "vllm",
                schedule: str = "sync", prompt_len: int = 16, completion_len: int = 16, micro_batch: int = 2, grad_accum: int = 2) -> Path:
    """One trainer rank (the student, ddp) and a vllm-server teacher on the second GPU: world 2, torch world 1."""
    from planner.inputs.load import load_model
    from planner.inputs.yamlio import dump_yaml
    from planner.plan import Plan, load_plan

    data = load_plan(ROOT / "examples" / "tiny-disaggregated.yaml").model_dump(mode="json")
    data["teacher"].update(ref=str(teacher), shape=load_model(str(teacher)).model_dump(mode="json"), engine="vllm-server",
                           strategy="replicate", ranks=[1], endpoints=[])
    data["student"].update(ref=str(student), shape=load_model(str(student)).model_dump(mode="json"), ranks=[0], strategy="ddp", shard=1)
    data["workload"].update(teacher_output="topk", topk=k, lmbda=lmbda, prompt_len=prompt_len, completion_len=completion_len,
                            global_batch=micro_batch * grad_accum)
    data.update(micro_batch=micro_batch, grad_accum=grad_accum, rollout={"engine": rollout}, schedule=schedule, predicted=None)
    Plan(**data)
    path = tmp / "served.yaml"
    path.write_text(dump_yaml(data))
    return path


def metrics(path: Path) -> dict:
    return json.loads(path.read_text())


def dedicated_plan(tmp: Path, teacher: Path, student: Path, *, trainers: int = 1, schedule: str = "sync", lr: float = 1e-4,
                   prompt_len: int = 8, completion_len: int = 8, micro_batch: int = 2, grad_accum: int = 2, name: str = "dedicated") -> Path:
    """`trainers` ranks holding both models (colocated, replicate + ddp) and one dedicated rollout GPU after them
    (rollout.placement: dedicated, a vLLM server of the student): world trainers + 1, torch world `trainers`."""
    from planner.inputs.load import load_model
    from planner.inputs.yamlio import dump_yaml
    from planner.plan import Plan, load_plan

    data = load_plan(ROOT / "examples" / "tiny-replicate-ddp.yaml").model_dump(mode="json")
    ranks = list(range(trainers))
    data["teacher"].update(ref=str(teacher), shape=load_model(str(teacher)).model_dump(mode="json"), ranks=ranks)
    data["student"].update(ref=str(student), shape=load_model(str(student)).model_dump(mode="json"), ranks=ranks, strategy="ddp", shard=1)
    data["workload"].update(lmbda=1.0, prompt_len=prompt_len, completion_len=completion_len, global_batch=micro_batch * grad_accum * trainers)
    data["training"] = data.get("training", {}) | {"lr": lr}
    data.update(gpus_per_node=trainers + 1, micro_batch=micro_batch, grad_accum=grad_accum, schedule=schedule, predicted=None,
                rollout={"engine": "vllm", "placement": "dedicated", "ranks": [trainers], "endpoints": []})
    Plan(**data)
    path = tmp / f"{name}.yaml"
    path.write_text(dump_yaml(data))
    return path

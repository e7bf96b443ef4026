"""HTTP helpers shared by the executor's clients of vLLM OpenAI servers (a `vllm-server` teacher,
`planner.executor.teacher_server`; a dedicated rollout, `planner.executor.rollout.vllm_server`):
JSON POST and GET with the standard library, the served model's id, and which replica a rank asks."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

from planner.inputs.errors import InputError


def post(url: str, body: dict, timeout: float) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


def get(url: str, timeout: float) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


def served_model(base: str, wait_s: float = 0.0, role: str = "teacher") -> str:
    """The model id a server serves (`GET /v1/models`), waiting up to `wait_s` for it to answer;
    one line naming the plan's field and the run's flag when none answers."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return get(f"{base.rstrip('/')}/v1/models", 10)["data"][0]["id"]
        except (urllib.error.URLError, ConnectionError, OSError) as e:
            if time.monotonic() >= deadline:
                raise InputError(f"{role}.endpoints: {base}: no vLLM server answers ({e}); start the {role}'s server first "
                                 f"(`planner export` does), or give its address with --{role}-url") from None
            time.sleep(1.0)


def endpoint_of(endpoints: list[str], dp_rank: int) -> str:
    """Student rank i asks replica i mod replicas (as a disaggregated teacher rank is chosen)."""
    return endpoints[dp_rank % len(endpoints)]

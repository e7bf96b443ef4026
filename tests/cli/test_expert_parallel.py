"""Issue 14's done-when, through the CLI: the Qwen3-235B-A22B -> Qwen3-30B-A3B job of ms-swift #7295
on 2 x dgx-a100 (A100 80GB, as the report's A800s) considers expert parallelism, says why the
bundled executor's runtime ranks none (it plans the job with a per-step gather of the student), and under a runtime that runs it returns a feasible plan
with the teacher's logits as their own per-device term."""

import json
import re

from planner.cli import app
from planner.inputs.load import load_job

JOB = "jobs/qwen3-235b-a22b-to-30b-a3b.yaml"
ARGS = ["recommend", "-m", JOB, "-c", "dgx-a100", "--nodes", "2"]


def test_under_the_executors_runtime_expert_parallelism_is_considered_and_said_to_be_excluded(runner, root, monkeypatch):
    monkeypatch.chdir(root)
    r = runner.invoke(app, ARGS)
    # a plan fits with the 30B student's vLLM engine split over 8 ranks and asleep while it trains (1/8 of the
    # copy per GPU), or gathered layer by layer per decode step (57 GiB gathered once): none expert-parallel
    assert r.exit_code == 0, r.output
    text = " ".join(r.stdout.split())
    assert re.search(r"/zero3\+per_step/", text)  # the per-step gather still fits (and is listed), below the engine's plans
    refused = int(re.search(r"(\d+) the kd-planner runtime does not run an expert-parallel teacher", text).group(1))
    assert refused > 0
    assert f"Expert parallelism: {refused} expert-parallel teacher layouts considered, none ranked: the kd-planner runtime cannot run them" in text
    data = json.loads(runner.invoke(app, [*ARGS, "-f", "json"]).stdout)
    best, w = data["plans"][0], load_job(JOB).workload
    assert "+ep" not in best["strategy"] and best["roles"]["rollout"]["tp"] == 8
    # the teacher's logits per device, completion only under the executor: bf16 [b, completion, V]
    full = next(p for p in data["plans"] if p["teacher_output"] == "logits")
    assert full["predicted"]["memory_bytes"]["teacher_logits"] == full["micro_batch"] * w.completion_len * 151_936 * 2


def test_under_a_runtime_that_runs_it_an_expert_parallel_plan_fits(runner, root, monkeypatch):
    monkeypatch.chdir(root)
    r = runner.invoke(app, [*ARGS, "--runtime", "megatron-ep", "-f", "json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    best = data["plans"][0]
    assert "+ep:" in best["teacher"] and best["predicted"]["memory_bytes_per_device"] <= data["usable_bytes"] - data["reserve_bytes"]
    w = load_job(JOB).workload
    logits = best["micro_batch"] * (w.prompt_len + w.completion_len) * 151_936 * 2  # bf16 [b, every position, V] (runtime logits: sequence)
    assert best["predicted"]["memory_bytes"]["teacher_logits"] == logits
    assert any(n.startswith("Expert parallelism:") and "fit; the best is #1" in n for n in data["notes"])

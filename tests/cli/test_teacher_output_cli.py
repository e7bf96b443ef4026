"""The teacher output on the command line: `+topk`/`+cached` in a strategy, the note when a top-k
plan wins, and the plan file that records the choice."""

import json
import re

import yaml

from planner.cli import app
from planner.plan import load_plan


def off_policy_job(tmp_path, epochs=4):
    job = yaml.safe_load(open("jobs/llama70b-to-8b.yaml"))
    job["workload"] |= {"lmbda": 0.0, "epochs": epochs}
    path = tmp_path / "off.yaml"
    path.write_text(yaml.safe_dump(job))
    return str(path)


def test_estimate_reads_the_output_after_the_strategy(runner, tmp_path):
    job = off_policy_job(tmp_path)
    r = runner.invoke(app, ["estimate", "-m", job, "--strategy", "shard:16/zero3/colocated/2+cached", "-f", "json"])
    assert r.exit_code == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["teacher_output"] == "cached" and d["strategy"].endswith("+cached")
    assert set(d["memory_bytes_by_side"]) == {"student_ranks", "teacher_pass"}
    assert d["time_s"]["teacher_forward"] == 0 and d["time_s"]["teacher_cache_pass"] > 0
    assert set(d["speedup_vs_baselines"]) >= {"trl-gkd-zero3", "trl-distill-ddp", "trl-server"}
    assert d["speedup_vs_baseline"] == d["speedup_vs_baselines"][d["baseline_name"]]
    r = runner.invoke(app, ["estimate", "--strategy", "shard:16/zero3/colocated/2+cached"])  # the default job is on-policy
    assert r.exit_code == 1 and "lmbda" in r.stderr and "Traceback" not in r.stderr
    r = runner.invoke(app, ["estimate", "-m", job, "--strategy", "shard:8/zero3/disaggregated:8/2+cached"])
    assert r.exit_code == 3 and "offline teacher cache" in r.stdout


def test_a_top_k_winner_is_named_with_its_approximation(runner, tmp_path):
    job = yaml.safe_load(open("jobs/llama70b-to-8b.yaml"))
    job["workload"]["teacher_output"] = "topk"  # fixed by the job: every plan is a top-k one
    (tmp_path / "topk.yaml").write_text(yaml.safe_dump(job))
    out = tmp_path / "plan.yaml"
    r = runner.invoke(app, ["recommend", "-m", str(tmp_path / "topk.yaml"), "-o", str(out)], env={"COLUMNS": "100"})
    assert r.exit_code == 0, r.stderr
    plan = load_plan(out)
    row = re.search(r"^\s+1  (\S+).*\n(?:\s+(\+\S+)\s*\n)?", r.stdout, re.M)  # a long strategy folds before its '+' suffix
    first = row.group(1) + (row.group(2) or "")
    assert plan.workload.teacher_output == "topk" and first.endswith("+topk")
    assert "Note: it trains on the teacher's top-64" in r.stdout and "approximation" in r.stdout
    assert plan.predicted.baseline and f"Speed-ups are over {plan.predicted.baseline} (" in r.stdout

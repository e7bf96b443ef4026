"""`planner estimate` and `planner recommend` through the real CLI."""

import json
import re
from pathlib import Path

import pytest
import yaml

from planner.cli import app
from planner.plan import load_plan

ROOT = Path(__file__).resolve().parents[2]


def test_estimate_default_replicate_infeasible(runner):
    r = runner.invoke(app, ["estimate", "--teacher-split", "replicate", "--student-split", "ddp", "-f", "json"])
    assert r.exit_code == 3, r.stderr  # ran fine, but the plan does not fit
    d = json.loads(r.stdout)
    assert d["feasible"] is False and "out of memory" in d["reason"]
    for key in ("student_weights", "student_grads", "student_optimizer", "student_activations", "teacher_weights", "logits", "loss_buffers", "total"):
        assert key in d["memory_bytes"]
    assert d["time_s"]["total"] == pytest.approx(sum(v for k, v in d["time_s"].items() if k != "total"), rel=1e-12)


def test_estimate_trl_zero3_largest_comm_is_teacher_gather(runner, tmp_path):
    """On two DGX H100 nodes with one shared NIC each, TRL's world-wide teacher gather is the
    largest communication cost (with a NIC per GPU it hides behind the teacher's forward)."""
    topo = yaml.safe_load((ROOT / "topologies" / "dgx-h100.yaml").read_text())
    topo["inter_node"]["gpus_per_nic"] = 8
    (tmp_path / "one-nic.yaml").write_text(yaml.safe_dump(topo))
    d = json.loads(runner.invoke(app, ["estimate", "--micro-batch", "4", "-c", str(tmp_path / "one-nic.yaml"), "-f", "json"]).stdout)
    comm = {k: v for k, v in d["time_s"].items() if any(w in k for w in ("gather", "sync", "comm", "fsdp", "transfer"))}
    assert max(comm, key=comm.get) == "teacher_gather_exposed"
    assert d["samples_per_s"] > 0 and d["feasible"] is True


def test_estimate_table_and_symbolic(runner):
    r = runner.invoke(app, ["estimate", "--teacher-split", "pipeline:8", "--student-split", "zero3", "--micro-batch", "2"])
    assert r.exit_code == 0 and "teacher_bubble" in r.stdout and "(fits)" in r.stdout
    assert re.search(r"samples/s \(fits\); (trl|verl)-[a-z0-9-]+: \d", r.stdout)  # next to the strongest baseline that fits
    r = runner.invoke(app, ["estimate", "--teacher-split", "pipeline:8", "--student-split", "zero2", "--micro-batch", "2"])
    assert r.exit_code == 3 and "INFEASIBLE: out of memory" in r.stdout  # the table still comes
    r = runner.invoke(app, ["estimate", "--symbolic"])
    assert r.exit_code == 0 and "step_time =" in r.stdout


def test_estimate_bad_split_is_one_line(runner):
    r = runner.invoke(app, ["estimate", "--teacher-split", "pipeline:x"])
    assert r.exit_code == 1 and "--teacher-split" in r.stderr and "Traceback" not in r.stderr
    r = runner.invoke(app, ["estimate", "--teacher-split", "shard:3"])
    assert r.exit_code == 1 and "does not divide" in r.stderr


def test_recommend_default_says_so_and_ranks(runner):
    r = runner.invoke(app, ["recommend"])
    assert r.exit_code == 0
    assert r.stdout.splitlines()[0].startswith("Planning the bundled default job 'llama70b-to-8b'")
    assert "Why #1 wins" in r.stdout and "Rejected:" in r.stdout
    for name in ("trl-gkd-zero3", "trl-gkd-ddp", "trl-distill-zero3", "trl-distill-ddp", "trl-server"):
        assert name in r.stdout
    assert re.search(r"Speed-ups are over (trl|verl)-[a-z0-9-]+ \(", r.stdout)


def test_recommend_json_keys(runner):
    r = runner.invoke(app, ["recommend", "--format", "json", "--top", "3"])
    d = json.loads(r.stdout)
    assert set(d) >= {"baseline", "plans", "rejected", "strongest_baseline"} and "trl-gkd-zero3" in d["baseline"]
    fit = {n: b["predicted"]["samples_per_s"] for n, b in d["baseline"].items() if b and b["feasible"]}
    assert d["strongest_baseline"] == max(fit, key=fit.get)  # the fastest that fits
    assert len(d["plans"]) == max(3, sum(p["tied_with_first"] for p in d["plans"]))  # every plan that ties with #1
    for p in d["plans"]:
        assert {"strategy", "teacher", "student", "placement", "micro_batch", "grad_accum", "free_bytes", "predicted",
                "speedup_vs_baseline", "baseline", "speedup_vs_baselines", "teacher_output", "tied_with_first"} <= set(p)
        ro = p["roles"]["rollout"]
        engine = ro["engine"] + (":sleep" if ro["sleep"] else "") + (f":dedicated:{ro['gpus']}" if ro["placement"] == "dedicated" else "") \
            + (f":tp:{ro['tp']}" if ro["engine"] == "vllm" and ro["tp"] > 1 else "")
        suffix = ("" if engine == "hf-eager" else "+" + engine) + ("+async" if p["schedule"] == "async" else "") \
            + ("" if p["teacher_output"] == "logits" else "+" + p["teacher_output"])
        apart = "served:" if p["roles"]["teacher"]["engine"] == "vllm-server" else "disaggregated:"
        assert p["strategy"] == f"{p['teacher']}/{p['student']}/{p['placement'] if p['placement'] == 'colocated' else apart + str(p['teacher_gpus'])}/{p['micro_batch']}{suffix}"
        roles = p["roles"]  # issue 26: each role's GPUs, engine and split
        assert roles["trainer"] == {"gpus": p["student_gpus"], "split": p["student"]}
        assert roles["rollout"]["gpus"] == p["student_gpus"] or roles["rollout"]["placement"] == "dedicated"
        assert roles["teacher"]["gpus"] == p["teacher_gpus"] and roles["teacher"]["split"] == p["teacher"]
        assert p["schedule"] == "sync" or roles["rollout"]["placement"] == "dedicated"  # one step ahead only on GPUs of their own
        assert {"samples_per_s", "step_time_s", "memory_bytes_per_device", "memory_bytes", "time_s"} <= set(p["predicted"])
        assert p["baseline"] == d["strongest_baseline"] == p["predicted"]["baseline"]
        assert p["speedup_vs_baseline"] == pytest.approx(p["predicted"]["samples_per_s"] / fit[p["baseline"]])
        assert p["speedup_vs_baselines"][p["baseline"]] == pytest.approx(p["speedup_vs_baseline"])
    assert d["plans"][0]["speedup_vs_baselines"]["trl-gkd-zero3"] > 1  # our runtime beats GKDTrainer's on its own layout
    assert d["plans"][0]["speedup_vs_baseline"] >= 1 - d["tie_margin"]
    assert d["schedule_reason"].startswith(d["plans"][0]["schedule"] + ":") and "on the trainer's" in d["rollout_gpus_why"]
    assert yaml.safe_load(runner.invoke(app, ["recommend", "-f", "yaml"]).stdout)["plans"]


def test_recommend_writes_plan_and_refuses_overwrite(runner, tmp_path):
    out = tmp_path / "plan.yaml"
    assert runner.invoke(app, ["recommend", "-o", str(out)]).exit_code == 0
    plan = load_plan(out)
    assert plan.predicted.speedup_vs_baseline > 0.98 and plan.teacher.shape.name == "llama-3.1-70b"
    assert plan.predicted.baseline.startswith(("trl-", "verl-")) and plan.workload.teacher_output in ("logits", "topk")
    before = out.read_text()
    r = runner.invoke(app, ["recommend", "--nodes", "1", "-o", str(out)])
    assert r.exit_code == 1 and "--force" in r.stderr and out.read_text() == before
    assert runner.invoke(app, ["recommend", "--nodes", "1", "-o", str(out), "--force"]).exit_code == 0
    r = runner.invoke(app, ["estimate", "--plan", str(out), "-f", "json"])
    assert json.loads(r.stdout)["samples_per_s"] == load_plan(out).predicted.samples_per_s


def test_recommend_teacher_student_flags_and_nothing_fits(runner):
    r = runner.invoke(app, ["recommend", "--teacher", "llama-3.1-405b", "--student", "llama-3.1-70b", "-c", "l40s-pcie", "--nodes", "1"])
    assert r.exit_code == 3 and "No plan fits" in r.stdout and "Closest" in r.stdout and "Next:" in r.stdout


def test_recommend_export_shortcut(runner, tmp_path):
    script = tmp_path / "job.sbatch"
    # a plan that serves the teacher from vLLM needs a checkpoint folder: one line, nothing written
    served = yaml.safe_load((ROOT / "jobs" / "llama70b-to-8b.yaml").read_text())
    served["workload"]["teacher_serving"] = "vllm-server"
    (tmp_path / "served.yaml").write_text(yaml.safe_dump(served))
    r = runner.invoke(app, ["recommend", "-m", str(tmp_path / "served.yaml"), "--export", "slurm", "-o", str(script)])
    assert r.exit_code == 1 and "checkpoint folder with a config.json" in r.stderr and not script.exists()
    assert not (tmp_path / "job.plan.yaml").exists()
    job = yaml.safe_load((ROOT / "jobs" / "llama70b-to-8b.yaml").read_text())
    job["workload"]["teacher_serving"] = "in-process"  # the teacher in the trainer's world: its shape is enough to export
    (tmp_path / "in-process.yaml").write_text(yaml.safe_dump(job))
    r = runner.invoke(app, ["recommend", "-m", str(tmp_path / "in-process.yaml"), "--export", "slurm", "-o", str(script)])
    assert r.exit_code == 0, r.stderr
    text = script.read_text()
    assert text.startswith("#!") and "#SBATCH --nodes=2" in text and str(tmp_path / "job.plan.yaml") in text
    assert load_plan(tmp_path / "job.plan.yaml").nodes == 2
    r = runner.invoke(app, ["recommend", "-m", str(tmp_path / "in-process.yaml"), "--export", "slurm", "-o", str(script)])
    assert r.exit_code == 1 and "--force" in r.stderr
    assert runner.invoke(app, ["recommend", "--export", "pbs", "-o", str(script)]).exit_code == 1


def test_estimate_plan_heading_names_the_plan_not_the_default_job(runner, root):
    plan = root / "examples" / "tiny-replicate-ddp.yaml"
    r = runner.invoke(app, ["estimate", "--plan", str(plan)])
    assert r.exit_code == 0, r.stderr
    first = r.stdout.splitlines()[0]
    assert "llama70b-to-8b" not in first and "default" not in first
    assert f"plan {plan}" in first and "job 'tiny-cpu'" in first
    assert "tiny-teacher teacher -> tiny-student student on 1 x cpu-local" in first


def test_recommend_with_other_models_does_not_keep_the_job_name(runner, tmp_path):
    out = tmp_path / "plan.yaml"
    r = runner.invoke(app, ["recommend", "--teacher", "qwen2.5-14b", "--student", "qwen2.5-0.5b", "-o", str(out)])
    assert r.exit_code == 0, r.stderr
    first = r.stdout.splitlines()[0]
    assert first.startswith("Planning qwen2.5-14b teacher -> qwen2.5-0.5b student with the workload of "
                            "the bundled default job 'llama70b-to-8b' on 2 x dgx-h100")
    assert load_plan(out).job == "qwen2.5-14b-to-qwen2.5-0.5b"
    r = runner.invoke(app, ["recommend", "-m", "tiny-cpu", "-c", "cpu-local", "--student", "tiny-teacher", "-f", "json"])
    assert r.stderr.startswith("Planning tiny-teacher teacher -> tiny-teacher student with the workload of job 'tiny-cpu'")


@pytest.mark.parametrize("args", [[], ["--top", "10", "-c", "l40s-pcie", "--nodes", "8"]])
def test_recommend_default_output_fits_100_columns(runner, args):
    """In a 100-column terminal the table keeps its natural width: no line is longer, nothing is cut."""
    r = runner.invoke(app, ["recommend", *args], env={"COLUMNS": "100"})
    assert r.exit_code == 0, r.stderr
    lines = r.stdout.splitlines()
    assert max(len(line) for line in lines) <= 100, "\n".join(x for x in lines if len(x) > 100)
    assert "…" not in r.stdout and "trl-gkd-zero3" in r.stdout and "trl-distill-zero3" in r.stdout and "OOM" in r.stdout


def test_recommend_wide_shows_every_column(runner):
    narrow = runner.invoke(app, ["recommend"], env={"COLUMNS": "400"}).stdout  # --wide: a column per baseline (10)
    wide = runner.invoke(app, ["recommend", "--wide"], env={"COLUMNS": "400"}).stdout
    for column in ("peak GiB (largest term)", "vs trl-gkd-ddp", "step s"):
        assert column in wide and column not in narrow
    assert re.search(r"\d\.\d \(teacher_weights\)[ │]+OOM", wide) and re.search(r"\d\.\d +OOM", narrow) and "(teacher_weights)" not in narrow
    assert max(map(len, wide.splitlines())) > 100


def test_estimate_disaggregated_shows_both_sides(runner):
    """A disaggregated plan has two kinds of device: the JSON and the table give each one's bytes."""
    args = ["estimate", "--teacher-split", "shard:8", "--student-split", "zero2", "--placement", "disaggregated:8", "--micro-batch", "2"]
    d = json.loads(runner.invoke(app, [*args, "-f", "json"]).stdout)
    sides, mem = d["memory_bytes_by_side"], d["memory_bytes"]
    assert sides["teacher_ranks"] == pytest.approx(sum(v for k, v in mem.items() if k.startswith("teacher_")))
    assert sides["student_ranks"] > sides["teacher_ranks"] and mem["total"] == pytest.approx(max(sides.values()))
    table = runner.invoke(app, args, env={"COLUMNS": "200"}).stdout
    assert "teacher ranks" in table and "student ranks" in table and "teacher_logits" in table


def test_recommend_shows_ties_as_one_line_and_says_why(runner, tmp_path):
    """The plans within 1% of the fastest are one line of ranges under #1, and the text after the
    table names them and says why #1 is the one."""
    job = yaml.safe_load((ROOT / "jobs" / "llama70b-to-8b.yaml").read_text())
    job["workload"]["rollout_engine"] = "hf-eager"  # eager rollouts: generation dominates, many layouts tie
    (tmp_path / "eager.yaml").write_text(yaml.safe_dump(job))
    r = runner.invoke(app, ["recommend", "-m", str(tmp_path / "eager.yaml")], env={"COLUMNS": "100"})
    assert r.exit_code == 0, r.stderr
    d = json.loads(runner.invoke(app, ["recommend", "-m", str(tmp_path / "eager.yaml"), "-f", "json"]).stdout)
    tied = [p for p in d["plans"] if p["tied_with_first"]]
    assert len(tied) > 1 and d["recommended_because"]
    assert re.search(rf"\+ {len(tied) - 1} more within 1% \(below\)", r.stdout)
    assert f"{len(tied)} plans within 1% of the fastest; #1 is recommended: " in r.stdout
    first = next(line for line in r.stdout.splitlines() if line.split()[:1] == ["1"])
    assert tied[0]["strategy"] in first and tied[1]["strategy"] in r.stdout
    assert all(p["free_bytes"] >= d["reserve_bytes"] for p in d["plans"])


def test_recommend_reserve_is_a_constraint(runner):
    d = json.loads(runner.invoke(app, ["recommend", "-f", "json", "--reserve", "0.2"]).stdout)
    assert d["reserve_bytes"] == pytest.approx(0.2 * d["usable_bytes"])
    assert all(p["free_bytes"] >= d["reserve_bytes"] for p in d["plans"])
    assert any("kept free" in why for why in d["rejected"])
    assert runner.invoke(app, ["recommend", "--reserve", "0.9"]).exit_code == 2  # out of range: usage error


def test_estimate_strategy_is_the_four_flags_in_one_word(runner):
    flags = ["--teacher-split", "shard:8", "--student-split", "zero2", "--placement", "disaggregated:8", "--micro-batch", "2"]
    a = json.loads(runner.invoke(app, ["estimate", *flags, "-f", "json"]).stdout)
    b = json.loads(runner.invoke(app, ["estimate", "--strategy", "shard:8/zero2/disaggregated:8/2", "-f", "json"]).stdout)
    assert a == b and a["strategy"] == "shard:8/zero2/disaggregated:8/2"
    r = runner.invoke(app, ["estimate", "--strategy", "shard:8/zero2", "--micro-batch", "2"])
    assert r.exit_code == 1 and "--strategy" in r.stderr and "--micro-batch" in r.stderr
    r = runner.invoke(app, ["estimate", "--strategy", "shard:8/zero2/colocated/b=2"])
    assert r.exit_code == 1 and "micro-batch 'b=2'" in r.stderr

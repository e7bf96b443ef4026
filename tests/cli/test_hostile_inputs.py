"""A table of hostile or careless inputs, each fed to the CLI: exit 1 (a sentence on one line) or 2
(a usage error), never a traceback, never a hang, and nothing written. Each row is a case found by
fuzzing (issue 16) so that it stays fixed."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml

from planner.cli import app
from planner.inputs.yamlio import dump_yaml
from planner.plan import fingerprint, load_plan

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "examples" / "tiny-replicate-ddp.yaml"


def plan_with(tmp: Path, name: str, change) -> str:
    data = yaml.safe_load(TINY.read_text())
    change(data)
    path = tmp / name
    path.write_text(dump_yaml(data))
    return str(path)


def _set(**kw):
    def change(d):
        for key, value in kw.items():
            *parents, last = key.split("__")
            target = d
            for p in parents:
                target = target[p]
            if value is None:
                target.pop(last, None)
            else:
                target[last] = value
    return change


# (argv with {tmp} and {plan:NAME} placeholders, plan changes by NAME, exit code, words the error line must hold)
CASES = [
    (["recommend", "--nodes", "1000"], 1, ["bound of 2048", "at most 256 nodes"]),
    (["estimate", "--nodes", "100000000"], 1, ["bound of 2048"]),
    (["sweep", "--x", "nodes", "--x-range", "1:100000000", "--csv", "{tmp}/m.csv", "--plot", ""], 1, ["bound of 2048"]),
    (["estimate", "--student-split", "hsdp:3"], 1, ["hsdp shard degree 3 does not divide"]),
    (["estimate", "--placement", "disaggregated:4", "--student-split", "hsdp"], 1, ["does not divide the 12"]),
    (["estimate", "--teacher-split", "shard:0"], 1, ["at least 1"]),
    (["estimate", "--student-split", "zero3:2"], 1, ["only hsdp takes a degree"]),
    (["estimate", "--plan", "{plan:noversion}"], 1, ["version"]),
    (["estimate", "--plan", "{plan:hsdp3}"], 1, ["hsdp shard degree 3 must divide"]),
    (["estimate", "--plan", "{plan:zero3shard1}"], 1, ["shard must be 2"]),
    (["estimate", "--plan", "{plan:huge}"], 1, ["bound of 2048"]),
    (["export", "{plan:toowide}", "--to", "slurm"], 1, ["needs 4 processes per node", "has 2 per node"]),
    (["estimate", "--plan", "{plan:toowide}"], 1, ["needs 4 processes per node"]),
    (["export", "{plan:newline}", "--to", "torchrun"], 1, ["teacher.ref", "control character"]),
    (["estimate", "--plan", "/dev/zero"], 1, ["not a regular file"]),
    (["validate", str(TINY), "--metrics", "/dev/zero"], 1, ["not a regular file"]),
    (["recommend", "-o", "{tmp}"], 1, ["is a directory"]),
    (["recommend", "--export", "torchrun", "-o", "{tmp}/x", "--plan-out", "{tmp}/x"], 1, ["name the same file"]),
    (["export", str(TINY), "--to", "slurm", "-o", "{tmp}/no/such/job.sh"], 1, ["does not exist"]),
    (["export", str(TINY), "--to", "slurm", "--python", "-c"], 1, ["--python"]),
    (["recommend", "--nodes", "0"], 2, []),
    (["export", str(TINY), "--to", "pbs"], 2, []),
    # sweep: an unknown variable, ranges that are not finite, a grid point over a size bound
    (["sweep", "--x", "foo", "--csv", "{tmp}/m.csv", "--plot", ""], 1, ["--x: 'foo' is not one of"]),
    (["sweep", "--x-range", "nan:10", "--csv", "{tmp}/m.csv", "--plot", ""], 1, ["--x-range", "finite"]),
    (["sweep", "--x-range", "1:1e400:log", "--csv", "{tmp}/m.csv", "--plot", ""], 1, ["--x-range", "finite"]),
    (["sweep", "--y-range", "8:1e30", "--csv", "{tmp}/m.csv", "--plot", ""], 1, ["num_layers", "bound of 16,777,216"]),
    # model and job files: sizes past the bound, a list as dtype, `true` as a count, a layout that divides by 0
    (["estimate", "--teacher", "{file:huge.yaml}"], 1, ["hidden", "bound of 16,777,216"]),
    (["estimate", "--teacher", "{file:huge-hf.json}"], 1, ["hidden", "bound of 16,777,216"]),
    (["estimate", "--teacher", "{file:deep-hf.json}"], 1, ["num_hidden_layers", "between 1 and 16,777,216"]),
    (["estimate", "--teacher", "{file:dtype-list.json}"], 1, ["torch_dtype", "['bfloat16'] is not one of"]),
    (["estimate", "--teacher", "{file:bool-layers.yaml}"], 1, ["num_layers", "got true/false"]),
    (["estimate", "--teacher", "{file:moe-step0.json}"], 1, ["layer layout", "not usable"]),
    (["estimate", "--model", "{file:big-micro.yaml}", "-c", "cpu-local"], 1, ["micro_batch_max", "1024"]),
    (["estimate", "--plan", "{plan:boolnodes}"], 1, ["nodes", "got true/false"]),
    # inflection: a micro-batch of 0
    (["inflection", "--model", "tiny-cpu", "-c", "cpu-local", "--between", "best", "--between", "replicate/ddp/colocated/0"],
     1, ["micro-batch", "at least 1"]),
    # a plan whose shape is not its ref's
    (["estimate", "--plan", "{plan:reshaped}"], 1, ["teacher.shape disagrees with its ref 'tiny-teacher'", "num_layers 9 here, 8 there"]),
    (["export", "{plan:reshaped}", "--to", "torchrun"], 1, ["teacher.shape disagrees"]),
    # validate --metrics: wrong shapes, NaN, another plan's metrics
    (["validate", str(TINY), "--metrics", "{file:m-list.json}"], 1, ["expected a JSON object", "got list"]),
    (["validate", str(TINY), "--metrics", "{file:m-empty.json}"], 1, ["plan_fingerprint: Field required", "more"]),
    (["validate", str(TINY), "--metrics", "{file:m-text-times.json}"], 1, ["step_times_s[0]"]),
    (["validate", str(TINY), "--metrics", "{file:m-nan-times.json}"], 1, ["step_times_s[1]", "finite"]),
    (["validate", str(TINY), "--metrics", "{file:m-no-times.json}"], 1, ["step_times_s", "at least 1"]),
    (["validate", str(TINY), "--metrics", "{file:m-bool-times.json}"], 1, ["step_times_s", "true/false"]),
    (["validate", str(TINY), "--metrics", "{file:m-memory-list.json}"], 1, ["peak_memory_bytes", "dictionary"]),
    (["validate", str(TINY), "--metrics", "{file:m-roles.json}"], 1, ["roles and peak_memory_bytes must name the same ranks"]),
    (["validate", str(TINY), "--metrics", "{file:m-other-plan.json}"], 1, ["measured with another plan", "teacher.strategy 'shard' there, 'replicate' in the plan"]),
]


def _metrics(**change) -> str:
    """Metrics of a run of TINY as the executor writes them, with `change`."""
    mem = {"student_params": 1e6, "teacher_params": 2e6, "peak_rss": 4e8}
    data = {"plan_fingerprint": fingerprint(load_plan(TINY)), "step_times_s": [1.0, 0.1, 0.1], "warmup_steps": 1,
            "samples_per_s": 80.0, "device": "cpu", "peak_memory_bytes": {"0": mem, "1": mem}, "roles": {"0": "both", "1": "both"},
            "teacher": {"strategy": "replicate"}}
    return json.dumps(data | change)


_HF = {"model_type": "llama", "num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 4, "intermediate_size": 128,
       "vocab_size": 256}
FILES = {
    "huge.yaml": "name: huge\nnum_layers: 2\nhidden: 1" + "0" * 155 + "\nnum_heads: 2\nffn: 8\nvocab: 64\n",
    "huge-hf.json": json.dumps(_HF | {"hidden_size": 1e155}),
    "deep-hf.json": json.dumps(_HF).replace('"num_hidden_layers": 2', '"num_hidden_layers": 1' + "0" * 155),
    "dtype-list.json": json.dumps(_HF | {"torch_dtype": ["bfloat16"]}),
    "bool-layers.yaml": "name: b\nnum_layers: true\nhidden: 64\nnum_heads: 4\nffn: 128\nvocab: 256\n",
    "moe-step0.json": json.dumps(_HF | {"model_type": "qwen2_moe", "num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32,
                                        "shared_expert_intermediate_size": 64, "decoder_sparse_step": 0}),
    "big-micro.yaml": "teacher: tiny-teacher\nstudent: tiny-student\nworkload:\n  micro_batch_max: 100000\n",
    "m-list.json": "[1, 2]",
    "m-empty.json": "{}",
    "m-text-times.json": _metrics(step_times_s=["fast"]),
    "m-nan-times.json": _metrics(step_times_s=[1.0, float("nan")]),
    "m-no-times.json": _metrics(step_times_s=[]),
    "m-bool-times.json": _metrics(step_times_s=[True, True]),
    "m-memory-list.json": _metrics(peak_memory_bytes=[1e8, 1e8]),
    "m-roles.json": _metrics(roles={"0": "both"}),
    "m-other-plan.json": _metrics(plan_fingerprint="0" * 16, teacher={"strategy": "shard"}),
}

PLANS = {
    "noversion": _set(version=None),
    "hsdp3": lambda d: (_set(nodes=1, gpus_per_node=2)(d), d["student"].update(strategy="hsdp", shard=3)),
    "zero3shard1": lambda d: d["student"].update(strategy="zero3", shard=1),
    "huge": _set(nodes=1_000_000_000),
    "toowide": lambda d: (d.update(gpus_per_node=4), d["workload"].update(global_batch=d["workload"]["global_batch"] * 2),
                          d["teacher"].update(ranks=[0, 1, 2, 3]), d["student"].update(ranks=[0, 1, 2, 3])),
    "newline": lambda d: d["teacher"].update(ref="tiny-teacher\ntouch pwned"),
    "boolnodes": _set(nodes=True),
    "reshaped": lambda d: d["teacher"]["shape"].update(num_layers=d["teacher"]["shape"]["num_layers"] + 1),
}


@pytest.mark.parametrize("argv, code, words", CASES, ids=[" ".join(c[0])[:60] for c in CASES])
def test_hostile_input(runner, tmp_path, argv, code, words):
    work = tmp_path / "work"
    work.mkdir()
    plans = tmp_path / "plans"
    plans.mkdir()
    args = []
    for a in argv:
        if a.startswith("{plan:"):
            name = a[6:-1]
            a = plan_with(plans, f"{name}.yaml", PLANS[name])
        elif a.startswith("{file:"):
            name = a[6:-1]
            (plans / name).write_text(FILES[name])
            a = str(plans / name)
        args.append(a.replace("{tmp}", str(work)))
    t0 = time.perf_counter()
    r = runner.invoke(app, args)
    assert time.perf_counter() - t0 < 30, "took too long: a bound is missing"
    assert r.exit_code == code, (r.exit_code, r.output)
    assert "Traceback" not in r.output and (r.exception is None or isinstance(r.exception, SystemExit)), r.output
    if code == 1:
        errors = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert len(errors) == 1 and errors[0].startswith("error:"), r.stderr
        for w in words:
            assert w in errors[0], (w, errors[0])
    assert list(work.iterdir()) == [], "something was written"

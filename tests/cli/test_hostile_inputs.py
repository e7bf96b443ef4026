"""A table of hostile or careless inputs, each fed to the CLI: exit 1 (a sentence on one line) or 2
(a usage error), never a traceback, never a hang, and nothing written. Each row is a case found by
fuzzing (issue 16) so that it stays fixed."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from planner.cli import app
from planner.inputs.yamlio import dump_yaml

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
]

PLANS = {
    "noversion": _set(version=None),
    "hsdp3": lambda d: (_set(nodes=1, gpus_per_node=2)(d), d["student"].update(strategy="hsdp", shard=3)),
    "zero3shard1": lambda d: d["student"].update(strategy="zero3", shard=1),
    "huge": _set(nodes=1_000_000_000),
    "toowide": lambda d: (d.update(gpus_per_node=4), d["workload"].update(global_batch=d["workload"]["global_batch"] * 2),
                          d["teacher"].update(ranks=[0, 1, 2, 3]), d["student"].update(ranks=[0, 1, 2, 3])),
    "newline": lambda d: d["teacher"].update(ref="tiny-teacher\ntouch pwned"),
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

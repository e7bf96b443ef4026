"""Hostile values in every field that reaches a launch script: refused (control characters) or
quoted, and then proven harmless by running the scripts with stand-ins for python, srun and scontrol.

A value "wins" if running the script creates a file named `pwned*` or if the recorded argv lost or
changed it; a control character must be refused with one line that names the field.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import pytest

from planner.cli import app
from planner.inputs.errors import InputError
from planner.inputs.yamlio import dump_yaml
from planner.launch import render
from planner.plan import Plan, load_plan, write_plan

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "examples" / "tiny-replicate-ddp.yaml"

# Quoting attacks: each would create a pwned* file in the working folder if the shell expanded it.
SHELL = ["$(touch pwned1)", "`touch pwned2`", "'; touch pwned3; '", '"; touch pwned4; "', "x' 'y; touch pwned5 #",
         "${IFS}touch${IFS}pwned6", "-rf *", "\\'$(touch pwned7)\\'"]
# Line-structure attacks: each must be refused (a newline ends a `#` comment or `#SBATCH` line).
CONTROL = ["ok\ntouch pwned8", "ok\rtouch pwned9", "ok\x00touch", "ok\ttab", "ok\x1b[2J", "ok\x85nel", "ok\u2028ls",
           "ok\u202eevil"]

PLAN_FIELDS = ["teacher.ref", "student.ref", "job", "dataset", "tokenizer", "training.output_dir", "training.checkpoint_dir"]
TOPOLOGY_FIELDS = ["topology name", "slurm.partition", "slurm.account", "slurm.time_limit", "slurm.gpus_flag", "nccl_env value"]
FLAG_FIELDS = ["--job-name", "--partition", "--account", "--time", "--python", "--metrics-out", "plan path", "--checkpoint-dir",
               "--module", "--container-image"]
SLURM_ONLY = {"--partition", "--account", "--time", "slurm.partition", "slurm.account", "slurm.time_limit", "slurm.gpus_flag",
              "--container-image"}


def site(tmp: Path, field: str, value: str) -> tuple[Path, dict]:
    """A two-node NCCL plan (its topology next to it) with `value` in `field`; the render options."""
    topo = load_cluster_data()
    data = load_plan(TINY).model_dump()
    data.update(cluster="site.yaml", nodes=2, gpus_per_node=2, backend="nccl", micro_batch=1, grad_accum=1)
    data["teacher"]["ranks"] = data["student"]["ranks"] = list(range(4))
    data["workload"]["global_batch"] = 4
    opts: dict = {"steps": 3}
    name = "plan.yaml"
    if field in ("teacher.ref", "student.ref"):
        data[field.split(".")[0]]["ref"] = value
    elif field in ("job", "dataset", "tokenizer"):
        data[field] = value
    elif field.startswith("training."):
        data["training"][field.split(".")[1]] = value
    elif field == "topology name":
        topo["name"] = value
    elif field.startswith("slurm."):
        topo["slurm"][field.split(".")[1]] = value
    elif field == "nccl_env value":
        topo["nccl_env"] = {"NCCL_DEBUG": value}
    elif field in ("--metrics-out", "--checkpoint-dir"):
        opts[field.lstrip("-").replace("-", "_")] = tmp / value
    elif field == "--module":
        opts["modules"] = ("gcc", value)
    elif field == "plan path":
        name = value + ".yaml"
    else:
        opts[field.lstrip("-").replace("-", "_")] = value
    (tmp / "site.yaml").write_text(dump_yaml(topo))
    path = tmp / name
    write_plan(Plan(**data), path)
    return path, opts


def load_cluster_data() -> dict:
    from planner.inputs.yamlio import read_mapping

    topo = read_mapping(ROOT / "topologies" / "dgx-h100.yaml")
    topo["slurm"] = dict(topo["slurm"], partition="gpu", account="kd")
    return topo


def run(text: str, work: Path, to: str, python_from_env: bool = True) -> tuple[subprocess.CompletedProcess, list[list[str]]]:
    """Run the script in `work` with stand-in commands that record their argv as JSON lines."""
    bin_ = work / "bin"
    bin_.mkdir()
    record = work / "calls"
    record.mkdir()
    for name in ("python", "srun"):  # bash only (fast): each call's argv, NUL-separated, in its own file
        (bin_ / name).write_text(f'#!/bin/bash\nprintf "%s\\0" {name} "$@" > {shlex.quote(str(record))}/$$\n')
    (bin_ / "scontrol").write_text('#!/bin/bash\nprintf "node001\\nnode002\\n"\n')
    (bin_ / "module").write_text(f'#!/bin/bash\nprintf "%s\\0" "$@" >> {shlex.quote(str(work))}/modules\n')  # Lmod's, as a program
    for f in bin_.iterdir():
        f.chmod(0o755)
    script = work / "job.sh"
    script.write_text(text)
    env = {"PATH": f"{bin_}:{os.environ['PATH']}", "HOME": str(work)}
    if python_from_env:
        env["PYTHON"] = str(bin_ / "python")
    env |= ({"SLURM_JOB_NODELIST": "node[001-002]", "SLURM_NNODES": "2", "SLURM_JOB_ID": "7"} if to == "slurm"
            else {"NODE_RANK": "0", "HEAD": "node001"})
    res = subprocess.run(["bash", str(script)], cwd=work, env=env, capture_output=True, text=True, timeout=30)
    calls = [f.read_bytes().decode().split("\0")[:-1] for f in sorted(record.iterdir(), key=lambda f: f.stat().st_mtime_ns)]
    return res, calls


def pwned(tmp: Path) -> list[str]:
    return [p.name for p in tmp.rglob("pwned*")]


@pytest.mark.parametrize("to", ["slurm", "torchrun"])
@pytest.mark.parametrize("field", PLAN_FIELDS + TOPOLOGY_FIELDS + FLAG_FIELDS)
def test_shell_metacharacters_stay_data(tmp_path, field, to):
    if to == "torchrun" and field in SLURM_ONLY:
        pytest.skip("not in a torchrun script")
    for i, value in enumerate(SHELL):
        if field == "plan path" and "/" in value:
            continue
        work = tmp_path / f"v{i}"
        work.mkdir()
        plan, opts = site(work, field, value)
        if field == "--python" and value.startswith("-"):
            with pytest.raises(InputError, match="--python: .* not something that starts with '-'"):
                render(plan, None, to, **opts)
            continue
        text = render(plan, None, to, **opts)
        res, calls = run(text, work, to, python_from_env=field != "--python")
        assert not pwned(tmp_path), (field, value, text)
        if field == "--python" and to == "torchrun":  # the quoted name is run as a command, and is not found
            assert res.returncode == 127 and not calls, res.stderr
            continue
        assert res.returncode == 0, (field, value, res.stderr)
        argv = calls[0]
        assert str(plan.resolve()) in argv  # the plan path arrives as one word, intact
        if field == "--python":  # srun gets the interpreter as one word
            assert argv[argv.index("torch.distributed.run") - 2] == value
        if field in ("--metrics-out", "--checkpoint-dir"):
            assert argv[argv.index(field) + 1] == str((work / value).resolve())
        if field == "--module":
            assert (work / "modules").read_bytes().decode().split("\0")[:-1] == ["load", "gcc", "load", value]
        if field == "--container-image":
            assert f"--container-image={value}" in argv
        if field in ("job", "--job-name") and to == "torchrun":
            assert f"--rdzv-id={value}" in argv


@pytest.mark.parametrize("to", ["slurm", "torchrun"])
@pytest.mark.parametrize("field", PLAN_FIELDS + TOPOLOGY_FIELDS + FLAG_FIELDS)
def test_control_characters_are_refused_naming_the_field(tmp_path, field, to):
    if to == "torchrun" and field in SLURM_ONLY:
        pytest.skip("not in a torchrun script")
    for i, value in enumerate(CONTROL):
        if field in ("plan path", "--metrics-out", "--checkpoint-dir") and "\x00" in value:
            continue  # a file name cannot hold NUL
        if value == "ok\x85nel" and field in PLAN_FIELDS + TOPOLOGY_FIELDS:
            continue  # YAML reads a raw NEL as a line break and folds it into a space
        work = tmp_path / f"v{i}"
        work.mkdir()
        plan, opts = site(work, field, value)
        with pytest.raises(InputError) as e:
            render(plan, None, to, **opts)
        assert len(e.value.lines) == 1 and "\n" not in e.value.lines[0]
        label = {"nccl_env value": "nccl_env.NCCL_DEBUG", "topology name": "topology name"}.get(field, field)
        assert e.value.lines[0].startswith(label), (field, e.value.lines)
        assert not pwned(tmp_path)


def test_nccl_env_names_are_checked(tmp_path):
    plan, _ = site(tmp_path, "job", "j")
    topo = load_cluster_data() | {"nccl_env": {"X=1; touch pwned #": "1"}}
    (tmp_path / "site.yaml").write_text(dump_yaml(topo))
    with pytest.raises(InputError, match="not a valid variable name"):
        render(plan, None, "slurm")


def test_cli_refuses_in_one_line_and_writes_nothing(tmp_path, runner):
    plan, _ = site(tmp_path, "teacher.ref", "models/x\ntouch pwned")
    out = tmp_path / "job.sh"
    r = runner.invoke(app, ["export", str(plan), "--to", "torchrun", "-o", str(out)])
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert r.stderr.count("\n") == 1 and "teacher.ref" in r.stderr and "control character" in r.stderr
    assert not out.exists() and not pwned(tmp_path)

"""`planner export`: torchrun commands and sbatch scripts for 1, 2 and 16 nodes, quoting, and the CLI.

The scripts are checked three ways: by reading them, by `bash -n` (and shellcheck when installed),
and by running them with stand-ins for `python`, `srun` and `scontrol` that print their arguments.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
import yaml

from planner.cli import app
from planner.inputs.errors import InputError
from planner.launch import render
from planner.plan import Plan, load_plan, write_plan

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "examples" / "tiny-replicate-ddp.yaml"
DISAGG = ROOT / "examples" / "tiny-disaggregated.yaml"
EVIL = "$(rm -rf ~)"  # only rendered and parsed here, never run


def scaled(tmp_path: Path, nodes: int, name: str = "plan.yaml") -> Path:
    """The tiny plan spread over `nodes` dgx-h100 nodes (8 GPUs each), written to `tmp_path/name`."""
    data = load_plan(TINY).model_dump()
    world = nodes * 8
    data.update(cluster="dgx-h100", nodes=nodes, gpus_per_node=8, backend="nccl", micro_batch=1, grad_accum=1)
    data["teacher"]["ranks"] = data["student"]["ranks"] = list(range(world))
    data["workload"]["global_batch"] = world
    path = tmp_path / name
    write_plan(Plan(**data), path)
    return path


def line_with(text: str, word: str) -> str:
    return next(ln for ln in text.splitlines() if word in ln)


def command(text: str, start: str) -> list[str]:
    """The shell words of the (backslash-continued) command that starts with `start`."""
    joined = text.replace("\\\n", " ")
    return shlex.split(next(ln for ln in joined.splitlines() if ln.startswith(start)))


def check_shell(text: str, tmp_path: Path) -> None:
    script = tmp_path / "check.sh"
    script.write_text(text)
    res = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    if shutil.which("shellcheck"):  # SC2016: a literal $ in single quotes is what quoting is for
        res = subprocess.run(["shellcheck", "-s", "bash", "-e", "SC2016", str(script)], capture_output=True, text=True)
        assert res.returncode == 0, res.stdout


def stubs(tmp_path: Path) -> Path:
    """A bin folder with `python`, `srun` and `scontrol` that record their arguments as JSON lines."""
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    record = tmp_path / "calls.jsonl"
    for name in ("python", "srun"):
        (bin_ / name).write_text(f'#!/bin/bash\n"{shutil.which("python3")}" -c \'import json,sys; print(json.dumps(sys.argv[1:]))\' '
                                 f'{name} "$@" >> {shlex.quote(str(record))}\n')
    (bin_ / "scontrol").write_text('#!/bin/bash\nprintf "node001\\nnode002\\n"\n')
    for f in bin_.iterdir():
        f.chmod(0o755)
    return bin_


def run_with_stubs(text: str, tmp_path: Path, **env: str) -> list[list[str]]:
    bin_ = stubs(tmp_path)
    script = tmp_path / "job.sh"
    script.write_text(text)
    full = {"PATH": f"{bin_}:{os.environ['PATH']}", "PYTHON": str(bin_ / "python"), "HOME": str(tmp_path)} | env
    res = subprocess.run(["bash", str(script)], cwd=tmp_path, env=full, capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    return [json.loads(ln) for ln in (tmp_path / "calls.jsonl").read_text().splitlines()]


# ---- one node ---------------------------------------------------------------------------------

def test_one_node_torchrun_is_standalone(tmp_path):
    text = render(TINY, None, "torchrun", steps=3, metrics_out="m.json")
    words = command(text, "exec ")
    assert words[:6] == ["exec", "$PYTHON", "-m", "torch.distributed.run", "--standalone", "--nproc-per-node"]
    assert words[6] == "2" and "--nnodes" not in words
    assert words[7:11] == ["-m", "planner", "run", str(TINY)]
    assert words[11:] == ["--steps", "3", "--metrics-out", str(Path("m.json").resolve())]
    assert "NCCL" not in text  # cpu-local sets no network variables
    check_shell(text, tmp_path)


def test_one_node_slurm_cpu_local(tmp_path):
    text = render(TINY, None, "slurm", steps=3)
    assert "#SBATCH --nodes=1\n" in text and "#SBATCH --ntasks-per-node=1\n" in text
    assert "#SBATCH --job-name=tiny-cpu\n" in text and "#SBATCH --time=01:00:00\n" in text
    assert "gpus" not in text and "gres" not in text  # gloo: no GPUs asked for
    for absent in ("--partition", "--account", "--cpus-per-task"):
        assert absent not in text  # cpu-local has no hints for them
    assert "#SBATCH --output=tiny-cpu-%j.out\n" in text and "#SBATCH --error=tiny-cpu-%j.err\n" in text
    assert "set -euo pipefail" in text
    assert 'head=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | sed -n 1p)' in text
    words = command(text, "srun ")
    i = words.index("torch.distributed.run")
    assert words[i + 1:i + 11] == ["--nnodes", "$SLURM_NNODES", "--nproc-per-node", "2", "--rdzv-id", "$SLURM_JOB_ID",
                                   "--rdzv-backend", "c10d", "--rdzv-endpoint", "$head:29500"]
    assert words[i + 11:] == ["-m", "planner", "run", str(TINY), "--steps", "3"]
    check_shell(text, tmp_path)


@pytest.mark.parametrize("to, start", [("torchrun", "exec "), ("slurm", "srun ")])
def test_random_init_is_passed_only_when_asked(to, start):
    """The bundled tiny shapes have no weights: `planner run` needs --random-init for them, and the
    script carries it only when `export --random-init` asked for it."""
    assert "--random-init" not in command(render(TINY, None, to), start)
    assert command(render(TINY, None, to, random_init=True), start)[-1] == "--random-init"


def test_export_random_init_flag(runner):
    for extra, want in (([], False), (["--random-init"], True)):
        r = runner.invoke(app, ["export", str(TINY), "--to", "torchrun", *extra])
        assert r.exit_code == 0 and ("--random-init" in command(r.stdout, "exec ")) == want, r.output


@pytest.mark.parametrize("to", ["torchrun", "slurm"])
def test_recommend_export_writes_what_export_writes(runner, tmp_path, to):
    """`recommend --export` and `export` go through one code path: the same script from the same
    plan, with --random-init when asked (it was once left out of recommend's)."""
    for extra in ([], ["--random-init"]):
        script, plan = tmp_path / f"job{len(extra)}.sh", tmp_path / f"job{len(extra)}.plan.yaml"
        r = runner.invoke(app, ["recommend", "-m", "tiny-cpu", "-c", "cpu-local", "--export", to, "-o", str(script), *extra])
        assert r.exit_code == 0, r.output
        r = runner.invoke(app, ["export", str(plan), "--to", to, *extra])
        assert r.exit_code == 0, r.output
        assert r.stdout == script.read_text()
        assert ("--random-init" in script.read_text()) == bool(extra)
    r = runner.invoke(app, ["recommend", "-m", "tiny-cpu", "-c", "cpu-local", "--random-init", "-o", str(tmp_path / "p.yaml")])
    assert r.exit_code == 1 and "--random-init" in r.stderr and "--export" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "p.yaml").exists()


def test_default_python_is_this_interpreter_by_absolute_path():
    import sys

    text = render(TINY, None, "slurm")
    assert f"PYTHON=${{PYTHON:-{shlex.quote(str(Path(sys.executable).absolute()))}}}" in text
    assert "PYTHON=${PYTHON:-python3}" in render(TINY, None, "slurm", python="python3")


# ---- several nodes ----------------------------------------------------------------------------

def test_two_nodes_torchrun_per_node_command(tmp_path):
    plan = scaled(tmp_path, 2)
    text = render(plan, None, "torchrun", port=29555)
    words = command(text, "exec ")
    assert words[words.index("--nnodes") + 1] == "2" and words[words.index("--nproc-per-node") + 1] == "8"
    assert words[words.index("--node-rank") + 1] == "$NODE_RANK"
    assert words[words.index("--rdzv-backend") + 1] == "c10d"
    assert words[words.index("--rdzv-endpoint") + 1] == "$HEAD:29555"
    assert "--standalone" not in words
    assert "0 on the head node" in line_with(text, "#   NODE_RANK") and "HEAD" in line_with(text, "NODE_RANK=0 HEAD=")
    assert "export NCCL_IB_HCA=mlx5" in text and "export NCCL_SOCKET_IFNAME='^lo,docker'" in text
    check_shell(text, tmp_path)
    calls = run_with_stubs(text, tmp_path, NODE_RANK="1", HEAD="node001")
    assert calls[0][calls[0].index("--rdzv-endpoint") + 1] == "node001:29555"
    assert calls[0][calls[0].index("--node-rank") + 1] == "1"


def test_two_node_torchrun_needs_its_variables(tmp_path):
    text = render(scaled(tmp_path, 2), None, "torchrun")
    script = tmp_path / "t.sh"
    script.write_text(text)
    res = subprocess.run(["bash", str(script)], env={"PATH": os.environ["PATH"]}, capture_output=True, text=True)
    assert res.returncode != 0 and "NODE_RANK" in res.stderr


def test_two_nodes_slurm(tmp_path):
    text = render(scaled(tmp_path, 2), None, "slurm")
    assert "#SBATCH --nodes=2\n" in text and "#SBATCH --gpus-per-node=8\n" in text
    assert "#SBATCH --cpus-per-task=96\n" in text and "#SBATCH --time=04:00:00\n" in text
    assert "srun --kill-on-bad-exit=1 --cpus-per-task=96 " in text
    assert "export NCCL_SOCKET_IFNAME='^lo,docker'" in text
    check_shell(text, tmp_path)
    calls = run_with_stubs(text, tmp_path, SLURM_JOB_NODELIST="node[001-002]", SLURM_NNODES="2", SLURM_JOB_ID="42")
    srun = calls[0]
    assert srun[0] == "srun" and srun[srun.index("--rdzv-endpoint") + 1] == "node001:29500"
    assert srun[srun.index("--nnodes") + 1] == "2" and srun[srun.index("--rdzv-id") + 1] == "42"


def test_sixteen_nodes_from_recommend(tmp_path, runner):
    plan = tmp_path / "p16.yaml"
    job = yaml.safe_load((ROOT / "jobs" / "llama70b-to-8b.yaml").read_text())
    job["workload"]["teacher_serving"] = "in-process"  # a served teacher needs a checkpoint folder to export (test_export_served.py)
    job["workload"]["rollout_placement"] = "colocated"  # so do vLLM servers of the student
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job))
    res = runner.invoke(app, ["recommend", "-m", str(tmp_path / "job.yaml"), "-c", "dgx-h100", "--nodes", "16", "-o", str(plan)])
    assert res.exit_code == 0, res.output
    text = render(plan, None, "slurm", partition="gpu", account="kd", time="12:00:00", port=6000, steps=5)
    for want in ("--nodes=16", "--gpus-per-node=8", "--partition=gpu", "--account=kd", "--time=12:00:00"):
        assert f"#SBATCH {want}\n" in text
    words = command(text, "srun ")
    assert words[words.index("--nproc-per-node") + 1] == "8"
    assert words[words.index("--rdzv-endpoint") + 1] == "$head:6000"
    assert words[-2:] == ["--steps", "5"]
    assert load_plan(plan).nodes == 16
    check_shell(text, tmp_path)
    torch16 = render(plan, None, "torchrun")
    assert command(torch16, "exec ")[command(torch16, "exec ").index("--nnodes") + 1] == "16"
    check_shell(torch16, tmp_path)


def test_gres_style_gpu_flag(tmp_path):
    topo = (ROOT / "topologies" / "dgx-h100.yaml").read_text().replace("gpus_flag: --gpus-per-node", "gpus_flag: --gres=gpu")
    (tmp_path / "site.yaml").write_text(topo)
    data = load_plan(scaled(tmp_path, 2)).model_dump() | {"cluster": "site.yaml"}
    write_plan(Plan(**data), tmp_path / "site-plan.yaml")
    text = render(tmp_path / "site-plan.yaml", None, "slurm")  # topology found next to the plan
    assert "#SBATCH --gres=gpu:8\n" in text and "gpus-per-node" not in text


def test_disaggregated_plan(tmp_path):
    for to in ("slurm", "torchrun"):
        text = render(DISAGG, None, to)
        assert "disaggregated" in text and "teacher tiny-teacher (replicate) on ranks 0;" in text
        assert "student tiny-student (ddp) on ranks 1." in text
        assert "--nproc-per-node 2" in text  # one launch for the whole world; the executor splits the roles
        check_shell(text, tmp_path)


# ---- quoting ----------------------------------------------------------------------------------

@pytest.mark.parametrize("to", ["slurm", "torchrun"])
@pytest.mark.parametrize("nodes", [1, 2])
def test_quoting_spaces_and_shell_characters(tmp_path, to, nodes):
    folder = tmp_path / "my plans"
    folder.mkdir()
    plan = scaled(folder, 2, "kd plan's.yaml") if nodes == 2 else folder / "kd plan's.yaml"
    if nodes == 1:
        shutil.copy(TINY, plan)
    text = render(plan, None, to, job_name=EVIL, metrics_out=folder / "out m.json")
    words = command(text, "srun " if to == "slurm" else "exec ")
    assert str(plan) in words and str(folder / "out m.json") in words  # one word each, absolute
    if to == "slurm":
        assert "#SBATCH --job-name='$(rm -rf ~)'\n" in text
        assert "#SBATCH --output=rm_-rf-%j.out\n" in text
    if to == "torchrun" and nodes == 2:
        assert f"--rdzv-id={EVIL}" in words
    assert "$(rm" not in text.replace("'$(rm -rf ~)'", "")  # never unquoted
    check_shell(text, tmp_path)


def test_quoting_holds_when_run(tmp_path):
    """Run the scripts (stand-ins for python/srun) with a job name that would create a file if expanded."""
    folder = tmp_path / "a b"
    folder.mkdir()
    plan = scaled(folder, 2, "p $x.yaml")
    for to, env in (("slurm", {"SLURM_JOB_NODELIST": "n1", "SLURM_NNODES": "2", "SLURM_JOB_ID": "7"}),
                    ("torchrun", {"NODE_RANK": "0", "HEAD": "n1"})):
        work = tmp_path / to
        work.mkdir()
        calls = run_with_stubs(render(plan, None, to, job_name="x $(touch pwned) `touch pwned2`"), work, **env)
        assert str(plan) in calls[0]
        assert not list(work.glob("pwned*"))


def test_control_characters_are_refused():
    with pytest.raises(InputError, match="control characters"):
        render(TINY, None, "slurm", job_name="ok\nrm -rf ~")


# ---- the command ------------------------------------------------------------------------------

def test_cli_stdout_file_and_force(tmp_path, runner):
    res = runner.invoke(app, ["export", str(TINY), "--to", "slurm", "--steps", "3"])
    assert res.exit_code == 0 and res.stdout.startswith("#!/bin/bash\n#SBATCH")
    out = tmp_path / "job.sh"
    res = runner.invoke(app, ["export", str(TINY), "--to", "slurm", "-o", str(out)])
    assert res.exit_code == 0 and out.stat().st_mode & stat.S_IXUSR and "sbatch" in res.stderr
    assert out.read_text() == render(TINY, None, "slurm")
    res = runner.invoke(app, ["export", str(TINY), "--to", "torchrun", "-o", str(out)])
    assert res.exit_code == 1 and "exists; pass --force" in res.stderr
    res = runner.invoke(app, ["export", str(TINY), "--to", "torchrun", "-o", str(out), "--force"])
    assert res.exit_code == 0 and "--standalone" in out.read_text()


def test_cli_errors(tmp_path, runner):
    res = runner.invoke(app, ["export", str(TINY), "--to", "torchrun", "--partition", "gpu"])
    assert res.exit_code == 2  # a slurm-only flag: usage error
    res = runner.invoke(app, ["export", str(TINY), "--to", "pbs"])
    assert res.exit_code == 2
    res = runner.invoke(app, ["export", str(tmp_path / "missing.yaml"), "--to", "slurm"])
    assert res.exit_code == 1 and "error:" in res.stderr and "Traceback" not in res.output


def test_env_from_topology():
    from planner.inputs.load import load_cluster
    from planner.launch.env import exports, variables

    cpu = load_cluster("cpu-local")
    assert exports(cpu, "gloo") == []
    eth = cpu.model_copy(update={"nccl_env": {"NCCL_SOCKET_IFNAME": "eth0"}})
    assert variables(eth, "gloo") == {"NCCL_SOCKET_IFNAME": "eth0", "GLOO_SOCKET_IFNAME": "eth0"}
    assert variables(eth, "nccl") == {"NCCL_SOCKET_IFNAME": "eth0"}
    assert "GLOO_SOCKET_IFNAME" not in variables(load_cluster("dgx-h100"), "gloo")  # '^lo,docker' means nothing to gloo
    with pytest.raises(InputError, match="not a valid variable name"):
        variables(cpu.model_copy(update={"nccl_env": {"A=B; rm": "x"}}), "nccl")

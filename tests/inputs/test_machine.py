"""A CPU topology records the CPU it was measured on; on another CPU the planner says so, or plans
with this machine's cached calibration (`planner calibrate --cache`). The CPU is read from a fake
/proc/cpuinfo (KD_PLANNER_CPUINFO) so that every case runs on any machine."""

import pytest
import yaml

from planner.cli import app
from planner.inputs.load import load_cluster
from planner.inputs.machine import cached_topology, this_cpu


def cpuinfo(name: str, family: str, model: str, flags: str, cpus: int = 2) -> str:
    return "".join(f"processor\t: {i}\nvendor_id\t: AuthenticAMD\ncpu family\t: {family}\nmodel\t\t: {model}\n"
                   f"model name\t: {name}\nflags\t\t: fpu sse sse2 {flags}\n\n" for i in range(cpus))


ZEN5 = cpuinfo("AMD EPYC", "26", "2", "avx avx2 avx512f avx512_bf16")  # what cpu-local.yaml was measured on
AVX2 = cpuinfo("AMD EPYC 7B12", "23", "49", "avx avx2 fma")
TINY = ["--teacher", "models/tiny-student.json", "--student", "models/tiny-student.json"]


@pytest.fixture
def cpu(tmp_path, monkeypatch, root):
    """Point the reader at a fake cpuinfo; the cache in tmp_path; run from the repository root."""
    from planner.cost import compile as compiled
    compiled.compiled()  # compiled once where it is cached, not again in the fresh cache below
    (tmp_path / "cache" / "kd-planner").mkdir(parents=True)
    for f in compiled._cache_dir().glob("cost-*.py"):
        (tmp_path / "cache" / "kd-planner" / f.name).symlink_to(f)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("KD_PLANNER_CACHE", raising=False)
    monkeypatch.chdir(root)

    def use(text: str):
        (tmp_path / "cpuinfo").write_text(text)
        monkeypatch.setenv("KD_PLANNER_CPUINFO", str(tmp_path / "cpuinfo"))
    return use


def test_cpuinfo_is_read(cpu):
    cpu(AVX2)
    c = this_cpu()
    assert (c.cpu, c.family, c.isa, c.bf16_units, c.cpus) == ("AMD EPYC 7B12", "AuthenticAMD 23/49", "AVX2", False, 2)
    cpu(cpuinfo("Intel Xeon Platinum 8480+", "6", "143", "avx2 avx512f avx512_bf16 amx_bf16 amx_tile", cpus=4))
    c = this_cpu()
    assert (c.isa, c.bf16_units, c.cpus) == ("AMX", True, 4) and c.key() != this_cpu().model_copy(update={"cpus": 2}).key()


def test_same_cpu_plans_quietly(runner, cpu):
    cpu(ZEN5)
    assert load_cluster("cpu-local").measured_on.same_cpu(this_cpu())
    r = runner.invoke(app, ["estimate", "-c", "cpu-local", *TINY])
    assert r.exit_code in (0, 3), r.stderr
    assert "another CPU" not in r.stderr


def test_other_cpu_without_a_cache_says_so_in_one_line(runner, cpu):
    cpu(AVX2)
    r = runner.invoke(app, ["estimate", "-c", "cpu-local", *TINY])
    assert r.exit_code in (0, 3), r.stderr
    note = [line for line in r.stderr.splitlines() if "another CPU" in line]
    assert len(note) == 1 and "AVX-512" in note[0] and "AMD EPYC 7B12" in note[0]
    assert "planner calibrate --quick --model tiny-student --world 2 --name cpu-local --cache" in note[0]


def test_other_cpu_with_a_cache_plans_with_it(runner, cpu):
    """`calibrate --cache` (hardware only, one process: seconds) fills this CPU's entry; planning
    with the bundled name then uses it and says so."""
    cpu(AVX2)
    r = runner.invoke(app, ["calibrate", "--quick", "--world", "1", "--name", "cpu-local", "--cache"])
    assert r.exit_code == 0, r.stderr
    cached = cached_topology("cpu-local")
    assert cached.is_file() and load_cluster(str(cached)).measured_on.cpu == "AMD EPYC 7B12"
    r = runner.invoke(app, ["estimate", "-c", "cpu-local", *TINY])
    assert r.exit_code in (0, 3), r.stderr
    assert f"using this machine's calibration {cached}" in r.stderr and "(1 x " in r.stdout  # the cached topology: 1 process
    r = runner.invoke(app, ["estimate", "-c", str(cached), *TINY])  # the user's own file: as given, no note
    assert "another CPU" not in r.stderr


def test_no_bf16_units_predicts_the_measured_rate_and_says_fp32_is_faster(runner, cpu, tmp_path):
    from planner.cli.common import load_inputs
    cpu(AVX2)
    data = yaml.safe_load(load_cluster("cpu-local").model_dump_json())
    data["gpu"]["peak_tflops"] = {"fp32": 0.054, "bf16": 0.0008}  # what the issue measured on such a CPU
    data["measured_on"] = this_cpu().model_dump()
    cached = cached_topology("cpu-local")
    cached.parent.mkdir(parents=True)
    cached.write_text(yaml.safe_dump(data))
    job, cl, _, _ = load_inputs(None, "cpu-local", None, "models/tiny-student.json", "models/tiny-student.json")
    assert cl.gpu.peak_tflops["bf16"] == 0.0008  # predicted at the rate bf16 runs at here
    r = runner.invoke(app, ["estimate", "-c", "cpu-local", *TINY])
    assert "bf16 matmuls are 68x slower than fp32" in r.stderr and "fp32 for a faster run" in r.stderr

"""Shared fixtures: the repository root, a CLI runner, a deadline and one model calibration."""

import atexit
import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parent.parent

# `datasets` caches what it reads under ~/.cache/huggingface/datasets: the suite (and the runs it
# starts, which inherit the variable) caches in a folder of its own, removed at the end.
if "HF_DATASETS_CACHE" not in os.environ:
    os.environ["HF_DATASETS_CACHE"] = tempfile.mkdtemp(prefix="kd-planner-tests-datasets-")
    atexit.register(shutil.rmtree, os.environ["HF_DATASETS_CACHE"], True)

# The machine the suite plans for is the one topologies/cpu-local.yaml was measured on (its
# `measured_on`), whatever CPU runs the suite: on another CPU every `-c cpu-local` command would add
# a note to stderr. tests/inputs/test_machine.py points the reader at other CPUs itself. Calibrations
# that `planner calibrate --cache` keeps for this machine are kept out of the suite the same way.
os.environ.setdefault("KD_PLANNER_CPUINFO", str(ROOT / "tests" / "data" / "cpuinfo-cpu-local"))
if "KD_PLANNER_CACHE" not in os.environ:
    os.environ["KD_PLANNER_CACHE"] = tempfile.mkdtemp(prefix="kd-planner-tests-cache-")
    atexit.register(shutil.rmtree, os.environ["KD_PLANNER_CACHE"], True)

# A vLLM rollout engine starts with enforce_eager in the suite: 20-50 s on a CPU against about 110 s
# compiled (planner/executor/rollout/vllm_engine.py); the tests check what it generates, not how fast.
os.environ.setdefault("KD_PLANNER_VLLM_EAGER", "1")

# pytest-xdist's workers start with COLUMNS=80 and LINES=24 of their own (a serial run has none): the
# CLI would then size its tables to 80 columns. Tests that need a width set COLUMNS themselves.
if "PYTEST_XDIST_WORKER" in os.environ:
    for name in ("COLUMNS", "LINES"):
        os.environ.pop(name, None)


# Tests that compare a prediction with a measurement (marked `alone`) and the calibration they are
# predicted from run with the machine to themselves: under pytest-xdist every other test holds a shared
# lock on one file for its whole protocol (its fixtures' setup included) and those hold it exclusively.
# A calibration measured while the other worker ran two ranks of its own, then compared with a step
# measured on a quiet machine, was 2x off. One descriptor per worker: flock converts its lock in place.
_LOCK = {"fd": None, "mode": None}


def _hold(mode: int) -> None:
    if _LOCK["fd"] is None:
        if "PYTEST_XDIST_TESTRUNUID" not in os.environ:  # one process: nothing runs beside it
            return
        path = Path(tempfile.gettempdir()) / f"kd-planner-tests-{os.environ['PYTEST_XDIST_TESTRUNUID']}.lock"
        _LOCK["fd"] = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    if _LOCK["mode"] != mode:
        fcntl.flock(_LOCK["fd"], mode)
        _LOCK["mode"] = mode


@contextlib.contextmanager
def machine_to_itself():
    """Hold the machine alone (no other worker's test runs) for the block; back to before after it."""
    before = _LOCK["mode"]
    _hold(fcntl.LOCK_EX)
    try:
        yield
    finally:
        _hold(before if before is not None else fcntl.LOCK_UN)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item, nextitem):
    _hold(fcntl.LOCK_EX if item.get_closest_marker("alone") else fcntl.LOCK_SH)
    try:
        return (yield)
    finally:
        _hold(fcntl.LOCK_UN)


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def root() -> Path:
    return ROOT


@pytest.fixture
def deadline(request):
    """Fail (not hang) if the test takes longer than its module's DEADLINE_S (default 10 s): a FIFO
    that blocks must not stall the suite."""
    seconds = getattr(request.module, "DEADLINE_S", 10)

    def boom(*_):
        raise TimeoutError(f"blocked for {seconds} s")
    old = signal.signal(signal.SIGALRM, boom)
    signal.alarm(seconds)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def _calibrate(out: Path) -> Path:
    """`planner calibrate --quick --world 2 --model tiny-student -o OUT`, with the machine to itself and
    the disk's dirty pages written out first: right after a fresh install (CI) the kernel is still
    writing out gigabytes, and a calibration measured meanwhile was 1.6x slow in every figure."""
    with machine_to_itself():  # the `alone` tests predict from it
        os.sync()
        r = subprocess.run([sys.executable, "-m", "planner", "calibrate", "--quick", "--world", "2", "--model", "tiny-student", "-o", str(out)],
                           capture_output=True, text=True, cwd=ROOT, timeout=1200)
    assert r.returncode == 0, r.stderr[-3000:]
    return out


def _probe(calibration: Path) -> dict:
    return json.loads(calibration.with_suffix(".raw.json").read_text())["speed_probe_tflops"]


_CALIBRATION: dict[str, Path] = {}


@pytest.fixture(scope="session")
def tiny_student_calibration(tmp_path_factory) -> Path:
    """`planner calibrate --quick --world 2 --model tiny-student`, run once per session (about 70 s;
    under pytest-xdist once per worker, so the tests that use it share the `calibration` xdist group):
    its topology file (the runtime and the raw measurements lie next to it). Taken again, once, if the
    machine's speed changed during it (its speed probe; `planner calibrate` warns then). The
    calibration test checks what it wrote; the validation report's smoke run fits on its measurements."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from planner.calibrate.topology import speed_change

    out = _calibrate(tmp_path_factory.mktemp("calibration") / "fit.yaml")
    if speed_change(_probe(out)) is not None:
        out = _calibrate(tmp_path_factory.mktemp("calibration") / "fit.yaml")
    _CALIBRATION["now"] = out
    return out


@pytest.fixture
def calibration_for_now(tiny_student_calibration, tmp_path_factory) -> Path:
    """The session's calibration, or a new one (kept for the session's later tests) where this
    machine no longer runs at the speed it was measured at: a prediction is compared with a
    measurement on the machine that was calibrated, not on a host that has since slowed or sped up."""
    from planner.calibrate.hardware import speed_probe
    from planner.calibrate.topology import STEADY

    current = _CALIBRATION.get("now", tiny_student_calibration)
    with machine_to_itself():
        now = speed_probe("cpu")
    if abs(now / _probe(current)["after"] - 1) > STEADY:
        current = _CALIBRATION["now"] = _calibrate(tmp_path_factory.mktemp("calibration") / "fit.yaml")
    return current

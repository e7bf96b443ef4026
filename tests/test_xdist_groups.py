"""The suite relies on `--dist loadgroup` sending every test of one `xdist_group` to one worker (the
session calibration is computed once per worker). pytest 9.2 renamed the node id xdist 3.8 rewrites,
and the groups silently split (the calibration ran twice, about 90 s of CI): this checks the pair of
versions installed, in a throwaway suite of its own."""

import subprocess
import sys

import pytest

pytest.importorskip("xdist")

CASE = '''
import os, pytest
@pytest.mark.xdist_group("shared")
def test_{n}():
    with open(os.path.join(os.path.dirname(__file__), "{n}.worker"), "w") as f:
        f.write(os.environ["PYTEST_XDIST_WORKER"])
def test_free_{n}():
    pass
'''

NAMES = "abcdefgh"  # eight files: a split group cannot land on one worker by chance


def test_one_group_runs_on_one_worker(tmp_path):
    for n in NAMES:
        (tmp_path / f"test_{n}.py").write_text(CASE.format(n=n))
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-n", "2", "--dist", "loadgroup", "-p", "no:cacheprovider", str(tmp_path)],
                       capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    workers = {(tmp_path / f"{n}.worker").read_text() for n in NAMES}
    assert len(workers) == 1, f"one xdist group ran on {sorted(workers)}: pin pytest/pytest-xdist to a pair that keeps groups"

"""`planner.files`: reads that cannot hang or run away, writes that leave a whole file or none."""

from __future__ import annotations

import errno
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from planner import files
from planner.inputs.errors import InputError

ROOT = Path(__file__).resolve().parents[1]


# ---- reading ----------------------------------------------------------------------------------

def test_read_refuses_fifos_and_devices_without_blocking(tmp_path, deadline):
    fifo = tmp_path / "plan.yaml"
    os.mkfifo(fifo)
    with pytest.raises(InputError, match="not a regular file"):
        files.read_text(fifo)
    with pytest.raises(InputError, match="not a regular file"):
        files.read_text("/dev/zero")


def test_read_caps_the_size_while_reading(tmp_path):
    big = tmp_path / "big.yaml"
    big.write_bytes(b"a" * 101)
    with pytest.raises(InputError, match="larger than"):
        files.read_bytes(big, limit=100)
    assert files.read_bytes(big, limit=101) == b"a" * 101


def test_read_errors_are_one_line(tmp_path):
    (tmp_path / "bad.yaml").write_bytes(b"a: 1\nb: \xff\xfe\n")
    with pytest.raises(InputError, match=r"not UTF-8 text \(line 2"):
        files.read_text(tmp_path / "bad.yaml")
    with pytest.raises(InputError, match="no such file"):
        files.read_text(tmp_path / "absent.yaml")
    with pytest.raises(InputError, match="is a directory"):
        files.read_text(tmp_path)
    (tmp_path / "bom.yaml").write_bytes(b"\xef\xbb\xbfa: 1\n")
    assert files.read_text(tmp_path / "bom.yaml") == "a: 1\n"


def test_yaml_inputs_use_it(tmp_path, deadline):
    from planner.plan import load_plan

    with pytest.raises(InputError, match="not a regular file"):
        load_plan("/dev/zero")


# ---- checking outputs -------------------------------------------------------------------------

def test_check_output_refusals(tmp_path):
    (tmp_path / "old.yaml").write_text("x")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere" / "target.yaml")
    (tmp_path / "afile").write_text("x")
    cases = {tmp_path / "old.yaml": "exists; pass --force",
             tmp_path / "dangling": "symlink to a missing file",
             tmp_path: "is a directory",
             f"{tmp_path}/new/": "names a folder",
             tmp_path / "missing" / "p.yaml": "does not exist",
             tmp_path / "afile" / "p.yaml": "is not a folder"}
    for path, why in cases.items():
        with pytest.raises(InputError, match=why) as e:
            files.check_output(path, flag="-o")
        assert e.value.lines[0].startswith("-o: ") and len(e.value.lines) == 1
    files.check_output(tmp_path / "old.yaml", force=True)
    assert list(tmp_path.glob(".*")) == []  # the write probe is gone


def test_check_outputs_refuses_one_file_twice(tmp_path):
    (tmp_path / "sub").mkdir()
    with pytest.raises(InputError, match="-o and --plan-out name the same file"):
        files.check_outputs({"--plan-out": tmp_path / "x", "-o": tmp_path / "sub" / ".." / "x"})


def test_unwritable_folder(tmp_path, monkeypatch):
    def refuse(*a, **k):
        raise OSError(errno.EROFS, "Read-only file system")
    monkeypatch.setattr(files.tempfile, "mkstemp", refuse)
    with pytest.raises(InputError, match="cannot write in the folder .*: read-only file system"):
        files.check_output(tmp_path / "p.yaml")


# ---- writing ----------------------------------------------------------------------------------

def test_write_is_whole_and_executable_when_asked(tmp_path):
    files.write_files([(tmp_path / "a.yaml", "a", False), (tmp_path / "b.sh", b"#!/bin/sh\n", True)])
    assert (tmp_path / "a.yaml").read_text() == "a" and not os.access(tmp_path / "a.yaml", os.X_OK)
    assert os.stat(tmp_path / "b.sh").st_mode & 0o100
    with pytest.raises(InputError, match="exists"):
        files.write_text(tmp_path / "a.yaml", "b")
    files.write_text(tmp_path / "a.yaml", "b", force=True)
    assert (tmp_path / "a.yaml").read_text() == "b"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.yaml", "b.sh"]


def test_force_replaces_a_symlink_instead_of_writing_through_it(tmp_path):
    link = tmp_path / "plan.yaml"
    link.symlink_to(tmp_path / "elsewhere.yaml")
    files.write_text(link, "new", force=True)
    assert not link.is_symlink() and link.read_text() == "new" and not (tmp_path / "elsewhere.yaml").exists()


def test_a_file_that_appears_meanwhile_is_not_clobbered(tmp_path, monkeypatch):
    target = tmp_path / "plan.yaml"
    real_fsync = os.fsync

    def fsync_then_race(fd):
        real_fsync(fd)
        target.write_text("someone else's")
    monkeypatch.setattr(files.os, "fsync", fsync_then_race)
    with pytest.raises(InputError, match="appeared while this command ran"):
        files.write_text(target, "mine")
    assert target.read_text() == "someone else's" and sorted(p.name for p in tmp_path.iterdir()) == ["plan.yaml"]


def test_a_failed_write_leaves_nothing(tmp_path, monkeypatch):
    (tmp_path / "old.sh").write_text("old")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(files.os, "fsync", full)
    with pytest.raises(InputError, match="cannot write: no space left on device; nothing was written"):
        files.write_files([(tmp_path / "new.yaml", "plan", False), (tmp_path / "old.sh", "script", True)], force=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.sh"] and (tmp_path / "old.sh").read_text() == "old"


def test_a_full_disk_leaves_no_file(tmp_path):
    """The real thing: `planner export -o` under a 1 KiB file-size limit (EFBIG, as a full disk gives ENOSPC)."""
    def small():
        resource.setrlimit(resource.RLIMIT_FSIZE, (1024, 1024))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    out = tmp_path / "job.sh"
    env = os.environ | {"PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1", "KD_PLANNER_CACHE": str(tmp_path / "cache")}
    res = subprocess.run([sys.executable, "-m", "planner", "export", str(ROOT / "examples" / "tiny-replicate-ddp.yaml"),
                          "--to", "slurm", "-o", str(out)], capture_output=True, text=True, env=env, preexec_fn=small,
                         cwd=tmp_path, timeout=120)
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
    assert "cannot write" in res.stderr and res.stderr.count("\n") == 1
    assert [p.name for p in tmp_path.iterdir() if p.name != "cache"] == []

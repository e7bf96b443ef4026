"""Every command that writes goes through `planner.files`: outputs checked before the work, written
whole or not at all; every command that reads a file refuses FIFOs and devices at once."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from planner.cli import app

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "examples" / "tiny-replicate-ddp.yaml"


def one_error_line(r) -> str:
    assert r.exit_code == 1 and "Traceback" not in r.output, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), r.stderr
    return lines[0]


DEADLINE_S = 20  # the `deadline` fixture (tests/conftest.py): CLI runs import more than a bare read


def test_recommend_refuses_bad_outputs_before_searching(runner, tmp_path):
    same = tmp_path / "x.yaml"
    line = one_error_line(runner.invoke(app, ["recommend", "--export", "torchrun", "-o", str(same), "--plan-out", str(same), "--force"]))
    assert "-o and --plan-out name the same file" in line or "--plan-out and -o name the same file" in line
    link = tmp_path / "link.yaml"
    link.symlink_to(tmp_path / "target.yaml")
    assert "symlink to a missing file" in one_error_line(runner.invoke(app, ["recommend", "-o", str(link)]))
    assert "is a directory" in one_error_line(runner.invoke(app, ["recommend", "-o", str(tmp_path)]))
    assert "does not exist" in one_error_line(runner.invoke(app, ["recommend", "-o", str(tmp_path / "no" / "p.yaml")]))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.yaml"] and not (tmp_path / "target.yaml").exists()


def test_recommend_with_a_newline_in_the_model_folder_writes_neither_plan_nor_script(tmp_path, runner):
    folder = tmp_path / "teacher\ntouch pwned"
    folder.mkdir()
    shutil.copy(ROOT / "models" / "tiny-teacher.json", folder / "config.json")
    script = tmp_path / "job.sh"
    r = runner.invoke(app, ["recommend", "-m", "tiny-cpu", "-c", "cpu-local", "--teacher", str(folder),
                            "--export", "torchrun", "-o", str(script)])
    assert r.exit_code == 1 and "Traceback" not in r.output, r.output
    # the first field that carries the folder's name is refused: the job's name (TEACHER-to-STUDENT) or teacher.ref
    assert ("teacher.ref" in r.stderr or "job:" in r.stderr) and "control character" in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [folder.name]  # no plan, no script, no temporary file


def test_export_output_checks(runner, tmp_path):
    assert "does not exist" in one_error_line(runner.invoke(app, ["export", str(TINY), "--to", "slurm", "-o", str(tmp_path / "a" / "j.sh")]))
    assert "is a directory" in one_error_line(runner.invoke(app, ["export", str(TINY), "--to", "slurm", "-o", str(tmp_path)]))


def test_sweep_checks_for_matplotlib_before_any_work(runner, tmp_path, monkeypatch):
    csv_path = tmp_path / "m.csv"
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed
    line = one_error_line(runner.invoke(app, ["sweep", "--csv", str(csv_path), "--plot", str(tmp_path / "m.png")]))
    assert "needs matplotlib" in line and not csv_path.exists()


def test_sweep_checks_its_outputs_before_any_work(runner, tmp_path):
    pytest.importorskip("matplotlib")
    csv_path = tmp_path / "m.csv"
    line = one_error_line(runner.invoke(app, ["sweep", "--csv", str(csv_path), "--plot", str(tmp_path / "m.xyz")]))
    assert "--plot" in line and ".png or .svg" in line
    line = one_error_line(runner.invoke(app, ["sweep", "--csv", str(csv_path), "--plot", str(csv_path)]))
    assert "name the same file" in line
    assert list(tmp_path.iterdir()) == []


def test_calibrate_checks_its_raw_json_first(runner, tmp_path):
    pytest.importorskip("torch")
    (tmp_path / "me.raw.json").write_text("{}")
    line = one_error_line(runner.invoke(app, ["calibrate", "--quick", "-o", str(tmp_path / "me.yaml")]))
    assert "me.raw.json: exists; pass --force" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["me.raw.json"]


def test_run_checks_its_outputs_before_training(runner, tmp_path):
    metrics = tmp_path / "m.json"
    metrics.write_text("{}")
    assert "--metrics-out" in one_error_line(runner.invoke(app, ["run", str(TINY), "--metrics-out", str(metrics)]))
    assert metrics.read_text() == "{}"
    line = one_error_line(runner.invoke(app, ["run", str(TINY), "--checkpoint-dir", str(metrics)]))
    assert "--checkpoint-dir" in line and "is a file" in line


@pytest.mark.parametrize("argv", [["export", "{}", "--to", "slurm"], ["estimate", "--plan", "{}"], ["run", "{}"],
                                  ["validate", str(TINY), "--metrics", "{}"], ["recommend", "-m", "{}"]])
def test_fifos_and_devices_are_refused_at_once(runner, tmp_path, deadline, argv):
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    for path in ("/dev/zero", str(fifo)):
        line = one_error_line(runner.invoke(app, [a.replace("{}", path) for a in argv]))
        assert "not a regular file" in line or (argv[0] == "recommend" and "not found" in line)  # a job must be a file

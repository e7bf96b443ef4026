"""bench/validation_report.py --smoke (its quickest mode: --quick with 3 cases): calibrates, runs the
executor in and out of sample (generation and 4 processes included) and writes a report whose
structure holds. Timings on a shared machine are noisy: no error is judged, only that every
out-of-sample figure is there and finite."""

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.xdist_group("calibration")  # shares the session calibration with test_calibrate
def test_quick_report_has_in_and_out_of_sample_errors_per_term(tmp_path, tiny_student_calibration):
    out = tmp_path / "validation.md"
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    raw = tiny_student_calibration.with_suffix(".raw.json")  # the session's 2-process model calibration, not run twice
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "validation_report.py"), "--smoke", "--out", str(out), "--calibration", str(raw)],
                       capture_output=True, text=True, cwd=tmp_path, env=env, timeout=3000)
    assert r.returncode == 0, r.stderr[-3000:]
    text = out.read_text()
    assert "PRELIMINARY" in text and "validation_report.py --smoke`" in text  # a smoke run says so
    rows = [line for line in text.splitlines() if line.startswith("| in |") or line.startswith("| **out** |")]
    assert any(x.startswith("| in |") for x in rows) and any(x.startswith("| **out** |") for x in rows)
    summary = next(line for line in text.splitlines() if line.startswith("| **out-of-sample** |"))
    cells = [c.strip() for c in summary.strip("|").split("|")[1:]]  # step, teacher, generation, student
    assert len(cells) == 4
    for cell in cells:  # every term measured out of sample, generation included
        value = re.match(r"([-+]?[\d.]+)%", cell)
        assert value and math.isfinite(float(value.group(1))), summary
    assert "decode_layer_overhead_us" in text  # the fitted runtime is in the report

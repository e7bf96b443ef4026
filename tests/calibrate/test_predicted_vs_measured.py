"""After a quick calibration, `recommend`'s plans for tiny fp32 and bf16 jobs at 16+16 and 64+64
tokens predict the steady step the executor then runs within 35% (issue 24). Not a timed test:
predicted and measured come from one run on the machine at hand, through `validate --run`,
with no other test running meanwhile (the `alone` mark; the calibration is measured alone too)."""

import json

import pytest

from planner.cli import app

pytest.importorskip("torch")


def job(path, dtype: str, n: int):
    path.write_text(f"name: tiny-{dtype}-{n}\nteacher: tiny-teacher\nstudent: tiny-student\nworkload:\n  global_batch: 4\n"
                    f"  micro_batch_max: 2\n  prompt_len: {n}\n  completion_len: {n}\n  lmbda: 0.0\n  teacher_output: logits\n"
                    f"  student_dtype: {dtype}\n  teacher_dtype: {dtype}\n  flash_attention: false\n")
    return path


# bf16 at 16+16 tokens: the student's side is under-predicted by 40-50% (measured alone here 2026-12-07:
# student 0.018 s predicted, 0.033 s measured; fp32 -10%), because the calibration fits the per-layer
# overheads on fp32 training only and autocast's casts and 16-bit kernels cost more per op at small
# shapes. A known gap of issue 24 (not a tolerance): it reports as xfail, and as a pass where it holds.
SMALL_BF16 = pytest.mark.xfail(reason="issue 24: autocast's per-op overhead at small shapes is not calibrated (fp32 fit only)", strict=False)


@pytest.mark.slow
@pytest.mark.alone  # the machine to itself, as the calibration had it
@pytest.mark.xdist_group("calibration")  # the session's calibration
@pytest.mark.parametrize("dtype, n", [("fp32", 16), ("fp32", 64), pytest.param("bf16", 16, marks=SMALL_BF16), ("bf16", 64)])
def test_calibrated_plan_predicts_the_measured_step(runner, tmp_path, calibration_for_now, dtype, n):
    topo, rt = str(calibration_for_now), str(calibration_for_now.with_suffix(".runtime.yaml"))
    plan = tmp_path / "plan.yaml"
    r = runner.invoke(app, ["recommend", "-m", str(job(tmp_path / "job.yaml", dtype, n)), "-c", topo, "--runtime", rt, "-o", str(plan)])
    assert r.exit_code == 0, r.stderr
    # the median of 7 steady steps (2 warm-up): with 3, three runs of bf16-64 here gave 0.063-0.076 s (one plan, one
    # calibration) and a CI run 0.056 s, enough to cross the bound on its own (2026-12-08)
    r = runner.invoke(app, ["validate", str(plan), "--run", "--random-init", "--steps", "9", "-c", topo, "--runtime", rt, "-f", "json"])
    assert r.exit_code in (0, 3), r.stderr
    step = {x["what"]: x for x in json.loads(r.stdout)["rows"]}["step time (s)"]
    assert abs(step["predicted"] / step["measured"] - 1) <= 0.35, step

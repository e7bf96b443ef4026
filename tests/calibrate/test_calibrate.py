"""`planner calibrate` measures this machine and writes a topology the planner can use."""

import json

import pytest

from planner.calibrate.hardware import fit_alpha_beta
from planner.cli import app
from planner.inputs.load import load_cluster

pytest.importorskip("torch")


def test_fit_alpha_beta_recovers_a_line():
    sizes = [2**k for k in range(10, 20)]
    times = [5e-6 + 1.5 * s / 2e9 for s in sizes]  # alpha 5 us, bus factor 1.5, 2 GB/s
    bw, alpha = fit_alpha_beta(sizes, times, 1.5, 1.0)
    assert bw == pytest.approx(2.0, rel=1e-6) and alpha == pytest.approx(5.0, rel=1e-6)


def test_median_of_rounds():
    from planner.calibrate.topology import median_of
    rounds = [{"a": 1.0, "b": {"c": 5}, "d": "x"}, {"a": 3.0, "b": {"c": 1}, "d": "y"}, {"a": 2.0, "b": {"c": 3}, "d": "z"}]
    assert median_of(rounds) == {"a": 2.0, "b": {"c": 3}, "d": "x"}


def test_calibrate_writes_a_loadable_topology(runner, tmp_path):
    out = tmp_path / "me.yaml"
    r = runner.invoke(app, ["calibrate", "--quick", "--world", "2", "--repeat", "2", "-o", str(out)])
    assert r.exit_code == 0, r.stderr
    c = load_cluster(str(out))
    assert c.backend == "gloo" and c.gpus_per_node == 2 and c.gpu.peak_tflops["fp32"] > 0
    raw = json.loads(out.with_suffix(".raw.json").read_text())
    assert set(raw["collectives"]) == {"all_reduce", "all_gather", "reduce_scatter", "p2p"} and raw["memory_gb_per_s"] > 0
    assert len(raw["rounds"]) == 2
    assert raw["memory_gb_per_s"] == pytest.approx(sorted(r["memory_gb_per_s"] for r in raw["rounds"])[0] / 2
                                                   + sorted(r["memory_gb_per_s"] for r in raw["rounds"])[1] / 2)
    assert set(c.intra_node.collectives) == {"all_reduce", "all_gather", "reduce_scatter", "p2p"}
    assert runner.invoke(app, ["calibrate", "--quick", "-o", str(out)]).exit_code == 1  # no overwrite


def test_calibrate_warns_when_the_machine_changed_speed_meanwhile(runner, tmp_path, monkeypatch):
    """A speed probe before and after the measurements lands in the .raw.json; a change beyond 20%
    (another job, a busy host) is one warning line, and the files are still written."""
    from planner.calibrate import hardware
    speeds = iter([0.05, 0.03])
    monkeypatch.setattr(hardware, "speed_probe", lambda device: next(speeds))
    out = tmp_path / "me.yaml"
    r = runner.invoke(app, ["calibrate", "--quick", "--world", "1", "-o", str(out)])
    assert r.exit_code == 0, r.stderr
    assert json.loads(out.with_suffix(".raw.json").read_text())["speed_probe_tflops"] == {"before": 0.05, "after": 0.03}
    warning = [line for line in r.stderr.splitlines() if line.startswith("Warning:")]
    assert len(warning) == 1 and "-40%" in warning[0] and "--repeat 3" in " ".join(r.stderr.split())


def test_speed_change_is_none_on_a_steady_machine():
    from planner.calibrate.topology import speed_change
    assert speed_change({"before": 0.05, "after": 0.055}) is None and speed_change({}) is None
    assert speed_change({"before": 0.05, "after": 0.07}) == pytest.approx(0.4)


@pytest.mark.slow
@pytest.mark.xdist_group("calibration")  # shares the session calibration with the validation report test
def test_calibrate_model_writes_hardware_and_runtime(runner, tmp_path, tiny_student_calibration):
    """With --model every timing the fits need is taken, the topology holds hardware only and the
    runtime the fitted overheads of this backend. What the fits make of timings is tested on
    synthetic ones (test_fits.py): values measured here depend on how busy the machine is, so
    they are not judged. The calibration (`--quick --world 2 --model tiny-student`) is the
    session's, shared with the validation report's test."""
    from planner.inputs.load import load_runtime

    out = tiny_student_calibration
    assert 0 < load_cluster(str(out)).gpu.compute_efficiency <= 1
    assert "overhead" not in out.read_text()
    rt = load_runtime(str(out.with_suffix(".runtime.yaml")))
    assert rt.overheads_on("gloo").layer_overhead_us >= 0 and rt.overheads_on("gloo").decode_layer_overhead_us is not None
    fit = json.loads(out.with_suffix(".raw.json").read_text())["model_fit"]
    assert {"train_steps", "loss_calls", "optimizer_step_s", "fsdp_gathers", "sharded_optimizer_step_s",
            "ddp_syncs", "pipeline", "generations"} <= set(fit)
    again = runner.invoke(app, ["calibrate", "--quick", "--model", "tiny-student", "--runtime-out", str(out.with_suffix(".runtime.yaml")),
                                "-o", str(tmp_path / "other.yaml")])
    assert again.exit_code == 1 and "runtime" in again.stderr  # the runtime is not overwritten without --force


def test_widened_doubles_every_width():
    from planner.calibrate.overheads import widened
    from planner.inputs.load import load_model
    s = load_model("tiny-student")
    w = widened(s)
    assert (w.hidden, w.ffn, w.num_heads, w.kv_heads, w.head_dim or w.hidden // w.num_heads) == (
        2 * s.hidden, 2 * s.ffn, 2 * s.num_heads, 2 * s.kv_heads, s.head_dim or s.hidden // s.num_heads)


def test_old_topology_with_overheads_is_one_clear_line(runner, tmp_path):
    """A topology written by an older `planner calibrate` carries framework overheads: refused with
    one line that says where they live now, never a traceback."""
    old = tmp_path / "old.yaml"
    text = (load_cluster("cpu-local").model_dump_json())
    import yaml
    data = yaml.safe_load(text)
    data["gpu"] |= {"layer_overhead_us": 370, "pipeline_tick_overhead_us": 1460}
    old.write_text(yaml.safe_dump(data))
    r = runner.invoke(app, ["show", "--cluster", str(old)])
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert "layer_overhead_us, pipeline_tick_overhead_us" in r.stderr and "runtime" in r.stderr


def _tiny_config(root, tmp_path):
    """tiny-student as a user has it: a checkpoint folder with its config.json."""
    folder = tmp_path / "tiny"
    folder.mkdir()
    (folder / "config.json").write_text((root / "models" / "tiny-student.json").read_text())
    return folder


def test_calibrate_keeps_each_measurement_and_resumes(runner, root, tmp_path, monkeypatch):
    """`--model PATH/config.json` and a checkpoint folder both work; a failure injected after the
    first benchmark leaves it on disk (a partial file beside -o), and the rerun reuses it, says so
    and measures the rest (--world 1 --quick: seconds)."""
    folder, out = _tiny_config(root, tmp_path), tmp_path / "me.yaml"
    partial = out.with_suffix(".partial.json")
    monkeypatch.setenv("KD_PLANNER_CALIBRATE_FAIL_AFTER", "1")
    r = runner.invoke(app, ["calibrate", "--quick", "--world", "1", "--model", str(folder / "config.json"), "-o", str(out)])
    assert r.exit_code != 0 and "failing after matmul_tflops.fp32" in str(r.exception)
    assert not out.exists() and "Kept 1 completed measurements" in r.stderr
    kept = json.loads(partial.read_text())["rounds"][0]
    assert list(kept) == ["matmul_tflops.fp32"] and kept["matmul_tflops.fp32"] > 0
    monkeypatch.delenv("KD_PLANNER_CALIBRATE_FAIL_AFTER")
    r = runner.invoke(app, ["calibrate", "--quick", "--world", "1", "--model", str(folder), "-o", str(out)])
    assert r.exit_code == 0, r.stderr
    assert "Resuming from" in r.stderr and "1 measurements" in r.stderr
    raw = json.loads(out.with_suffix(".raw.json").read_text())
    assert raw["matmul_tflops"]["fp32"] == kept["matmul_tflops.fp32"]  # reused, not measured again
    assert raw["model_fit"]["shape"]["hidden"] == 128 and {"train_steps", "loss_calls", "generations"} <= set(raw["model_fit"])
    assert not partial.exists() and load_cluster(str(out)).gpu.peak_tflops["bf16"] > 0


def test_calibrate_partial_of_other_options_is_refused(runner, tmp_path):
    out = tmp_path / "me.yaml"
    out.with_suffix(".partial.json").write_text(json.dumps({"settings": {"world": 3}, "rounds": [{"memory_gb_per_s": 1.0}]}))
    r = runner.invoke(app, ["calibrate", "--quick", "--world", "1", "-o", str(out)])
    assert r.exit_code == 1 and "other options (world" in r.stderr and len(r.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("args, says", [
    (["--model", "no-such-model"], "no-such-model"),
    (["--model", "{tmp}/missing/config.json"], "missing"),
    (["-o", "{tmp}/no-folder/me.yaml"], "does not exist"),
    (["-o", "{tmp}"], "directory"),
])
def test_calibrate_refuses_bad_model_or_output_before_measuring(runner, tmp_path, args, says):
    import time
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    t0 = time.perf_counter()
    r = runner.invoke(app, ["calibrate", "--quick", "--world", "1", *args] + ([] if "-o" in args else ["-o", str(tmp_path / "me.yaml")]))
    took = time.perf_counter() - t0
    assert r.exit_code == 1 and says in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert took < 5 and not list(tmp_path.glob("me.*"))  # refused before any benchmark ran

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

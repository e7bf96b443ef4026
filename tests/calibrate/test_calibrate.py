"""`planner calibrate` measures this machine and writes a topology the planner can use."""

import json

import pytest

from planner.calibrate.measure import fit_alpha_beta
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
def test_calibrate_model_times_everything_it_fits(runner, tmp_path):
    """With --model every timing the fits need is taken and the topology loads. What the fits make
    of timings is tested on synthetic ones (test_fits.py): values measured here depend on how busy
    the machine is, so they are not judged."""
    out = tmp_path / "fit.yaml"
    r = runner.invoke(app, ["calibrate", "--quick", "--world", "2", "--model", "tiny-student", "-o", str(out)])
    assert r.exit_code == 0, r.stderr
    assert 0 < load_cluster(str(out)).gpu.compute_efficiency <= 1
    fit = json.loads(out.with_suffix(".raw.json").read_text())["model_fit"]
    assert {"train_steps", "loss_calls", "optimizer_tensor_overhead_us", "fsdp_gathers", "sharded_optimizer_tensor_overhead_us",
            "ddp_syncs", "pipeline_tick_overhead_us"} <= set(fit)


def test_shard_overhead_fit_separates_per_unit_and_per_byte():
    from planner.calibrate.measure import widened
    from planner.inputs.load import load_model
    s = load_model("tiny-student")
    w = widened(s)
    assert (w.hidden, w.ffn, w.num_heads, w.kv_heads, w.head_dim or w.hidden // w.num_heads) == (
        2 * s.hidden, 2 * s.ffn, 2 * s.num_heads, 2 * s.kv_heads, s.head_dim or s.hidden // s.num_heads)


def test_fits_recover_known_costs():
    from planner.calibrate.measure import fit_fixed_plus_per_byte, fit_layer_costs, fit_loss_costs
    # extra = 800 us + bytes / 2 GB/s
    pts = {m: {"bytes": b, "extra_s": 800e-6 + b / 2e9} for m, b in (("a", 1e6), ("b", 4e6))}
    assert fit_fixed_plus_per_byte(pts) == pytest.approx((800.0, 2.0), rel=1e-9)
    flat = {m: {"bytes": b, "extra_s": 1e-3} for m, b in (("a", 1e6), ("b", 4e6))}
    assert fit_fixed_plus_per_byte(flat) == pytest.approx((1000.0, 0.0), abs=1e-9)  # no per-byte cost found
    # t = 3 * (flops / 0.1 TFLOP/s + 4 layers * 300 us)
    steps = {str(f): {"flops": 3 * f, "layer_passes": 12, "seconds": 3 * (f / 1e11 + 4 * 300e-6)} for f in (1e7, 1e8, 1e9)}
    assert fit_layer_costs(steps) == pytest.approx((0.1, 300.0), rel=1e-6)
    # t = 400 us + 15 ns per element
    calls = {str(n): {"elements": n, "seconds": 400e-6 + 15e-9 * n} for n in (16384, 131072)}
    assert fit_loss_costs(calls) == pytest.approx((15.0, 400.0), rel=1e-9)

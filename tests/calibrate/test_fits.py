"""The calibration fits recover known costs from synthetic timings (no torch, no measurement).

Each timing below is what the cost model says the measured operation costs (its collectives from
`planner.cost.comm`, its memory traffic at the stated bandwidth) plus a known overhead; every fit
must return that overhead. Real timings stay in the benchmarks (`bench/validation_report.py`), where
a busy machine cannot fail the suite.
"""

import pytest

from planner.calibrate import measure, topology
from planner.cost import comm
from planner.inputs.load import load_model

WORLD, SEQ, MEM_BW = 2, 64, 10.0  # processes, tokens, GB/s
AG, AR, P2P = (2.0, 50.0), (3.0, 40.0), (1.5, 30.0)  # (GB/s, us) of the fitted collectives
KNOWN = {"tflops": 0.1, "layer_overhead_us": 300.0, "loss_element_ns": 15.0, "loss_call_overhead_us": 400.0,
         "optimizer_tensor_overhead_us": 15.0, "sharded_optimizer_tensor_overhead_us": 40.0,
         "shard_unit_overhead_us": 800.0, "shard_copy_gb_per_s": 2.0, "ddp_sync_overhead_us": 500.0,
         "ddp_copy_gb_per_s": 4.0, "pipeline_tick_overhead_us": 700.0}


def link(pair):
    return pair[0] * 1e9, pair[1] * 1e-6


def synthetic_model_fit(known: dict) -> dict:
    """`measure_once`'s model_fit for timings that cost exactly `known` beyond the modelled work."""
    shapes = [load_model("tiny-student"), measure.widened(load_model("tiny-student"))]
    k = known
    # training steps: t = 3 * (flops / peak + layers * overhead); loss: t = call + elements * per element
    steps = {str(f): {"flops": 3 * f, "layer_passes": 12, "seconds": 3 * (f / (k["tflops"] * 1e12) + 4 * k["layer_overhead_us"] * 1e-6)}
             for f in (1e7, 1e8, 1e9)}
    calls = {str(n): {"elements": n, "seconds": k["loss_call_overhead_us"] * 1e-6 + k["loss_element_ns"] * 1e-9 * n}
             for n in (16384, 131072)}
    # clip + AdamW: the memory traffic of 4 fp32 tensors read and written, plus a fixed time per tensor
    numel, tensors = 2_000_000, 50

    def optimizer(per_tensor_us):
        return measure.fit_per_tensor(numel * 32 / (MEM_BW * 1e9) + tensors * per_tensor_us * 1e-6, numel, tensors, MEM_BW)

    # FSDP: 2 passes of (layers + 1) unit gathers, each the modelled all-gather + fixed + bytes / copy rate
    gathers = {}
    for sh in shapes:
        units, nbytes = sh.num_layers + 1, measure._fp32_param_bytes(sh)
        plain = 0.05 * nbytes / 1e7
        extra = 2 * units * (k["shard_unit_overhead_us"] * 1e-6 + nbytes / units / (k["shard_copy_gb_per_s"] * 1e9))
        sharded = plain + 2 * comm.all_gather(WORLD, nbytes, link(AG), calls=units) + extra
        gathers[sh.name] = measure.fsdp_extra(sh, plain, sharded, WORLD, AG, 2)
    # DDP: the modelled all-reduce + fixed + bytes / copy rate per sync
    syncs = {}
    for sh in shapes:
        nbytes = measure._fp32_param_bytes(sh)
        unsynced = 0.02 * nbytes / 1e7
        synced = unsynced + comm.all_reduce(WORLD, nbytes, link(AR)) + k["ddp_sync_overhead_us"] * 1e-6 + nbytes / (k["ddp_copy_gb_per_s"] * 1e9)
        syncs[sh.name] = measure.ddp_extra(sh, unsynced, synced, WORLD, AR)
    # pipeline: every tick one stage forward + the fixed tick time, plus the modelled sends
    s, stage = shapes[0], 2e-3
    piped = {}
    for b in (1, 3):
        m = WORLD * b
        ticks, sends = m + WORLD - 1, (WORLD - 1) + (m - 1)
        piped[b] = (ticks * (stage + k["pipeline_tick_overhead_us"] * 1e-6) + sends * comm.p2p(SEQ * s.hidden * 4, link(P2P))
                    + comm.p2p((WORLD - 1) * b * (SEQ // 2) * s.vocab * 4, link(P2P), calls=0))
    return {"model": s.name, "dtype": "fp32", "train_steps": steps, "loss_calls": calls,
            "optimizer_tensor_overhead_us": optimizer(k["optimizer_tensor_overhead_us"]),
            "sharded_optimizer_tensor_overhead_us": optimizer(k["sharded_optimizer_tensor_overhead_us"]),
            "fsdp_gathers": gathers, "ddp_syncs": syncs,
            "pipeline_tick_overhead_us": measure.fit_pipeline_tick(s, WORLD, SEQ, stage, piped, P2P)}


def test_every_overhead_is_recovered_from_synthetic_timings():
    fit = topology.fitted(synthetic_model_fit(KNOWN))
    for key, value in KNOWN.items():
        assert fit[key] == pytest.approx(value, rel=1e-6), key


def test_no_overhead_fits_as_zero():
    """Timings that are all modelled work leave nothing to fit: every fixed cost is 0 (never negative)."""
    known = {k: (v if k in ("tflops", "loss_element_ns") else 0.0) for k, v in KNOWN.items()}
    known["shard_copy_gb_per_s"] = known["ddp_copy_gb_per_s"] = float("inf")  # no per-byte copies either
    fit = topology.fitted(synthetic_model_fit(known))
    for key in ("layer_overhead_us", "loss_call_overhead_us", "optimizer_tensor_overhead_us",
                "sharded_optimizer_tensor_overhead_us", "shard_unit_overhead_us", "ddp_sync_overhead_us",
                "pipeline_tick_overhead_us"):
        assert fit[key] == pytest.approx(0.0, abs=1e-6), key
    assert fit["shard_copy_gb_per_s"] == 0.0 and fit["ddp_copy_gb_per_s"] == 0.0  # 0: none found

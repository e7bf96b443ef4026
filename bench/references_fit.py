"""Fit the cost model's GPU knobs on the `fit` rows of bench/references/published.yaml only.

One generic fitter (`planner.calibrate.fit.bisect`, shared with `planner calibrate`): for a knob
and one row, find the value at which the compiled model's prediction equals the published figure
(bisection; every prediction is monotone in these knobs),
then take the median over the rows of the knob's group. The knobs:

- `compute_efficiency` per (topology, dtype): training rows (tokens/s/GPU, MFU) and prefill rows;
- `decode_layer_overhead_us`: the host time per layer per decode step of eager engines.

Rows the model cannot express (`predict` returns None) inform nothing. The holdout is never read.
"""

from __future__ import annotations

import statistics

from references_eval import EAGER_ENGINES, predict

from planner.calibrate.fit import bisect

EFFICIENCY_KINDS = ("train_tokens_per_s_per_gpu", "train_mfu", "prefill_ms")


def solve(row: dict, knobs_at, lo: float, hi: float) -> float | None:
    """The knob value in [lo, hi] where predict(row) meets the published value (the package's one
    bisection, `planner.calibrate.fit.bisect`); None if the row is out of scope."""
    return bisect(lambda x: predict(row, knobs_at(x))[0], float(row["value"]), lo, hi)


def _dtype(row: dict) -> str:
    return row["workload"].get("dtype") or "bf16"


def fit_knobs(rows: list[dict]) -> dict:
    fit = [r for r in rows if r["split"] == "fit"]
    eff: dict[str, dict[str, list[float]]] = {}
    for r in fit:
        if r["kind"] in EFFICIENCY_KINDS:
            topo, dt = r["topology_hint"], _dtype(r)
            x = solve(r, lambda e, topo=topo, dt=dt: {"compute_efficiency": {topo: {dt: e}}}, 0.02, 1.0)
            if x is not None:
                eff.setdefault(topo, {}).setdefault(dt, []).append(x)
    overhead = []
    for r in fit:
        if r["kind"] == "decode_ms_per_token" and any((r["workload"].get("engine") or "").startswith(e) for e in EAGER_ENGINES):
            x = solve(r, lambda us: {"decode_layer_overhead_us": us}, 1.0, 10_000.0)
            if x is not None:
                overhead.append(x)
    return {
        "compute_efficiency": {t: {d: round(statistics.median(v), 3) for d, v in ds.items()} for t, ds in eff.items()},
        "compute_efficiency_rows": {t: {d: len(v) for d, v in ds.items()} for t, ds in eff.items()},
        "decode_layer_overhead_us": round(statistics.median(overhead), 1) if overhead else None,
        "decode_layer_overhead_rows": len(overhead),
    }

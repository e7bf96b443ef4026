"""Published GPU measurements through the cost model: predicted vs published, per row and per half.

    .venv/bin/python bench/references.py                 # table; summary per half and per kind
    .venv/bin/python bench/references.py --format json   # {"rows": [...], "summary": {"fit": ..., "holdout": ...}}
    .venv/bin/python bench/references.py --fit           # refit the knobs on the fit half only, print them

Every row of `bench/references/published.yaml` is evaluated by `planner.search.rank.score` (the
compiled cost model, the code path of `planner estimate`) on the row's bundled topology, with the
runtime knobs that the bundled files hold. How each kind maps onto the model is in
`bench/references/README.md`; rows the planner cannot express (tensor-parallel decoding,
NVLink SHARP) are reported with a reason and kept out of the summary. `--fit` refits the
knobs from the `fit` rows alone (`bench/references_fit.py`); the test checks that the committed
values are what it gives, so the holdout never informs them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from references_eval import evaluate_row, load_rows  # noqa: E402

TIME_KINDS = ("train_tokens_per_s_per_gpu", "train_mfu", "decode_ms_per_token", "prefill_ms", "busbw_gb_per_s")


def summarize(rows: list[dict]) -> dict:
    """Mean and max absolute relative error per half, per kind and per class (time / memory)."""
    out: dict = {}
    for half in ("fit", "holdout"):
        mine = [r for r in rows if r["split"] == half and r["error"] is not None]
        entry: dict = {"rows": len(mine)}
        for cls, kinds in (("time", TIME_KINDS), ("memory", ("memory_gib",))):
            errs = [abs(r["error"]) for r in mine if r["kind"] in kinds]
            entry[cls] = {"rows": len(errs), "mean_abs_error": float(np.mean(errs)) if errs else None,
                          "max_abs_error": float(np.max(errs)) if errs else None}
        errs = [abs(r["error"]) for r in mine]
        entry["mean_abs_error"] = float(np.mean(errs)) if errs else None
        entry["max_abs_error"] = float(np.max(errs)) if errs else None
        entry["by_kind"] = {k: {"rows": len(e), "mean_abs_error": float(np.mean(e)), "max_abs_error": float(np.max(e))}
                            for k in sorted({r["kind"] for r in mine})
                            for e in [[abs(r["error"]) for r in mine if r["kind"] == k]]}
        out[half] = entry
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--format", choices=("table", "json", "markdown"), default="table")
    ap.add_argument("--fit", action="store_true", help="Refit the knobs on the fit rows and print them (nothing is written).")
    args = ap.parse_args()
    rows = load_rows()
    if args.fit:
        from references_fit import fit_knobs
        print(yaml.safe_dump(fit_knobs(rows), sort_keys=True))
        return
    results = [evaluate_row(r) for r in rows]
    summary = summarize(results)
    if args.format == "json":
        print(json.dumps({"rows": results, "summary": summary}, indent=1))
        return
    if args.format == "markdown":
        print("| half | kind | row | published | predicted | error | how |\n|---|---|---|---:|---:|---:|---|")
        for r in sorted(results, key=lambda r: (r["split"], r["kind"], r["id"])):
            pred = "-" if r["predicted"] is None else f"{r['predicted']:.4g}"
            err = "-" if r["error"] is None else f"{r['error']:+.0%}"
            print(f"| {r['split']} | {r['kind']} | {r['id']} | {r['published']:.4g} {r['unit'].split(' (')[0]} | {pred} | {err} | {r['note']} |")
        for half, s in summary.items():
            print(f"\n**{half}** ({s['rows']} scored rows): time/throughput mean {s['time']['mean_abs_error']:.1%}, max {s['time']['max_abs_error']:.1%}; "
                  f"memory mean {s['memory']['mean_abs_error']:.1%}, max {s['memory']['max_abs_error']:.1%}.")
        return
    print(f"{'split':7} {'kind':26} {'id':58} {'published':>10} {'predicted':>10} {'error':>7}  note")
    for r in sorted(results, key=lambda r: (r["kind"], r["split"], r["id"])):
        pred = "-" if r["predicted"] is None else f"{r['predicted']:.4g}"
        err = "-" if r["error"] is None else f"{r['error']:+.0%}"
        print(f"{r['split']:7} {r['kind']:26} {r['id'][:58]:58} {r['published']:>10.4g} {pred:>10} {err:>7}  {r['note']}")
    print()
    for half, s in summary.items():
        t, m = s["time"], s["memory"]
        fmt = lambda x: "-" if x is None else f"{x:.1%}"  # noqa: E731
        print(f"{half:8} {s['rows']} rows: time/throughput mean {fmt(t['mean_abs_error'])} max {fmt(t['max_abs_error'])} "
              f"({t['rows']} rows); memory mean {fmt(m['mean_abs_error'])} max {fmt(m['max_abs_error'])} ({m['rows']} rows)")
        for k, e in s["by_kind"].items():
            print(f"         {k:28} {e['rows']:2} rows  mean {e['mean_abs_error']:.1%}  max {e['max_abs_error']:.1%}")


if __name__ == "__main__":
    main()

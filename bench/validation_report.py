"""Regenerate docs/validation.md: calibrate this machine, run every executor strategy on the tiny
models, and put the cost model's predictions next to the measurements.

Run: .venv/bin/python bench/validation_report.py [--steps 8] [--rounds 2] [--with-trl] [--out docs/validation.md]
(about 6 minutes on the 2-core CI machine with --rounds 3, 9 with --with-trl; keep the machine otherwise idle).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from planner import validate
from planner.calibrate.topology import median_of, to_topology
from planner.inputs.load import load_cluster
from planner.inputs.yamlio import dump_yaml
from planner.plan import load_plan, write_plan

ROOT = Path(__file__).resolve().parent.parent
PLANNER = [sys.executable, "-m", "planner"]
# (name, base example, teacher/student overrides)
CASES = [
    ("replicate / ddp", "tiny-replicate-ddp", {}),
    ("replicate / zero1", "tiny-replicate-ddp", {"student": {"strategy": "zero1", "shard": 2}}),
    ("replicate / zero3", "tiny-replicate-ddp", {"student": {"strategy": "zero3", "shard": 2}}),
    ("shard / zero3", "tiny-shard-zero3", {}),
    ("shard / ddp", "tiny-shard-zero3", {"student": {"strategy": "ddp", "shard": 1}}),
    ("pipeline / ddp", "tiny-pipeline-ddp", {}),
    ("pipeline / zero3", "tiny-pipeline-ddp", {"student": {"strategy": "zero3", "shard": 2}}),
    ("disaggregated replicate / ddp", "tiny-disaggregated", {}),
]


def spearman(a: list[float], b: list[float]) -> float:
    def ranks(x):
        order = sorted(range(len(x)), key=lambda i: x[i])
        r = [0.0] * len(x)
        for pos, i in enumerate(order):
            r[i] = float(pos)
        return r
    ra, rb = ranks(a), ranks(b)
    ma, mb = statistics.mean(ra), statistics.mean(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    return cov / ((sum((x - ma) ** 2 for x in ra) * sum((y - mb) ** 2 for y in rb)) ** 0.5)


def plan_for(tmp: Path, name: str, base: str, change: dict) -> Path:
    plan = load_plan(ROOT / "examples" / f"{base}.yaml")
    upd = {k: getattr(plan, k).model_copy(update=v) for k, v in change.items()}
    path = tmp / (name.replace(" / ", "-").replace(" ", "-") + ".yaml")
    write_plan(plan.model_copy(update=upd), path, force=True)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=2, help="runs of every strategy, alternating; steady steps pooled")
    ap.add_argument("--out", default=str(ROOT / "docs" / "validation.md"))
    ap.add_argument("--with-trl", action="store_true", help="also run bench/vs_trl.py (needs the bench extra) and include it")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        paths = [plan_for(tmp, name, base, change) for name, base, change in CASES]
        runs: dict[str, list[dict]] = {p.stem: [] for p in paths}
        calibrations = []
        for r in range(args.rounds + 1):
            # a calibration round before every round of runs and one after the last: the machine's
            # drift over the report reaches the calibration as it reaches the measurements
            cal = tmp / f"calibration-{r}.yaml"
            subprocess.run(PLANNER + ["calibrate", "--model", "tiny-student", "-o", str(cal), "--name", "this-machine"], check=True)
            calibrations += json.loads(cal.with_suffix(".raw.json").read_text())["rounds"]
            if r == args.rounds:
                break
            for path in paths:  # alternate the strategies so a drift of the machine hits them all alike
                metrics = tmp / f"{path.stem}-{r}.json"
                subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "planner",
                                "run", str(path), "--steps", str(args.steps), "--metrics-out", str(metrics), "--no-progress", "--phases",
                                "--random-init"],
                               check=True, capture_output=True)
                runs[path.stem].append(json.loads(metrics.read_text()))
        topo = tmp / "this-machine.yaml"
        topo.write_text(f"# `planner calibrate --model tiny-student`: per-figure median of {len(calibrations)} rounds, one before each "
                        "round of runs and one after the last\n" + dump_yaml(to_topology(median_of(calibrations), "this-machine", 2)))
        cluster = load_cluster(str(topo))
        results = []
        for (name, _, _), path in zip(CASES, paths):
            merged = dict(runs[path.stem][0])  # every round's steady steps together
            merged["step_times_s"] = [s for m in runs[path.stem] for s in m["step_times_s"][m["warmup_steps"]:]]
            merged["warmup_steps"] = 0
            merged["phase_times_s"] = [s for m in runs[path.stem] for s in m["phase_times_s"][m["warmup_steps"]:]]
            rows = validate.compare(load_plan(path), merged, cluster)
            results.append((name, rows))
            print(f"{name:32} predicted {rows[0].predicted * 1e3:8.1f} ms  measured {rows[0].measured * 1e3:8.1f} ms  "
                  f"error {rows[0].rel_error:+.1%}", flush=True)
        topo_text = topo.read_text()
    trl = None
    if args.with_trl:  # needs the bench extra (trl, deepspeed, accelerate)
        done = subprocess.run([sys.executable, str(ROOT / "bench" / "vs_trl.py")], capture_output=True, text=True)
        text = done.stdout
        trl = text[text.index("GKD on tiny Llamas"):] if "GKD on tiny Llamas" in text else f"vs_trl.py failed:\n{done.stderr[-2000:]}"
        print(trl)
    write_report(Path(args.out), results, topo_text, args.steps, trl)


def write_report(out: Path, results, topo_text: str, steps: int, trl: str | None) -> None:
    pred = [r[0].predicted for _, r in results]
    meas = [r[0].measured for _, r in results]
    errs = [abs(r[0].rel_error) for _, r in results]
    state = [abs(x.rel_error) for _, r in results for x in r if x.what.endswith("(bytes)") and x.tolerance is not None]
    lines = [
        "# Validation: predicted vs measured", "",
        "Regenerated by `.venv/bin/python bench/validation_report.py` (do not edit by hand). Machine: "
        f"{platform.machine()}, {platform.processor() or 'CPU'}; 2 gloo processes; tiny Llama teacher and student "
        f"(`jobs/tiny-cpu.yaml`); {steps} optimizer steps per strategy and round, rounds alternating, warm-up excluded, "
        "median of the pooled steady steps; the sides of the step are the executor's `--phases` (teacher: its logits, "
        "or the wait for them; student: forward, loss, backward, optimizer) against the cost model's terms on each side; the cost model is evaluated on the topology of `planner calibrate --model tiny-student` "
        "rounds taken before each round of runs and after the last (per-figure median, below).", "",
        "This is in-sample: calibrated and measured on this machine, these models and lengths, 2 processes and "
        "`lmbda` 0 (no generation). The out-of-sample check, on published GPU figures held out of every fit and per "
        "kind (training throughput, decode, prefill, collectives, memory), is `docs/references.md` "
        "(`bench/references.py`).", "",
        "| strategy (teacher / student) | predicted step ms | measured step ms | error | teacher side ms, predicted / measured | student side ms, predicted / measured | state bytes max error |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, rows in results:
        st = max((abs(x.rel_error) for x in rows if x.what.endswith("(bytes)") and x.tolerance is not None), default=0)
        side = {x.what.split()[0]: f"{x.predicted * 1e3:.1f} / {x.measured * 1e3:.1f}" for x in rows if x.what.endswith("side of the step (s)")}
        lines.append(f"| {name} | {rows[0].predicted * 1e3:.1f} | {rows[0].measured * 1e3:.1f} | {rows[0].rel_error:+.1%} | "
                     f"{side.get('teacher', '-')} | {side.get('student', '-')} | {st:.2%} |")
    lines += ["", f"- Mean relative step-time error: **{statistics.mean(errs):.1%}** (target <= 15%).",
              f"- Model-state bytes (weights, gradients, optimizer, teacher weights) vs the executor's exact count: "
              f"max error **{max(state):.2%}** (target <= 1%).",
              f"- Ranking of strategies by step time, Spearman predicted vs measured: **{spearman(pred, meas):.2f}** (target >= 0.8).",
              "", "Calibrated topology used for the predictions:", "", "```yaml", topo_text.strip(), "```", ""]
    if trl:
        lines += ["## Side by side with TRL", "", "`bench/vs_trl.py` (same models, weights, tokenizer, data order, batch, "
                  "lengths, GKD settings and optimizer on both sides; TRL 1.16 `GKDTrainer` under torchrun with DDP, and "
                  "with DeepSpeed ZeRO-3 where the per-rank budget (`topologies/cpu-tight.yaml`) does not hold a teacher "
                  "replica; our side runs the plan `planner recommend` chooses for the same budget):", "", "```", trl.strip(), "```", ""]
    out.write_text("\n".join(lines))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

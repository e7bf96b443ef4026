"""Samples/s of each example plan's strategy on the tiny models, side by side in one torchrun job.

    .venv/bin/python bench/executor.py [--rounds 3] [--steps 6] [--warmup 2] [examples/tiny-*.yaml ...]

Re-launches itself under `torchrun --standalone --nproc-per-node N` (N from the plans). The plans
run alternately, round after round, in the same processes, so drift of a shared machine hits them
all alike; each run's first `--warmup` steps are left out; the table shows the median over rounds
and the ratio to the first plan.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("plans", nargs="*", default=sorted(str(p) for p in (ROOT / "examples").glob("tiny-*.yaml")))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=2)
    args = ap.parse_args()
    from planner.plan import load_plan

    plans = [load_plan(p) for p in args.plans]
    if "RANK" not in os.environ:  # launch ourselves under torchrun
        n = plans[0].world
        torchrun = Path(sys.executable).with_name("torchrun")
        env = os.environ | {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        sys.exit(subprocess.call([str(torchrun), "--standalone", f"--nproc-per-node={n}", __file__, *sys.argv[1:]], env=env))

    import torch.distributed as dist

    from planner.executor.loop import RunOptions, run

    results: dict[str, list[float]] = {p: [] for p in args.plans}
    for _ in range(args.rounds):
        for path, plan in zip(args.plans, plans):
            out = run(plan, RunOptions(steps=args.steps, warmup_steps=args.warmup, progress=False, random_init=True), keep_process_group=True)
            if out is not None:
                results[path].append(out["samples_per_s"])
    if dist.get_rank() == 0:
        from rich.console import Console
        from rich.table import Table

        t = Table(title=f"executor samples/s: tiny models, {plans[0].world} x {plans[0].backend}, "
                        f"median of {args.rounds} rounds, {args.steps - args.warmup} steady steps each")
        for col in ("plan", "placement", "teacher", "student", "samples/s", "ratio"):
            t.add_column(col, justify="right" if col in ("samples/s", "ratio") else "left")
        base = statistics.median(results[args.plans[0]])
        for path, plan in zip(args.plans, plans):
            med = statistics.median(results[path])
            t.add_row(Path(path).stem, plan.placement, plan.teacher.strategy, plan.student.strategy, f"{med:.1f}", f"{med / base:.2f}")
        Console().print(t)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()

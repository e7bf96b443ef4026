"""How fast the compiled search is, measured side by side in one run.

1. Candidates per second: the same compiled cost function evaluated (a) on arrays of candidates,
   one vectorised call, and (b) in a plain-Python loop, one scalar call per candidate.
2. Wall time of a cold `planner recommend` on the bundled default (median of 5 processes).

Run: .venv/bin/python bench/search_speed.py
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from planner.cost.bind import job_values
from planner.cost.compile import compiled, evaluate
from planner.inputs.load import load_cluster, load_job
from planner.search import space


def main() -> None:
    job, cluster = load_job(), load_cluster("dgx-h100")
    cands, _ = space.enumerate_candidates(job, cluster)
    cols = space.columns(cands, cluster)
    base = job_values(job, cluster)
    reps = max(1, 1_000_000 // len(cands))
    big = {k: np.tile(v, reps) if np.ndim(v) else v for k, v in cols.items()}
    n_big = reps * len(cands)
    times = []
    for _ in range(5):  # the first call pays for page faults of fresh arrays: median of 5
        t0 = time.perf_counter()
        evaluate(base | big)
        times.append(time.perf_counter() - t0)
    vec = n_big / statistics.median(times)

    arg_names, _, fn = compiled()
    n_loop = min(len(cands), 2000)
    rows = [{k: float(v[i]) if np.ndim(v) else v for k, v in cols.items()} for i in range(n_loop)]
    t0 = time.perf_counter()
    for row in rows:
        vals = base | row
        fn(*(vals[a] for a in arg_names))
    loop = n_loop / (time.perf_counter() - t0)

    planner = str(Path(sys.executable).with_name("planner"))
    walls = []
    for _ in range(5):
        t0 = time.perf_counter()
        subprocess.run([planner, "recommend"], check=True, capture_output=True)
        walls.append(time.perf_counter() - t0)

    print(f"candidates in the default search space: {len(cands)}")
    print(f"vectorised : {vec:>12,.0f} candidates/s  ({n_big:,} candidates in one call)")
    print(f"python loop: {loop:>12,.0f} candidates/s  ({n_loop:,} scalar calls)")
    print(f"ratio      : {vec / loop:>12,.0f}x")
    print(f"`planner recommend` cold wall time, median of 5: {statistics.median(walls):.3f} s "
          f"(min {min(walls):.3f}, max {max(walls):.3f})")


if __name__ == "__main__":
    main()

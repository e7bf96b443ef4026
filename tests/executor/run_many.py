"""Run several plans one after the other inside one torchrun job (saves the start-up of each).

Usage: torchrun --nproc-per-node 2 tests/executor/run_many.py JOBS.json, where JOBS.json is a list
of {"plan": path, "metrics_out": path, "steps": n} (and optionally "teacher_cache": folder; "random_init": false
for plans whose refs are checkpoints); a job with "cache_teacher": folder (and no "metrics_out") writes
that teacher cache instead of training, as `planner run --cache-teacher` does.
"""

import json
import sys

from planner.executor import cache_pass
from planner.executor.loop import RunOptions, run
from planner.plan import load_plan

for job in json.loads(open(sys.argv[1]).read()):
    run_plan = cache_pass.run if job.get("cache_teacher") else run
    run_plan(load_plan(job["plan"]), RunOptions(steps=job.get("steps"), metrics_out=job.get("metrics_out"), progress=False, warmup_steps=0,
                                               teacher_cache=job.get("teacher_cache"), cache_teacher=job.get("cache_teacher"),
                                               random_init=job.get("random_init", True)), keep_process_group=True)

# `run` leaves the process group up between jobs; take it down here, as a single `planner run` does,
# rather than leave gloo's threads to the interpreter's exit. (In one CI run a rank of this script
# aborted with "terminate called without an active exception", exit -6; where is not known: this
# removes the one teardown that was left to chance.)
import torch.distributed as dist  # noqa: E402

if dist.is_initialized():
    dist.barrier()
    dist.destroy_process_group()

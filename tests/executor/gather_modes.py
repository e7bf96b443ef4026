"""A ZeRO-3 (FSDP2) student generating with each way `StudentPlan.gather` names, on 2 gloo processes,
then a list of plans (as run_many.py does), noting how the training loop gathered the student.

Usage: torchrun --nproc-per-node 2 tests/executor/gather_modes.py PLAN OUT.json JOBS.json
Every rank builds PLAN's student (zero3), generates its micro-batch under `student.for_generation`
gathering `once` and then `per_step` (same seed), and records the tokens and the most student bytes
held unsharded at any layer's forward (a pre- and a post-hook on every decoder layer: FSDP2 swaps a
unit's DTensor shards for plain unsharded parameters while it is gathered). Rank 0 writes OUT.json:
{"layer_bytes": [...], "gathers": {plan: [gather, ...]}, "ranks": [{once: {...}, per_step: {...}}, ...]}.
"""

import json
import sys

import torch.distributed as dist
from torch.distributed.tensor import DTensor

from planner.executor import build, groups, loop, models
from planner.executor import student as stu
from planner.executor.data import make_samples
from planner.executor.generate import generate
from planner.plan import load_plan

plan = load_plan(sys.argv[1])
w = plan.workload
_, device = groups.init_distributed(plan)
lay = groups.build_layout(plan, device)
model = models.student(plan, lay, 0, None)
layers = list(model.model.layers)
peak = [0]


def unsharded_bytes() -> int:
    return sum(p.numel() * p.element_size() for layer in layers for p in layer.parameters() if not isinstance(p, DTensor))


def note(*_):
    peak[0] = max(peak[0], unsharded_bytes())


for layer in layers:
    layer.register_forward_pre_hook(note)
    layer.register_forward_hook(note)

samples = make_samples(plan, build.ByteTokenizer(), 0, None)
batch = samples.batch(list(range(lay.dp_rank * plan.micro_batch, (lay.dp_rank + 1) * plan.micro_batch)))
mine = {}
for gather in ("once", "per_step"):
    peak[0] = 0
    with stu.for_generation(model, plan.student.strategy, gather) as gen_model:
        got = generate(gen_model, batch, w.prompt_len, w.temperature, 7, w.generation_kv_cache)
    mine[gather] = {"tokens": got.input_ids.tolist(), "peak_unsharded_bytes": peak[0], "unsharded_after": unsharded_bytes()}
ranks = [None] * dist.get_world_size()
dist.all_gather_object(ranks, mine)
layer_bytes = [sum(p.numel() * p.element_size() for p in layer.parameters()) for layer in layers]  # a DTensor's numel is the whole tensor's

# The training loop: which gather it asks `for_generation` for, per plan.
calls, chosen = [], stu.for_generation
stu.for_generation = lambda m, strategy, gather: (calls.append(gather), chosen(m, strategy, gather))[1]
gathers = {}
for job in json.loads(open(sys.argv[3]).read()):
    calls.clear()
    loop.run(load_plan(job["plan"]), loop.RunOptions(steps=job["steps"], random_init=True, metrics_out=job["metrics_out"], progress=False,
                                                     warmup_steps=0), keep_process_group=True)
    gathers[job["plan"]] = sorted(set(calls))
if dist.get_rank() == 0:
    with open(sys.argv[2], "w") as f:
        json.dump({"layer_bytes": layer_bytes, "gathers": gathers, "ranks": ranks}, f)
dist.barrier()  # no rank closes its connections while a peer still reads (see executor_helpers.torchrun)
dist.destroy_process_group()

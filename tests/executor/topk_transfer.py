"""Top-k transfer between 2 gloo processes, then a list of plans (as run_many.py does).

Usage: torchrun --nproc-per-node 2 tests/executor/topk_transfer.py PLAN OUT.json [JOBS.json]
Rank 0 serves PLAN's teacher (teacher_output: topk) for 3 micro-batches; rank 1 requests them with
`teacher.Remote(topk=k)` and writes to OUT.json what it received next to the top-k of the same
teacher built locally (same seed: identical weights), and the bytes a logits answer would take.
"""

import json
import sys

import torch
import torch.distributed as dist

from planner.executor import build, loop, teacher as tea
from planner.executor.data import make_samples
from planner.executor.loss import top_k
from planner.executor.topk import TopKTeacher
from planner.plan import load_plan

plan = load_plan(sys.argv[1])
w, t = plan.workload, plan.teacher
dist.init_process_group("gloo")
rank, cpu, ldtype, n = dist.get_rank(), torch.device("cpu"), loop.LOGITS_DTYPES[w.logits_dtype], 3
model = build.freeze(build.build_model(t.ref, t.shape, w.teacher_dtype or t.shape.dtype, 0))
if rank == 0:
    tea.serve(TopKTeacher(tea.Replicated(model, cpu, w.completion_len), w.topk), [1], n, plan.micro_batch, ldtype, cpu)
else:
    samples = make_samples(plan, build.ByteTokenizer(), 0, None)
    remote = tea.Remote(0, t.shape.vocab, w.completion_len, ldtype, cpu, topk=w.topk)
    local = tea.Replicated(model, cpu, w.completion_len)
    rows = []
    for i in range(n):
        batch = samples.batch(list(range(i * plan.micro_batch, (i + 1) * plan.micro_batch)))
        got = remote.request(batch)()
        want = top_k(local.request(batch)(), w.topk)
        rows.append({"values_equal": torch.equal(got.values, want.values.to(ldtype)), "indices_equal": torch.equal(got.indices, want.indices),
                     "values_dtype": str(got.values.dtype), "indices_dtype": str(got.indices.dtype), "shape": list(got.values.shape),
                     "bytes": got.values.nbytes + got.indices.nbytes,
                     "logits_bytes": plan.micro_batch * w.completion_len * t.shape.vocab * got.values.element_size()})
    with open(sys.argv[2], "w") as f:
        json.dump(rows, f)
if len(sys.argv) > 3:
    for job in json.loads(open(sys.argv[3]).read()):
        loop.run(load_plan(job["plan"]), loop.RunOptions(steps=job["steps"], random_init=True, metrics_out=job["metrics_out"], progress=False, warmup_steps=0,
                                                         teacher_cache=job.get("teacher_cache")), keep_process_group=True)
dist.barrier()  # no rank closes its connections while a peer still reads (see executor_helpers.torchrun)
dist.destroy_process_group()

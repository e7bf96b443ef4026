"""`planner run PLAN --cache-teacher DIR`: one teacher pass over the plan's data, written as a cache.

Only the teacher runs, with the plan's teacher strategy on the plan's teacher ranks (student-only
ranks wait); completions are the data's own (lmbda 0). Teacher rank r of n takes samples r, r + n, ...
in micro-batches of the plan's size, every rank the same number of them (the last padded with a
repeat that is not kept) because a sharded or pipelined teacher's forward is collective; it keeps
the top-k of each (`TopKTeacher`) and writes its shard. The first teacher rank writes the manifest
last, after every shard is in place (planner/executor/cache.py holds the format).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch
import torch.distributed as dist

from planner.executor import build, cache, groups, models
from planner.executor.data import make_samples
from planner.executor.loop import LOGITS_DTYPES, RunOptions, stop_on_input_error
from planner.executor.topk import TopKTeacher
from planner.files import write_files, write_text
from planner.inputs.errors import InputError
from planner.inputs.training import resolve_steps
from planner.plan import Plan, tokenizer_folder


def _pass(plan: Plan, lay: groups.Layout, opts: RunOptions) -> dict | None:
    w, folder = plan.workload, Path(opts.cache_teacher)
    tokenizer = samples = None
    problem = None
    try:
        tokenizer = build.build_tokenizer(tokenizer_folder(plan))
        samples = make_samples(plan, tokenizer, opts.seed, plan.dataset)
    except InputError as e:
        problem = e.lines
    stop_on_input_error(problem, lay)
    n = cache.samples_needed(plan, samples, resolve_steps(opts.steps, plan.training, w.epochs, len(samples.rows) if samples and samples.rows else None, w.global_batch))
    first = lay.teacher_ranks[0]
    if lay.rank == first and opts.force:
        (folder / cache.MANIFEST).unlink(missing_ok=True)  # no stale manifest next to new shards, even after a crash
    t0 = time.perf_counter()
    shards = []
    if lay.is_teacher:
        teacher = TopKTeacher(models.teacher(plan, lay, opts.seed, models.folders(plan, opts.random_init)[0]), w.topk)
        me, n_t, mb = lay.teacher_ranks.index(lay.rank), len(lay.teacher_ranks), plan.micro_batch
        mine = list(range(me, n, n_t))
        values, indices = [], []
        ldtype = LOGITS_DTYPES[w.logits_dtype]
        for r in range(math.ceil(math.ceil(n / n_t) / mb)):  # the same count on every teacher rank
            keys = mine[r * mb:(r + 1) * mb]
            real = len(keys)
            keys += [keys[-1] if keys else 0] * (mb - real)
            out = teacher.request(samples.pack(keys).pad(w.prompt_len, w.completion_len).to(lay.device))()  # stored at the fixed lengths
            values.append(out.values[:real].to(ldtype).cpu())
            indices.append(out.indices[:real].cpu())
        C, k = w.completion_len, w.topk
        data = cache.shard_bytes(mine, torch.cat(values) if values else torch.empty(0, C, k, dtype=ldtype),
                                 torch.cat(indices) if indices else torch.empty(0, C, k, dtype=torch.int32))
        folder.mkdir(exist_ok=True)
        name = cache.shard_name(me)
        write_files([(folder / name, data, False)], opts.force)
        shards.append({"file": name, "sha256": cache.sha256(data), "samples": len(mine), "bytes": len(data)})
    found: list = [None] * lay.world
    dist.all_gather_object(found, shards)
    seconds = time.perf_counter() - t0
    if lay.rank != first:
        return None
    shards = sorted((s for part in found for s in part), key=lambda s: s["file"])
    m = cache.manifest(cache.fingerprint(plan, opts.seed, tokenizer), n, shards)
    write_text(folder / cache.MANIFEST, json.dumps(m, indent=1) + "\n", opts.force)
    return {"samples": n, "shards": len(shards), "bytes": sum(s["bytes"] for s in shards), "seconds": seconds, "folder": str(folder)}


def run(plan: Plan, opts: RunOptions, keep_process_group: bool = False) -> dict | None:
    """Write the teacher cache of `plan` into `opts.cache_teacher` (one process of the plan's world)."""
    if plan.workload.lmbda > 0:
        e = InputError(f"--cache-teacher: workload.lmbda is {plan.workload.lmbda}; a teacher cache holds fixed completions only (lmbda 0)")
        e.all_ranks = True
        raise e
    try:
        groups.check_supported(plan)
    except InputError as e:
        e.all_ranks = True
        raise
    backend, device = groups.init_distributed(plan)
    try:
        out = _pass(plan, groups.build_layout(plan, device), opts)
        dist.barrier()  # the manifest is in place before any rank returns
        return out
    finally:
        if not keep_process_group:
            dist.destroy_process_group()

"""Each rank's teacher and student, built and placed by the plan's strategy, in the order that keeps
a checkpoint from being materialised whole (see `weights`):

| strategy | order |
|---|---|
| teacher replicate, student ddp / zero1 | meta -> load all (on the device) -> wrap (DDP) |
| teacher shard, student zero2 / zero3 / hsdp | meta -> `fully_shard` -> load this rank's shards |
| teacher pipeline / hybrid | meta -> load this stage's layers (and embed / norm + head at the ends) -> stage |
| teacher tp | meta -> `parallelize_module` -> load this rank's slices |

With `random_init` the models are built whole on the CPU from seeded random weights instead
(identical on every rank), then placed the same way.
"""

from __future__ import annotations

import torch
from torch import nn

from planner.executor import build, recompute, student as stu, teacher as tea, weights
from planner.executor.groups import Layout
from planner.executor.tensor_parallel import TensorParallel
from planner.plan import Plan


def folders(plan: Plan, random_init: bool, source: str = "") -> tuple:
    """The teacher's and the student's checkpoint folders (None: random weights); refuses, in one
    line each, a ref without weights unless `random_init`."""
    from planner.inputs.errors import InputError

    found, lines = [], []
    for who in ("teacher", "student"):
        try:
            found.append(weights.checkpoint_folder(getattr(plan, who).ref, f"{who}.ref", random_init, source))
        except InputError as e:
            found.append(None)
            lines += e.lines
    if lines:
        raise InputError(lines)
    return tuple(found)


def _model(ref: str, shape, dtype: str, seed: int, attn: str, folder) -> nn.Module:
    if folder is None:
        return build.build_model(ref, shape, dtype, seed, attn, random_init=True)
    return weights.empty_model(build.model_config(str(folder), shape, attn), build.TORCH_DTYPES.get(dtype, torch.float32))


def teacher(plan: Plan, lay: Layout, seed: int, folder):
    """This teacher rank's part: `Replicated`, `Sharded`, a pipeline stage (`Pipelined`) or a
    tensor-parallel slice (`TensorParallel`)."""
    t, w = plan.teacher, plan.workload
    attn = recompute.attn_implementation(w.flash_attention)
    model = build.freeze(_model(t.ref, t.shape, w.teacher_dtype or t.shape.dtype, seed, attn, folder))
    if t.strategy == "shard":
        sharded = tea.Sharded(model, lay.device, w.completion_len, lay.teacher_mesh)
        if folder is not None:
            weights.fill(model, folder, lay.device)
        return sharded
    if t.strategy == "tp":
        split = TensorParallel(model, lay.device, w.completion_len, lay.tp_mesh, w.prompt_len)
        if folder is not None:
            weights.fill(model, folder, lay.device)
        return split
    if t.strategy in ("pipeline", "hybrid"):
        if folder is not None:
            index = sorted(lay.pipe_ranks).index(lay.rank)
            lo, hi = tea.layer_split(model.config.num_hidden_layers, len(lay.pipe_ranks))[index]
            weights.fill(model, folder, lay.device, keep=weights.stage_modules(model, lo, hi))
        return tea.Pipelined(model, lay.device, w.completion_len, lay.pipe_group, lay.pipe_ranks, plan.micro_batch, w.prompt_len)
    if folder is not None:
        weights.fill(model, folder, lay.device)
    return tea.Replicated(model, lay.device, w.completion_len)


def student_model(plan: Plan, seed: int, folder) -> nn.Module:
    """The student before its strategy: fp32 weights (random, or on meta to be loaded), the
    workload's attention kernel and recomputation."""
    s, w = plan.student, plan.workload
    attn = recompute.attn_implementation(w.flash_attention, w.grad_checkpointing)
    return recompute.apply(_model(s.ref, s.shape, "fp32", seed + 1, attn, folder), w.grad_checkpointing)


def student(plan: Plan, lay: Layout, seed: int, folder) -> nn.Module:
    """This student rank's model, wrapped for its strategy (fp32 weights; autocast does the rest)."""
    s, w = plan.student, plan.workload
    model = student_model(plan, seed, folder)
    fsdp = s.strategy in stu.FSDP_STRATEGIES
    if folder is not None and not fsdp:
        weights.fill(model, folder, lay.device)
    model = stu.wrap(model, s.strategy, lay, build.TORCH_DTYPES.get(w.student_dtype, torch.float32))
    if folder is not None and fsdp:
        weights.fill(model, folder, lay.device)
    return model

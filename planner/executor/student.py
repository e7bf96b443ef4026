"""The trained student: one wrapper per strategy, applied over the student ranks only.

- ddp: `DistributedDataParallel` over the student group (its own `new_group` when disaggregated).
- zero1: DDP gradients + `ZeroRedundancyOptimizer` (optimizer state sharded 1/N).
- zero2: FSDP2 `fully_shard(reshard_after_forward=False)`: parameters stay gathered between
  forward and backward, gradients and optimizer state are sharded (torchtitan's ZeRO-2 analogue).
- zero3: FSDP2 `fully_shard` per decoder layer and at the root (parameters sharded too).
- hsdp: the same over a 2-D (replicate, shard) mesh.

On-policy generation gathers a zero3/hsdp student as the plan's `student.gather` says
(`for_generation`): once for the whole generation, or layer by layer at every decode step.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn
from torch.distributed.optim import ZeroRedundancyOptimizer
from torch.nn.parallel import DistributedDataParallel as DDP

from planner.executor.groups import Layout

FSDP_STRATEGIES = ("zero2", "zero3", "hsdp")


def wrap(model: nn.Module, strategy: str, lay: Layout, compute_dtype: torch.dtype = torch.float32) -> nn.Module:
    """`model` holds fp32 weights (autocast mixed precision); FSDP gathers them in `compute_dtype`
    (MixedPrecisionPolicy, gradients reduced in fp32), as the cost model assumes."""
    if not any(p.is_meta for p in model.parameters()):  # a model built on meta is sharded first, then loaded
        model.to(lay.device)
    model.train()
    if strategy in FSDP_STRATEGIES:
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        reshard = strategy != "zero2"
        mp = {} if compute_dtype == torch.float32 else {"mp_policy": MixedPrecisionPolicy(param_dtype=compute_dtype, reduce_dtype=torch.float32)}
        for layer in model.model.layers:
            fully_shard(layer, mesh=lay.student_mesh, reshard_after_forward=reshard, **mp)
        fully_shard(model, mesh=lay.student_mesh, reshard_after_forward=reshard, **mp)
        return model
    ids = [lay.device] if lay.device.type == "cuda" else None
    # gradients live in DDP's all-reduce buckets: no copy into them per step, no second gradient-sized buffer.
    # No buffer broadcast per forward: a causal LM's buffers (rotary frequencies) are computed, never
    # trained, and DDP already syncs them once at construction; the broadcast cost a collective per forward.
    return DDP(model, device_ids=ids, process_group=lay.student_group, gradient_as_bucket_view=True, broadcast_buffers=False)


def unwrapped(model: nn.Module) -> nn.Module:
    """The module to call for generation (DDP's forward is for training only)."""
    return model.module if isinstance(model, DDP) else model


def for_generation(model: nn.Module, strategy: str, gather: str):
    """The student as generation calls it, gathered as the plan chose (`StudentPlan.gather`): `once`
    (`gathered_for_generation`: the whole model for the whole generation, fewer collectives) or
    `per_step` (the model as it is: FSDP2's hooks all-gather each layer unit before its forward and
    free it after, at every decode step; only one or two layers are ever unsharded)."""
    return gathered_for_generation(model, strategy) if gather == "once" else contextlib.nullcontext(model)


@contextlib.contextmanager
def gathered_for_generation(model: nn.Module, strategy: str):
    """A ZeRO-3/HSDP (FSDP2) student gathered once for a whole generation instead of layer by layer
    at every decode step (TRL's ds3_gather_for_generation; the plan's `student.gather: once`):
    its layer units stay unsharded after their first forward, then are resharded and set back. The
    root unit stays gathered after forward anyway (FSDP2), ZeRO-2 never reshards after forward, and
    DDP/ZeRO-1 hold their weights."""
    from torch.distributed.fsdp import FSDPModule

    units = [m for m in model.modules() if isinstance(m, FSDPModule) and m is not model] if strategy in ("zero3", "hsdp") else []
    for m in units:
        m.set_reshard_after_forward(False, recurse=False)
    try:
        yield model
    finally:
        for m in units:
            m.reshard()
            m.set_reshard_after_forward(True, recurse=False)


def optimizer(model: nn.Module, strategy: str, lay: Layout, training, kind: str) -> torch.optim.Optimizer:
    """The plan's optimizer (`training` lr, betas, eps, decay); zero1 shards it over the student ranks.
    AdamW is fused (one kernel per tensor, 2x the default per-tensor loop on a CPU core, the same
    update to the last bit or so) except on FSDP2's DTensor parameters, which keep the default."""
    from planner.executor.schedule import make_optimizer

    return make_optimizer(model.parameters(), kind, training, lay.student_group if strategy == "zero1" else None,
                          fused=kind == "adamw" and strategy not in FSDP_STRATEGIES)


def grad_sync(model: nn.Module, sync: bool):
    """Skip the gradient all-reduce / reduce-scatter on all but the last micro-step of a step."""
    if isinstance(model, DDP):
        return contextlib.nullcontext() if sync else model.no_sync()
    model.set_requires_gradient_sync(sync)
    return contextlib.nullcontext()


def clip_grad_norm(model: nn.Module, max_norm: float | None) -> float:
    """The global gradient norm before clipping; gradients scaled down to `max_norm` (None: measured only)."""
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), float("inf") if max_norm is None else max_norm)
    return float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)


def _local(t: torch.Tensor) -> torch.Tensor:
    return t.to_local() if hasattr(t, "to_local") else t


def state_bytes(model: nn.Module, opt: torch.optim.Optimizer) -> dict[str, int]:
    """Exact bytes this rank holds for the student's parameters, gradients and optimizer state."""
    params = list(model.parameters())
    nbytes = lambda ts: sum(_local(t).numel() * _local(t).element_size() for t in ts)  # noqa: E731
    inner = opt.optim if isinstance(opt, ZeroRedundancyOptimizer) else opt
    states = [v for s in inner.state.values() for v in s.values() if torch.is_tensor(v)]
    return {"student_params": nbytes(params), "student_grads": nbytes(p.grad for p in params if p.grad is not None),
            "student_optimizer": nbytes(states)}

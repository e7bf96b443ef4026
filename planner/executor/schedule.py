"""The student's optimizer and learning-rate schedule, from the plan's `training` section.

The schedule is PyTorch's own (torch.optim.lr_scheduler): `warmup_steps` of `LinearLR` from
lr/(warmup_steps+1) up to lr (LinearLR cannot start at 0), then `ConstantLR` (factor 1),
`LinearLR` down to min_lr, or `CosineAnnealingLR` down to min_lr over the remaining steps, joined
by `SequentialLR`. Optimizer step k (0-based) runs at the lr the scheduler holds after k `step()`s.

These schedulers are recursive (each lr is computed from the previous one), so a resumed run does
not load a scheduler: it sets the lr back to its peak, builds the schedule afresh and steps it to
the resumed step, which repeats exactly the arithmetic of an uninterrupted run.
"""

from __future__ import annotations

import warnings

import torch
from torch.distributed.optim import ZeroRedundancyOptimizer
from torch.optim.lr_scheduler import ConstantLR, CosineAnnealingLR, LinearLR, LRScheduler, SequentialLR

from planner.inputs.training import Training


def optimizer_class(kind: str, training: Training) -> tuple[type[torch.optim.Optimizer], dict]:
    """AdamW with the section's lr, betas, eps and decay; SGD with momentum 0.9 and the same lr and decay."""
    if kind == "adamw":
        return torch.optim.AdamW, dict(lr=training.lr, betas=tuple(training.betas), eps=training.eps, weight_decay=training.weight_decay)
    return torch.optim.SGD, dict(lr=training.lr, momentum=0.9, weight_decay=training.weight_decay)


def make_optimizer(params, kind: str, training: Training, zero_group=None, fused: bool = False) -> torch.optim.Optimizer:
    """The optimizer over `params`; sharded over `zero_group` (ZeroRedundancyOptimizer) when given;
    `fused`: AdamW's single-kernel implementation."""
    cls, kw = optimizer_class(kind, training)
    if fused:
        kw = kw | {"fused": True}
    if zero_group is not None:
        return ZeroRedundancyOptimizer(params, optimizer_class=cls, process_group=zero_group, **kw)
    return cls(params, **kw)


def make_scheduler(opt: torch.optim.Optimizer, training: Training, steps: int, start: int = 0) -> LRScheduler:
    """The schedule of a `steps`-step run, positioned at optimizer step `start` (a resumed run)."""
    for group in opt.param_groups:  # a loaded optimizer holds the lr of its step: start from the peak
        group["lr"] = training.lr
        group.pop("initial_lr", None)
    warm = training.warmup_steps if training.warmup_steps < steps else 0
    rest = max(steps - warm, 1)
    end = training.min_lr / training.lr
    with warnings.catch_warnings():  # SequentialLR passes an epoch to step(); stepping before opt.step() is intended here
        warnings.simplefilter("ignore", UserWarning)
        if training.schedule == "linear":
            main = LinearLR(opt, start_factor=1.0, end_factor=end, total_iters=rest)
        elif training.schedule == "cosine":
            main = CosineAnnealingLR(opt, T_max=rest, eta_min=training.min_lr)
        else:
            main = ConstantLR(opt, factor=1.0, total_iters=0)
        sched = main
        if warm:
            ramp = LinearLR(opt, start_factor=1.0 / (warm + 1), end_factor=1.0, total_iters=warm)
            sched = SequentialLR(opt, [ramp, main], milestones=[warm])
        for _ in range(start):
            sched.step()
    return sched


def step(sched: LRScheduler) -> None:
    """`sched.step()` without SequentialLR's deprecation warning about its own epoch argument."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        sched.step()


def current_lr(opt: torch.optim.Optimizer) -> float:
    return float(opt.param_groups[0]["lr"])

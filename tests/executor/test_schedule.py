"""The lr schedule is PyTorch's, at the values of its documented formulas; a resumed schedule goes
on where an uninterrupted one is; clipping leaves a norm within the maximum; retention keeps N."""

import math

import pytest
import torch

from planner.executor import checkpoint, schedule
from planner.executor.student import clip_grad_norm
from planner.inputs.training import Training


def _lrs(training: Training, steps: int, start: int = 0) -> list[float]:
    opt = schedule.make_optimizer([torch.nn.Parameter(torch.zeros(3))], "adamw", training)
    opt.param_groups[0]["lr"] = 0.5  # a loaded optimizer holds another lr: the schedule must not start from it
    sched = schedule.make_scheduler(opt, training, steps, start)
    out = []
    for _ in range(start, steps):
        out.append(schedule.current_lr(opt))
        opt.step()
        schedule.step(sched)
    return out


def test_warmup_then_cosine_follows_torch_formulas():
    lr, lo, warm, steps = 1e-3, 1e-5, 3, 12
    got = _lrs(Training(lr=lr, schedule="cosine", warmup_steps=warm, min_lr=lo), steps)
    # LinearLR: lr * (start + (1 - start) * k / warm) with start = 1/(warm+1); CosineAnnealingLR:
    # eta_min + (lr - eta_min) * (1 + cos(pi * t / T_max)) / 2 with t = k - warm, T_max = steps - warm
    want = [lr * (1 / (warm + 1) + (1 - 1 / (warm + 1)) * k / warm) if k < warm
            else lo + (lr - lo) * (1 + math.cos(math.pi * (k - warm) / (steps - warm))) / 2 for k in range(steps)]
    assert got == pytest.approx(want, rel=1e-12)
    assert got[warm] == pytest.approx(lr) and got[-1] > lo


def test_linear_and_constant():
    lr, lo, steps = 2e-3, 2e-4, 8
    assert _lrs(Training(lr=lr, schedule="linear", min_lr=lo), steps) == pytest.approx(
        [lr * (1 + (lo / lr - 1) * k / steps) for k in range(steps)], rel=1e-12)
    assert _lrs(Training(lr=lr), steps) == pytest.approx([lr] * steps, rel=0)


@pytest.mark.parametrize("kind", ["cosine", "linear"])
def test_resumed_schedule_goes_on(kind):
    t = Training(lr=1e-3, schedule=kind, warmup_steps=2, min_lr=1e-4)
    assert _lrs(t, 10, start=5) == _lrs(t, 10)[5:]


def test_clipping_bounds_the_norm():
    model = torch.nn.Linear(8, 8)
    for p in model.parameters():
        p.grad = torch.full_like(p, 3.0)
    before = torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert clip_grad_norm(model, 0.5) == pytest.approx(float(before))
    after = torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert float(after) <= 0.5 + 1e-6
    assert clip_grad_norm(model, None) == pytest.approx(float(after))  # None: measured, not clipped


@pytest.mark.parametrize("keep", [1, 3])
def test_retention_keeps_n(tmp_path, keep):
    for step in range(1, 6):
        (tmp_path / f"step-{step:08d}").mkdir()
        (tmp_path / f"step-{step:08d}" / ".metadata").write_text("x")
        (tmp_path / f"step-{step:08d}" / checkpoint.FINGERPRINT).write_text("{}")  # kd-planner's own: only those are pruned
    checkpoint.prune(tmp_path, keep)
    assert [s for s, _ in checkpoint.complete(tmp_path)] == list(range(5, 5 - keep, -1))

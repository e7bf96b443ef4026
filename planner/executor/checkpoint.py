"""Student checkpoints with torch.distributed.checkpoint (DCP): model, optimizer, step, RNG.

Atomic: the student ranks write `step-NNNNNNNN.tmp`, DCP writes its `.metadata` last, and only
then does the first student rank rename the folder to `step-NNNNNNNN`. A folder without the
final name or without `.metadata` is never resumed from. The two newest are kept.
Data order and on-policy sampling depend only on (seed, step), so step + weights + optimizer
state resume the run exactly; the torch RNG of each rank is saved as well.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import (get_model_state_dict, get_optimizer_state_dict,
                                                     set_model_state_dict, set_optimizer_state_dict)
from torch.distributed.optim import ZeroRedundancyOptimizer

from planner.executor.groups import Layout

KEEP = 2
_NAME = re.compile(r"^step-(\d{8})$")


def _folder(root: Path, step: int) -> Path:
    return root / f"step-{step:08d}"


def latest(root: str | Path | None) -> tuple[int, Path] | None:
    """The newest complete checkpoint under `root`, as (step, folder)."""
    if root is None or not Path(root).is_dir():
        return None
    found = [(int(m.group(1)), p) for p in Path(root).iterdir()
             if (m := _NAME.match(p.name)) and (p / ".metadata").is_file()]
    return max(found) if found else None


def _init_zero_state(opt: ZeroRedundancyOptimizer) -> None:
    """Create the local optimizer state (zero moments) so DCP has tensors to load into."""
    params = [p for g in opt.optim.param_groups for p in g["params"]]
    if not params or opt.optim.state:
        return
    lrs = [g["lr"] for g in opt.optim.param_groups]
    for g in opt.optim.param_groups:
        g["lr"] = 0.0
    for p in params:
        p.grad = torch.zeros_like(p)
    opt.optim.step()
    for g, lr in zip(opt.optim.param_groups, lrs):
        g["lr"] = lr
    for p in params:
        p.grad = None


def _state(model, opt, lay: Layout, step: int, for_load: bool) -> dict:
    sd = {"model": get_model_state_dict(model), "step": torch.tensor(step), f"rng/{lay.rank}": torch.get_rng_state()}
    if isinstance(opt, ZeroRedundancyOptimizer):  # each rank holds its own shard of the optimizer state
        if for_load:
            _init_zero_state(opt)
        sd[f"zero1_optim/{lay.dp_rank}"] = opt.optim.state_dict()
    else:
        sd["optim"] = get_optimizer_state_dict(model, opt)
    return sd


def save(root: str | Path, step: int, model, opt, lay: Layout) -> Path:
    """Write the checkpoint of `step` (collective over the student ranks)."""
    root, final = Path(root), _folder(Path(root), step)
    tmp = final.with_name(final.name + ".tmp")
    if lay.rank == lay.coordinator:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    dist.barrier(group=lay.student_group)
    dcp.save(_state(model, opt, lay, step, False), checkpoint_id=tmp, process_group=lay.student_group)
    if lay.rank == lay.coordinator:
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        done = sorted(p for p in root.iterdir() if _NAME.match(p.name))
        for old in done[:-KEEP]:
            shutil.rmtree(old, ignore_errors=True)
    dist.barrier(group=lay.student_group)
    return final


def load(folder: Path, model, opt, lay: Layout) -> int:
    """Restore the student from `folder` (collective over the student ranks); returns its step."""
    sd = _state(model, opt, lay, 0, True)
    dcp.load(sd, checkpoint_id=folder, process_group=lay.student_group)
    set_model_state_dict(model, sd["model"])
    if isinstance(opt, ZeroRedundancyOptimizer):
        opt.optim.load_state_dict(sd[f"zero1_optim/{lay.dp_rank}"])
    else:
        set_optimizer_state_dict(model, opt, sd["optim"])
    torch.set_rng_state(sd[f"rng/{lay.rank}"])
    return int(sd["step"])

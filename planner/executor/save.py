"""The final save: the trained student as a Hugging Face folder that
`AutoModelForCausalLM.from_pretrained(folder)` loads (safetensors weights, config.json, and the
tokenizer when the plan names one).

The full state dict is gathered from any student wrapping (DDP, ZeroRedundancyOptimizer's DDP,
FSDP2 DTensors) by `torch.distributed.checkpoint.state_dict.get_model_state_dict` with
`full_state_dict=True, cpu_offload=True`: a collective over the student ranks that leaves the
whole dict, on the CPU, on global rank 0 only. When the student's first rank is not global rank 0
(a disaggregated teacher holds rank 0), every student rank gathers it on its device instead and
the first student rank moves it to the CPU. That rank writes `FOLDER.tmp` and renames it to
FOLDER when every file is written, so a folder with the final name is complete.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

from planner.executor.groups import Layout
from planner.inputs.errors import InputError


def check_output_dir(path: str | Path, force: bool, where: str = "training.output_dir") -> None:
    """Refuse, before training, to replace a folder with something in it (unless `force`) or a file."""
    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise InputError(f"{where}: {p}: is a file, not a folder")
    if p.is_dir() and any(p.iterdir()) and not force:
        raise InputError(f"{where}: {p}: exists and is not empty; use --force to replace it, or choose another folder")
    if not p.parent.is_dir():
        raise InputError(f"{where}: {p.parent}: no such folder")


def full_state_dict(model: nn.Module, lay: Layout) -> dict[str, torch.Tensor]:
    """The student's whole state dict on the CPU of its first rank ({} elsewhere); collective over the student ranks."""
    offload = lay.coordinator == 0  # DCP keeps an offloaded full dict on global rank 0 only
    sd = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=offload))
    if lay.rank != lay.coordinator:
        return {}
    return sd if offload else {k: v.detach().cpu() for k, v in sd.items()}


def save_pretrained(model: nn.Module, lay: Layout, folder: str | Path, tokenizer=None) -> Path | None:
    """Write the student to `folder` (collective over the student ranks; the first student rank writes)."""
    from planner.executor.student import unwrapped

    sd = full_state_dict(model, lay)
    final = Path(folder).expanduser()
    if lay.rank == lay.coordinator:
        tmp = final.with_name(final.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        net = unwrapped(model)
        net.config.use_cache = True  # the executor turns the cache off for training; a loaded model generates
        # transformers 5 writes only on global rank 0 once torch.distributed is up; here the student's
        # first rank writes (rank 0 is a teacher's when disaggregated), so it decides for itself
        net.should_save_on_this_rank = lambda is_main_process: is_main_process
        try:
            net.save_pretrained(tmp, state_dict=sd, safe_serialization=True)
        finally:
            del net.should_save_on_this_rank
            net.config.use_cache = False
        if tokenizer is not None and hasattr(tokenizer, "save_pretrained"):
            tokenizer.save_pretrained(tmp)
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
    dist.barrier(group=lay.student_group)
    return final if lay.rank == lay.coordinator else None

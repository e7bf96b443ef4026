"""The final save: the trained student as a Hugging Face folder that
`AutoModelForCausalLM.from_pretrained(folder)` loads (safetensors weights, config.json, and the
tokenizer when the plan names one).

The full state dict is gathered from any student wrapping (DDP, ZeroRedundancyOptimizer's DDP,
FSDP2 DTensors) by `torch.distributed.checkpoint.state_dict.get_model_state_dict` with
`full_state_dict=True, cpu_offload=True`: a collective over the student ranks that leaves the
whole dict, on the CPU, on global rank 0 only. When the student's first rank is not global rank 0
(a disaggregated teacher holds rank 0), every student rank gathers it on its device instead and
the first student rank moves it to the CPU.

What the save promises about the user's files (docs/your-files.md): that rank writes into a
temporary folder of its own (`.FOLDER.XXXXXXXX.tmp`, created exclusively by `tempfile.mkdtemp` in
the same parent, so a user's `FOLDER.tmp` is never touched) and renames it to FOLDER when every
file is written, so a folder with the final name is complete. An empty FOLDER is replaced; a
non-empty one only with `--force` (checked before training), and it is moved aside first and
removed only once the new folder is in place. A failed write removes the temporary folder only.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

from planner.executor.groups import Layout
from planner.inputs.errors import InputError, said_elsewhere


def _probe(folder: Path, where: str) -> None:
    """Refuse a folder this process cannot create a file in (probed with a temporary file)."""
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".kd-planner-probe.", suffix=".tmp")
    except OSError as e:
        raise InputError(f"{where}: cannot write in {folder}: {(e.strerror or str(e)).lower()}") from None
    os.close(fd)
    os.unlink(probe)


def check_output_dir(path: str | Path, force: bool, where: str = "training.output_dir") -> None:
    """Refuse, before training, to replace a folder with something in it (unless `force`) or a file,
    and a folder whose parent (where the temporary folder goes) cannot be written."""
    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise InputError(f"{where}: {p}: is a file, not a folder")
    if p.is_dir() and any(p.iterdir()) and not force:
        raise InputError(f"{where}: {p}: exists and is not empty; use --force to replace it, or choose another folder")
    if not p.parent.is_dir():
        raise InputError(f"{where}: {p.parent}: no such folder")
    _probe(p.parent, where)


def _inside(inner: Path, outer: Path) -> bool:
    inner, outer = Path(os.path.realpath(inner.expanduser())), Path(os.path.realpath(outer.expanduser()))  # symlinks too
    return inner == outer or outer in inner.parents


def check_layout(output_dir: str | Path | None, checkpoint_dir: str | Path | None, where_out: str = "--output-dir",
                 where_ckpt: str = "--checkpoint-dir") -> None:
    """Refuse, before training, an output folder that is the checkpoint folder or holds it (the
    final save replaces the output folder), or one inside the checkpoint folder."""
    if not output_dir or not checkpoint_dir:
        return
    out, ckpt = Path(output_dir), Path(checkpoint_dir)
    if _inside(ckpt, out) or _inside(out, ckpt):
        raise InputError(f"{where_out}: {out}: is {where_ckpt} {ckpt} or holds it or lies inside it; the final save replaces "
                         "the output folder as a whole: give two separate folders")


def check_checkpoint_dir(path: str | Path, where: str = "--checkpoint-dir") -> None:
    """Before training: the checkpoint folder is a folder, or can be made in a folder this process
    can write in (its nearest existing ancestor is probed; nothing is created)."""
    p = Path(os.path.abspath(Path(path).expanduser()))
    if p.exists() and not p.is_dir():
        raise InputError(f"{where}: {p}: is a file, not a folder")
    existing = _nearest_existing(p)
    if not existing.is_dir():
        raise InputError(f"{where}: {existing}: is a file, not a folder")
    _probe(existing, where)


def _nearest_existing(path: Path) -> Path:
    return next(a for a in (path, *path.parents) if a.exists())


def state_bytes(model: nn.Module) -> int:
    """Bytes of the student's whole state dict as the final save writes it (a sharded parameter's
    DTensor counts its global size)."""
    return sum(p.numel() * p.element_size() for p in model.parameters())


def _free_bytes(path: Path) -> tuple[int, int]:
    """(free bytes for this user, device id) of the disk that holds `path` or its nearest existing ancestor."""
    existing = _nearest_existing(path)
    return shutil.disk_usage(existing).free, os.stat(existing).st_dev


def disk_needs(model: nn.Module, optimizer: str, output_dir: Path | None, checkpoint_dir: Path | None) -> list[tuple[str, Path, int]]:
    """(flag, folder, bytes) the run will write: the final save (the student's whole state dict) in
    the output folder and, with checkpoints, two at once (the new one beside the last) with the
    optimizer's fp32 state (AdamW two moments per parameter, SGD one)."""
    weights = state_bytes(model)
    moments = (2 if optimizer == "adamw" else 1) * 4 * sum(p.numel() for p in model.parameters())
    return ([("--output-dir", Path(output_dir), weights)] if output_dir else []) \
        + ([("--checkpoint-dir", Path(checkpoint_dir), 2 * (weights + moments))] if checkpoint_dir else [])


def check_free_space(needs: list[tuple[str, Path, int]]) -> None:
    """Before the first step: each (flag, folder, bytes it will need) fits on its disk, and folders
    that share a disk fit together; else one line naming the flag, the folder and both figures."""
    by_disk: dict[int, list[tuple[str, Path, int]]] = {}
    free_of: dict[int, int] = {}
    for flag, folder, need in needs:
        free, dev = _free_bytes(Path(os.path.abspath(folder.expanduser())))
        free_of[dev] = free
        by_disk.setdefault(dev, []).append((flag, folder, need))
    gb = lambda n: f"{n / 1e9:.3g} GB"  # noqa: E731
    for dev, items in by_disk.items():
        total = sum(n for _, _, n in items)
        if total > free_of[dev]:
            flag, folder, need = items[0]
            also = "".join(f" and {f} {d} {gb(n)}" for f, d, n in items[1:])
            raise InputError(f"{flag}: {folder}: {gb(free_of[dev])} free on its disk; the run will write {gb(need)} there{also} "
                             "(the student, or one checkpoint beside the last): free space or choose another folder")


def full_state_dict(model: nn.Module, lay: Layout) -> dict[str, torch.Tensor]:
    """The student's whole state dict on the CPU of its first rank ({} elsewhere); collective over the student ranks."""
    offload = lay.coordinator == 0  # DCP keeps an offloaded full dict on global rank 0 only
    sd = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=offload))
    if lay.rank != lay.coordinator:
        return {}
    return sd if offload else {k: v.detach().cpu() for k, v in sd.items()}


def replace_folder(tmp: Path, final: Path, force: bool = True) -> None:
    """Put the finished folder `tmp` (created by this run) at `final`: an empty `final` is removed,
    a non-empty one (with `force`; without, refused: it was filled while the run trained) is renamed
    aside (a unique name of this run's own) and removed only once `tmp` has its name; a file at
    `final` is refused. A refusal keeps `tmp` and says where it is."""
    aside = None
    if final.is_symlink() or (final.exists() and not final.is_dir()):
        raise InputError(f"{final}: appeared as a file while the run trained; the student is kept in {tmp}")
    if final.is_dir() and not force and any(final.iterdir()):
        raise InputError(f"{final}: was filled while the run trained (without --force it is never replaced); the student is kept in {tmp}")
    if final.is_dir():
        try:
            final.rmdir()  # empty: nothing of the user's is lost
        except OSError:
            aside = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.", suffix=".old"))
            os.rename(final, aside / final.name)  # --force was given: replaced, but only once the new one is there
    os.rename(tmp, final)
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)


def save_pretrained(model: nn.Module, lay: Layout, folder: str | Path, tokenizer=None, force: bool = True) -> Path | None:
    """Write the student to `folder` (collective over the student ranks; the first student rank writes).

    A write that fails (full disk, an unwritable folder) is one `InputError` line on the student's
    first rank (the others hold it, see `said_elsewhere`), after the ranks agree; the temporary folder is removed."""
    from planner.executor.student import unwrapped

    sd = full_state_dict(model, lay)
    final = Path(folder).expanduser()
    problem = ""
    if lay.rank == lay.coordinator:
        tmp = None
        net = unwrapped(model)
        try:
            tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp"))
            net.config.use_cache = True  # the executor turns the cache off for training; a loaded model generates
            # transformers 5 writes only on global rank 0 once torch.distributed is up; here the student's
            # first rank writes (rank 0 is a teacher's when disaggregated), so it decides for itself
            net.should_save_on_this_rank = lambda is_main_process: is_main_process
            net.save_pretrained(tmp, state_dict=sd, safe_serialization=True)
            if tokenizer is not None and hasattr(tokenizer, "save_pretrained"):
                tokenizer.save_pretrained(tmp)
            replace_folder(tmp, final, force)
        except InputError as e:
            problem = e.lines[0]
        except Exception as e:  # noqa: BLE001 - OSError, or safetensors' and torch's own for a short write
            from planner.executor.checkpoint import write_failure

            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
            problem = f"{final}: the final save failed: {write_failure(e)}; nothing was written there"
        finally:
            net.__dict__.pop("should_save_on_this_rank", None)
            net.config.use_cache = False
    said = [problem]
    dist.broadcast_object_list(said, src=lay.coordinator, group=lay.student_group)
    if said[0]:
        raise InputError(said[0]) if lay.rank == lay.coordinator else said_elsewhere(said[0])
    return final if lay.rank == lay.coordinator else None

"""Student checkpoints with torch.distributed.checkpoint (DCP): model, optimizer, step, RNG.

Atomic: the student ranks write `step-NNNNNNNN.tmp`, DCP writes its `.metadata` last, and only
then does the first student rank rename the folder to `step-NNNNNNNN`. A folder without the
final name or without `.metadata` is incomplete: never resumed from, never counted when the two
newest complete checkpoints are kept (stray empty `step-N` folders cannot push them out).
Data order and on-policy sampling depend only on (seed, step), so step + weights + optimizer
state resume the run exactly; the torch RNG of each rank is saved as well.

Each checkpoint carries `fingerprint.json`: the plan's strategy and degrees, both models' refs and
shapes, the data, the teacher output (top-k and its k, or the cache), the tokenizer and the seed. `resume` refuses, in one line, a folder whose
checkpoints were written by another run, and falls back from a checkpoint that does not load
(a truncated `.distcp`) to the newest one that does, naming the one it skipped.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import CheckpointException
from torch.distributed.checkpoint.state_dict import (get_model_state_dict, get_optimizer_state_dict,
                                                     set_model_state_dict, set_optimizer_state_dict)
from torch.distributed.optim import ZeroRedundancyOptimizer

from planner.executor.groups import Layout
from planner.inputs.errors import InputError

KEEP = 2
FINGERPRINT = "fingerprint.json"
_NAME = re.compile(r"^step-(\d{8})$")
_PROBE = "kd-planner fingerprint: The quick brown fox jumps over the lazy dog. 0123456789 \u00e4\u00df \u65e5\u672c <|im_start|>"


def _folder(root: Path, step: int) -> Path:
    return root / f"step-{step:08d}"


def complete(root: str | Path | None) -> list[tuple[int, Path]]:
    """The complete checkpoints under `root` (final name and DCP's `.metadata`), newest first."""
    if root is None or not Path(root).is_dir():
        return []
    return sorted(((int(m.group(1)), p) for p in Path(root).iterdir()
                   if (m := _NAME.match(p.name)) and (p / ".metadata").is_file()), reverse=True)


def latest(root: str | Path | None) -> tuple[int, Path] | None:
    """The newest complete checkpoint under `root`, as (step, folder)."""
    found = complete(root)
    return found[0] if found else None


def prune(root: Path, keep: int = KEEP) -> None:
    """Delete all but the `keep` newest complete checkpoints; incomplete folders are not counted."""
    for _, old in complete(root)[keep:]:
        shutil.rmtree(old, ignore_errors=True)


def _digest(data: bytes | str) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()[:16]


def _file_digest(path: str | Path) -> str:
    """sha256 of a file; of a folder (a saved dataset), of its files' relative names and contents."""
    path = Path(path).expanduser()
    if path.is_dir():
        h = hashlib.sha256()
        for f in sorted(p for p in path.rglob("*") if p.is_file()):
            h.update(f.relative_to(path).as_posix().encode() + b"\0" + _file_digest(f).encode())
        return h.hexdigest()[:16]
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()[:16]


def tokenizer_digest(tok) -> str:
    """What the tokenizer does, not where it lives: its class, sizes, special ids, chat template and
    the ids of a probe text."""
    parts = [type(tok).__name__, getattr(tok, "vocab_size", None), len(tok) if hasattr(tok, "__len__") else None,
             tok.pad_token_id, tok.eos_token_id, getattr(tok, "chat_template", None), list(tok.encode(_PROBE))]
    return _digest(json.dumps(parts, default=str))


def fingerprint(plan, seed: int, tokenizer) -> dict:
    """What a checkpoint must agree with to be resumed: strategy, models, data, teacher output, tokenizer, seed."""
    t, s, w = plan.teacher, plan.student, plan.workload
    return json.loads(json.dumps({
        "strategy": {"placement": plan.placement, "world": plan.world, "micro_batch": plan.micro_batch, "grad_accum": plan.grad_accum,
                     "teacher": {"strategy": t.strategy, "pp": t.pp, "tp": t.tp, "shard": t.shard, "ranks": len(t.ranks)},
                     "student": {"strategy": s.strategy, "shard": s.shard, "ranks": len(s.ranks)}},
        "teacher": {"ref": t.ref, "shape": t.shape.model_dump(mode="json")},
        "student": {"ref": s.ref, "shape": s.shape.model_dump(mode="json")},
        "data": {"dataset": _file_digest(plan.dataset) if plan.dataset else "synthetic", "global_batch": w.global_batch,
                 "prompt_len": w.prompt_len, "completion_len": w.completion_len},
        # what the loss learns from: listed only when not full logits, so a checkpoint written before the
        # field existed (full logits, the only output then) still resumes
        **({"teacher_output": {"kind": w.teacher_output, "k": w.topk}} if w.teacher_output != "logits" else {}),
        "tokenizer": tokenizer_digest(tokenizer),
        "seed": seed,
    }))


def _differences(old, new, key: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        return [d for k in sorted(set(old) | set(new)) for d in _differences(old.get(k), new.get(k), f"{key}.{k}" if key else k)]
    if old == new:
        return []
    shown = [json.dumps(v)[:40] for v in (old, new)]
    return [f"{key} is {shown[0]} there, {shown[1]} now"]


def _choose(root: Path | None, fp: dict) -> tuple[list[str], list[str], str | None]:
    """The complete checkpoints to try, newest first; the ones skipped (unreadable fingerprint),
    as 'name (why)'; or why none may be resumed (one line)."""
    folders, skipped = [], []
    for _, folder in complete(root):
        try:
            old = json.loads((folder / FINGERPRINT).read_text())
        except FileNotFoundError:
            return [], [], (f"checkpoint {folder} has no {FINGERPRINT} (written by an older kd-planner or by hand); "
                            "resume refuses it: move it away or use another --checkpoint-dir")
        except (OSError, ValueError) as e:  # unreadable: a damaged checkpoint, left to the fallback
            _warn(f"checkpoint {folder}: {FINGERPRINT} is unreadable ({e}); skipping it")
            skipped.append(f"{folder.name} (unreadable {FINGERPRINT})")
            continue
        diff = _differences(old, fp)
        if diff:
            return [], [], (f"checkpoint {folder} was written by another run ({'; '.join(diff[:3])}"
                            f"{'; ...' if len(diff) > 3 else ''}); resume with the same plan, models, data, tokenizer and "
                            "seed, or use another --checkpoint-dir")
        folders.append(str(folder))
    return folders, skipped, None


def _warn(line: str) -> None:
    print(f"warning: {line}", file=sys.stderr, flush=True)


def _why(e: BaseException) -> str:
    """One short line for a failed load; DCP wraps each rank's exception in a CheckpointException."""
    where = ""
    if isinstance(e, CheckpointException) and e.failures:
        rank, (e, _) = min(e.failures.items())
        where = f"rank {rank}: "
    text = str(e).strip().splitlines()
    line = f"{where}{type(e).__name__}: {text[0] if text else ''}"
    return line if len(line) <= 160 else line[:157] + "..."


def resume(root: Path | None, fp: dict | None, model, opt, lay: Layout) -> int:
    """The step to start from (collective over all ranks): the newest complete checkpoint under
    `root` that has this run's fingerprint and loads; 0 when there is none.

    Raises `InputError` on every rank (with its line on the coordinator, empty elsewhere) when the
    checkpoints are another run's, or when there are checkpoints and none of them loads.
    """
    choice: list = [[], [], None]
    if lay.rank == lay.coordinator and root is not None:
        choice = list(_choose(Path(root), fp))
    dist.broadcast_object_list(choice, src=lay.coordinator)
    folders, failed, error = choice
    step = 0
    if error is None and lay.is_student:
        for folder in folders:
            ok, why = 1, ""
            try:
                step = load(Path(folder), model, opt, lay)
            except (Exception, CheckpointException) as e:  # noqa: BLE001 - any failure means: try the previous one
                ok, why = 0, _why(e)
            agreed = torch.tensor([ok], device=lay.device)
            dist.all_reduce(agreed, op=dist.ReduceOp.MIN, group=lay.student_group)  # every student rank loaded it
            if agreed.item():
                break
            step = 0
            failed.append(f"{Path(folder).name} ({why or 'failed on another rank'})")
            if lay.rank == lay.coordinator:
                _warn(f"checkpoint {folder} does not load: {why or 'failed on another rank'}; trying the one before it")
        else:  # nothing loaded: an error if there was something to load
            if failed:
                error = (f"no checkpoint in {root} loads: {'; '.join(failed)}; move them away or use another "
                         "--checkpoint-dir to start over")
    out = [step, error]
    dist.broadcast_object_list(out, src=lay.coordinator)
    if out[1]:  # every rank stops; the coordinator says why, once
        raise InputError(out[1] if lay.rank == lay.coordinator else [])
    return out[0]


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


def save(root: str | Path, step: int, model, opt, lay: Layout, fp: dict, keep: int = KEEP) -> Path:
    """Write the checkpoint of `step` with the run's fingerprint (collective over the student ranks),
    then delete all but the `keep` newest complete checkpoints."""
    root, final = Path(root), _folder(Path(root), step)
    tmp = final.with_name(final.name + ".tmp")
    if lay.rank == lay.coordinator:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        (tmp / FINGERPRINT).write_text(json.dumps(fp, indent=1) + "\n")
    dist.barrier(group=lay.student_group)
    dcp.save(_state(model, opt, lay, step, False), checkpoint_id=tmp, process_group=lay.student_group)
    if lay.rank == lay.coordinator:
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        prune(root, keep)
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

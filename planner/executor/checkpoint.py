"""Student checkpoints with torch.distributed.checkpoint (DCP): model, optimizer, step, RNG.

Atomic: the student ranks write into a temporary folder of the run's own (`.step-NNNNNNNN.XXXXXXXX.tmp`,
created exclusively by `tempfile.mkdtemp`, so a user's `step-N.tmp` is never touched), DCP writes
its `.metadata` last, the first student rank adds `manifest.json` (the sha256 of every file and the
settings, `planner/executor/manifest.py`), and only then renames the folder to `step-NNNNNNNN`. A
folder without the final name or without `.metadata` is incomplete: never resumed from, never
counted when the two newest complete checkpoints are kept (stray empty `step-N` folders cannot push
them out), never deleted; only checkpoints with this run's fingerprint are pruned. A user's folder
that holds the name a checkpoint needs is renamed aside (`step-N.kept.XXXXXXXX`), never deleted. A
checkpoint that cannot be written (full disk, `ulimit -f`) stops every rank with one line, the
checkpoints before it kept. The folder is locked (`flock`) against a second run.
Data order and on-policy sampling depend only on (seed, step), so step + weights + optimizer
state resume the run exactly; the torch RNG of each rank is saved as well.

Each checkpoint carries `fingerprint.json`: the plan's strategy and degrees, both models' refs and
shapes, the data (by content), the teacher output (top-k and its k, or the cache), the tokenizer and the seed. `resume` refuses, in one line, a folder whose
checkpoints were written by another run, and one written under other settings (lr, schedule, loss,
optimizer, ...) unless `--allow-changed-settings`, then says what changed; it falls back from a
checkpoint whose files do not match its manifest, or that does not load, to the newest one that
does, naming the one it skipped in one line.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import resource
import shutil
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import CheckpointException
from torch.distributed.checkpoint.state_dict import (get_model_state_dict, get_optimizer_state_dict,
                                                     set_model_state_dict, set_optimizer_state_dict)
from torch.distributed.optim import ZeroRedundancyOptimizer

from planner.executor import manifest
from planner.executor.groups import Layout
from planner.inputs.errors import InputError, said_elsewhere

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
    """Delete all but the `keep` newest complete checkpoints written by kd-planner (with a
    fingerprint); incomplete folders and others are not counted and never deleted."""
    for _, old in [c for c in complete(root) if (c[1] / FINGERPRINT).is_file()][keep:]:
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
        "settings": manifest.settings(plan),  # not part of the identity: checked on its own (`_choose`)
    }))


def _differences(old, new, key: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        return [d for k in sorted(set(old) | set(new)) for d in _differences(old.get(k), new.get(k), f"{key}.{k}" if key else k)]
    if old == new:
        return []
    shown = [json.dumps(v)[:40] for v in (old, new)]
    return [f"{key} is {shown[0]} there, {shown[1]} now"]


def _choose(root: Path | None, fp: dict, allow_changed: bool = False) -> tuple[list[str], list[str], str | None]:
    """The complete checkpoints to try, newest first; the ones skipped (unreadable fingerprint,
    files that do not match the manifest), as 'name (why)'; or why none may be resumed (one line)."""
    folders, skipped = [], []
    fp = dict(fp)
    now = fp.pop("settings", None)
    for _, folder in complete(root):
        try:
            old = json.loads((folder / FINGERPRINT).read_text())
            if not isinstance(old, dict):
                raise ValueError("not an object")
        except FileNotFoundError:
            return [], [], (f"checkpoint {folder} has no {FINGERPRINT} (written by an older kd-planner or by hand); "
                            "resume refuses it: move it away or use another --checkpoint-dir")
        except (OSError, ValueError) as e:  # unreadable: a damaged checkpoint, left to the fallback
            _warn(f"checkpoint {folder}: {FINGERPRINT} is unreadable ({type(e).__name__}); skipping it, trying the one before it")
            skipped.append(f"{folder.name} (unreadable {FINGERPRINT})")
            continue
        then = old.pop("settings", None)
        diff = _differences(old, fp)
        if diff:
            return [], [], (f"checkpoint {folder} was written by another run ({'; '.join(diff[:3])}"
                            f"{'; ...' if len(diff) > 3 else ''}); resume with the same plan, models, data, tokenizer and "
                            "seed, or use another --checkpoint-dir")
        try:
            body = manifest.read(folder)
            why = manifest.damage(folder, body) if body is not None else None
        except (OSError, ValueError) as e:
            body, why = {}, f"{manifest.MANIFEST} is unreadable ({type(e).__name__})"
        if why:
            _warn(f"checkpoint {folder} is damaged ({why}); skipping it, trying the one before it")
            skipped.append(f"{folder.name} (damaged: {why})")
            continue
        if body is None:
            _warn(f"checkpoint {folder} has no {manifest.MANIFEST} (written by an older kd-planner): its files are not verified")
        changed = _differences(then, now) if then is not None and now is not None else []
        if changed and not allow_changed:
            return [], [], (f"checkpoint {folder} was written under other settings ({'; '.join(changed[:3])}"
                            f"{'; ...' if len(changed) > 3 else ''}); resume with the same settings, or pass "
                            "--allow-changed-settings to go on under the new ones")
        if changed:
            _warn(f"resuming {folder} under changed settings (--allow-changed-settings): {'; '.join(changed)}")
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


@contextmanager
def _quiet_dcp():
    """DCP logs each rank's failure with its traceback before raising it; the fallback says it in one line."""
    log = logging.getLogger("torch.distributed.checkpoint")
    level, log.level = log.level, logging.CRITICAL
    try:
        yield
    finally:
        log.level = level


def resume(root: Path | None, fp: dict | None, model, opt, lay: Layout, allow_changed: bool = False) -> int:
    """The step to start from (collective over all ranks): the newest complete checkpoint under
    `root` that has this run's fingerprint, matches its manifest and loads; 0 when there is none.
    The coordinator first locks `root` against another run.

    Raises `InputError` on every rank (with its line on the coordinator, empty elsewhere) when the
    folder is another run's (locked, or its checkpoints written by another run or under other
    settings without `allow_changed`), or when there are checkpoints and none of them loads.
    """
    choice: list = [[], [], None]
    if lay.rank == lay.coordinator and root is not None:
        try:
            manifest.lock(Path(root))
            choice = list(_choose(Path(root), fp, allow_changed))
        except InputError as e:
            choice = [[], [], e.lines[0]]
    dist.broadcast_object_list(choice, src=lay.coordinator)
    folders, failed, error = choice
    step = 0
    if error is None and lay.is_student:
        for folder in folders:
            ok, why = 1, ""
            try:
                with _quiet_dcp():
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
        raise InputError(out[1]) if lay.rank == lay.coordinator else said_elsewhere(out[1])
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


def _place(tmp: Path, final: Path) -> None:
    """Rename the finished `tmp` to `final`. A `final` already there is this run's own (a damaged
    checkpoint of the same step: replaced once the new one is in place) or someone else's (renamed
    aside, said, never deleted)."""
    aside = None
    if final.exists() or final.is_symlink():
        ours = final.is_dir() and not final.is_symlink() and (final / FINGERPRINT).is_file()
        keep = Path(tempfile.mkdtemp(dir=final.parent, prefix=f"{final.name}.kept." if not ours else f".{final.name}.", suffix="" if not ours else ".old"))
        os.rename(final, keep / final.name)
        if ours:
            aside = keep
        else:
            _warn(f"{final} was in the way of the checkpoint of that step; moved to {keep / final.name}")
    os.rename(tmp, final)
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)


def _agree(ok: bool, lay: Layout) -> bool:
    flag = torch.tensor([int(ok)], device=lay.device)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN, group=lay.student_group)
    return bool(flag.item())


def write_failure(e: BaseException) -> str:
    """Why a write failed, in a few words: the OSError's reason (DCP's wrapped one), else the
    exception's first line; with the file-size limit (`ulimit -f`) when one is set, since a write
    past it fails as EFBIG or as a short write that the writer reports in its own words."""
    if isinstance(e, CheckpointException) and e.failures:
        e = min(e.failures.items())[1][0]
    why = (e.strerror or str(e)).lower() if isinstance(e, OSError) else _why(e)
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    if limit != resource.RLIM_INFINITY:
        why += f"; the file-size limit (`ulimit -f`) is {limit} bytes"
    return why


def save(root: str | Path, step: int, model, opt, lay: Layout, fp: dict, keep: int = KEEP) -> Path:
    """Write the checkpoint of `step` with the run's fingerprint and manifest (collective over the
    student ranks), then delete all but the `keep` newest complete checkpoints of this run.

    A write that fails is one `InputError` on every student rank (the line on the coordinator):
    the temporary folder is removed, the checkpoints before it kept."""
    root, final = Path(root), _folder(Path(root), step)
    said: list = [None, None]  # (temporary folder, why it could not be made)
    if lay.rank == lay.coordinator:
        try:
            root.mkdir(parents=True, exist_ok=True)
            said[0] = tempfile.mkdtemp(dir=root, prefix=f".{final.name}.", suffix=".tmp")
            (Path(said[0]) / FINGERPRINT).write_text(json.dumps(fp, indent=1) + "\n")
        except OSError as e:
            said[1] = f"{write_failure(e)}"
    dist.broadcast_object_list(said, src=lay.coordinator, group=lay.student_group)
    tmp, why = Path(said[0]) if said[0] else None, said[1]
    if why is None:
        try:
            with _quiet_dcp():
                dcp.save(_state(model, opt, lay, step, False), checkpoint_id=tmp, process_group=lay.student_group)
        except (Exception, CheckpointException) as e:  # noqa: BLE001 - DCP wraps each rank's OSError
            why = write_failure(e)
    ok = _agree(why is None, lay)
    if ok and lay.rank == lay.coordinator:
        try:
            manifest.write(tmp, fp.get("settings"))
            _place(tmp, final)
            prune(root, keep)
        except OSError as e:
            ok, why = False, write_failure(e)
    ok = _agree(ok, lay)
    if not ok:
        if lay.rank == lay.coordinator and tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        line = (f"checkpoint {final} could not be written ({why or 'failed on another rank'}); the run stops here, the "
                f"checkpoints before it are kept in {root}")
        raise InputError(line) if lay.rank == lay.coordinator else said_elsewhere(line)
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

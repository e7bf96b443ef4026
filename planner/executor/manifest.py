"""What a checkpoint proves about itself: `manifest.json`, the sha256 of every file it holds and the
settings that decide the result (loss, beta, temperature, lmbda, optimizer, lr and schedule,
clipping, dtypes; the data's content digest and the model refs are in its fingerprint).

The first student rank writes it after DCP's files and before the rename that makes the checkpoint
complete; a resume re-hashes every file before loading, so flipped bytes, a truncated shard or a
missing file are found before DCP reads them (and never printed as DCP's tracebacks). The lock
(`lock`) keeps a second run out of a checkpoint folder while one uses it.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
from pathlib import Path

from planner.inputs.errors import InputError

MANIFEST = "manifest.json"
LOCK = ".kd-planner.lock"
_HELD: dict[str, int] = {}  # folder -> the open lock file of this process (released when it exits)


def settings(plan) -> dict:
    """The plan's settings that decide the trained weights, besides the fingerprint's (strategy,
    models, data, tokenizer, seed): a resume under others is refused unless asked for."""
    w, tr = plan.workload, plan.training
    return json.loads(json.dumps({
        "loss": {"kind": w.loss, "beta": w.beta, "temperature": w.temperature, "lmbda": w.lmbda, "logits_dtype": w.logits_dtype,
                 **({"chunk_tokens": w.loss_chunk_tokens} if w.loss == "chunked" else {})},
        "optimizer": {"kind": w.optimizer, "lr": tr.lr, "schedule": tr.schedule, "warmup_steps": tr.warmup_steps, "min_lr": tr.min_lr,
                      "weight_decay": tr.weight_decay, "betas": list(tr.betas), "eps": tr.eps, "max_grad_norm": tr.max_grad_norm},
        "precision": {"student_dtype": w.student_dtype, "mixed_precision": w.mixed_precision, "teacher_dtype": getattr(w, "teacher_dtype", None)},
    }))


def file_sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)


def write(folder: Path, recorded: dict) -> None:
    """Write `folder/manifest.json`: every file's sha256 and `recorded` (the settings), fsynced."""
    body = {"files": {p.relative_to(folder).as_posix(): file_sha256(p) for p in _files(folder)}, "settings": recorded}
    path = folder / MANIFEST
    with open(path, "w") as f:
        f.write(json.dumps(body, indent=1) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read(folder: Path) -> dict | None:
    """The manifest of `folder`, None if it has none; `ValueError` if it is not a manifest."""
    try:
        body = json.loads((folder / MANIFEST).read_text())
    except FileNotFoundError:
        return None
    if not isinstance(body, dict) or not isinstance(body.get("files"), dict):
        raise ValueError(f"{MANIFEST} is not a manifest")
    return body


def damage(folder: Path, body: dict) -> str | None:
    """Why `folder` does not match its manifest (the first file that differs), or None."""
    listed = body["files"]
    for name, want in sorted(listed.items()):
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if file_sha256(path) != want:
            return f"{name} does not match its sha256"
    extra = [p.relative_to(folder).as_posix() for p in _files(folder) if p.relative_to(folder).as_posix() not in listed]
    return f"{extra[0]} is not in its {MANIFEST}" if extra else None


def lock(folder: Path, where: str = "--checkpoint-dir", name: str = LOCK) -> None:
    """Hold an exclusive `flock` on `folder/name` (`.kd-planner.lock`) until this process ends; another
    run's lock is one line. A folder already locked by this process (a second run in one job) is kept."""
    key = os.path.join(os.path.abspath(folder), name)
    if key in _HELD:
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / name, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
    except OSError as e:
        raise InputError(f"{where}: {folder}: cannot write there: {(e.strerror or str(e)).lower()}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            raise InputError(f"{where}: {folder}: another run is using this folder (it holds {folder / name}); wait for it to end, "
                             "or give another folder") from None
        return  # a file system without flock: no lock, as before
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    _HELD[key] = fd

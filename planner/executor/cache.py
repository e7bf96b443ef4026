"""The offline teacher cache (`teacher_output: cached`): the teacher's top-k per completion token,
written once by `planner run PLAN --cache-teacher DIR` (planner/executor/cache_pass.py) and read by
`planner run PLAN --teacher-cache DIR`, which then builds no teacher at all.

DIR holds one `shard-NNNNN.safetensors` per teacher rank of the pass, each with `keys` [n] int64
(which samples: the synthetic sample index, or the dataset row), `values` [n, C, k] (logits dtype)
and `indices` [n, C, k] int32, and `manifest.json`, written last: what the cache was made with
(teacher ref, shape and dtype; tokenizer digest; dataset path and sha256, or `synthetic` with the
seed; prompt and completion lengths; k; values dtype), the number of samples, and each shard's file,
sample count and sha256. A dataset is cached row by row (one epoch serves every epoch); synthetic
data sample by sample (steps x global batch of the pass).

A run reading the cache refuses, in one line naming the manifest field, a cache made with anything
else than its plan; and, before any step, a shard whose sha256 differs or that safetensors cannot
read (truncated, corrupt), so no run trains on part of a cache.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from planner.executor.checkpoint import _file_digest, tokenizer_digest
from planner.executor.data import Batch
from planner.executor.loss import TopK
from planner.files import read_text
from planner.inputs.errors import InputError

MANIFEST = "manifest.json"
FORMAT = "kd-planner teacher cache"
VERSION = 1
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def shard_name(i: int) -> str:
    return f"shard-{i:05d}.safetensors"


def check_target(folder: Path, force: bool, flag: str = "--cache-teacher") -> None:
    """Before the pass: DIR may be new (its parent must exist) or a folder without a cache; a folder
    that holds one is overwritten only with `force`."""
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{flag}: {folder}: is a file, not a folder")
    if not folder.exists() and not folder.parent.is_dir():
        raise InputError(f"{flag}: {folder.parent}: no such folder; create it first")
    if folder.is_dir() and not force and ((folder / MANIFEST).exists() or any(folder.glob("shard-*.safetensors"))):
        raise InputError(f"{flag}: {folder}: already holds a teacher cache; pass --force to overwrite it, or choose another folder")


def samples_needed(plan, samples, steps: int) -> int:
    """Samples the cache holds: every dataset row, or the synthetic samples of `steps` steps."""
    return len(samples.rows) if samples.rows is not None else steps * plan.workload.global_batch


def fingerprint(plan, seed: int, tokenizer) -> dict:
    """What the cached values depend on: teacher, tokenizer, data, lengths, k and dtype."""
    t, w = plan.teacher, plan.workload
    data = ({"path": str(plan.dataset), "sha256": _file_digest(plan.dataset)} if plan.dataset
            else {"synthetic": True, "seed": seed})
    return json.loads(json.dumps({
        "teacher": {"ref": t.ref, "shape": t.shape.model_dump(mode="json"), "dtype": w.teacher_dtype or t.shape.dtype},
        "tokenizer": tokenizer_digest(tokenizer),
        "data": data,
        "prompt_len": w.prompt_len, "completion_len": w.completion_len,
        "topk": w.topk, "values_dtype": w.logits_dtype,
    }))


def shard_bytes(keys: list[int], values: torch.Tensor, indices: torch.Tensor) -> bytes:
    from safetensors.torch import save

    return save({"keys": torch.tensor(keys, dtype=torch.int64), "values": values.contiguous(), "indices": indices.contiguous()})


def manifest(fp: dict, samples: int, shards: list[dict]) -> dict:
    return {"format": FORMAT, "version": VERSION, **fp, "samples": samples, "shards": shards}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _first_difference(have, want, key: str = "") -> str | None:
    """The first manifest field (dotted) whose value differs from the plan's, or None."""
    if isinstance(have, dict) and isinstance(want, dict):
        for k in sorted(set(have) | set(want)):
            if key == "data" and k == "path":  # the data is its content: a moved file is the same data
                continue
            found = _first_difference(have.get(k), want.get(k), f"{key}.{k}" if key else k)
            if found:
                return found
        return None
    if have == want:
        return None
    return f"{key} is {json.dumps(have)[:60]} in the cache, {json.dumps(want)[:60]} for this run"


def read_manifest(folder: Path, fp: dict, needed: int) -> dict:
    """The manifest of the cache in `folder`, checked against this run's fingerprint and sample count."""
    path = folder / MANIFEST
    if not folder.is_dir():
        raise InputError(f"--teacher-cache: {folder}: no such folder; write a cache with `planner run PLAN --cache-teacher DIR`")
    if not path.is_file():
        raise InputError(f"{path}: not found (not a teacher cache, or its pass did not finish); "
                         "write one with `planner run PLAN --cache-teacher DIR`")
    try:
        m = json.loads(read_text(path))
    except ValueError as e:
        raise InputError(f"{path}: not JSON ({e})") from None
    if not isinstance(m, dict) or m.get("format") != FORMAT or m.get("version") != VERSION:
        raise InputError(f"{path}: format: not a version-{VERSION} kd-planner teacher cache manifest")
    diff = _first_difference({k: m.get(k) for k in fp}, fp)
    if diff:
        raise InputError(f"{path}: {diff}; write a cache for this plan with --cache-teacher")
    n = m.get("samples")
    if not isinstance(n, int) or n < needed:
        raise InputError(f"{path}: samples: the cache holds {n} samples, this run needs {needed}; "
                         "write it again with the run's --steps (and --seed)")
    shards = m.get("shards")
    if not isinstance(shards, list) or not all(isinstance(s, dict) and {"file", "sha256", "samples"} <= set(s) for s in shards) \
            or sum(s["samples"] for s in shards) != n:
        raise InputError(f"{path}: shards: expected a list of {{file, sha256, samples}} covering the {n} samples")
    for s in shards:
        if Path(s["file"]).name != s["file"]:
            raise InputError(f"{path}: shards: {s['file']!r} is not a file name inside the cache folder")
    return m


def verify(folder: Path, m: dict, which: list[int]) -> None:
    """Check shards `which` of the manifest: sha256 of the whole file, then what safetensors reads."""
    from safetensors import SafetensorError, safe_open

    C, k = m["completion_len"], m["topk"]
    for i in which:
        entry = m["shards"][i]
        path, n = folder / entry["file"], entry["samples"]
        try:
            with open(path, "rb") as f:
                digest = hashlib.file_digest(f, "sha256").hexdigest()
        except OSError as e:
            raise InputError(f"{path}: cannot read ({(e.strerror or str(e)).lower()}); the cache is incomplete") from None
        if digest != entry["sha256"]:
            raise InputError(f"{path}: sha256 differs from {MANIFEST} (truncated or corrupt shard); write the cache again")
        try:
            with safe_open(path, framework="pt") as f:
                shapes = {name: list(f.get_slice(name).get_shape()) for name in ("keys", "values", "indices")}
                keys = f.get_tensor("keys")
        except (SafetensorError, OSError, KeyError) as e:
            raise InputError(f"{path}: not a readable cache shard ({e}); write the cache again") from None
        want = {"keys": [n], "values": [n, C, k], "indices": [n, C, k]}
        if shapes != want:
            raise InputError(f"{path}: tensor shapes {shapes} differ from {want} in {MANIFEST}; write the cache again")
        if n and (keys.min() < 0 or keys.max() >= m["samples"]):
            raise InputError(f"{path}: keys outside 0..{m['samples'] - 1}; write the cache again")


class CachedTeacher:
    """A teacher read from the cache: `request(batch)` returns the cached top-k of its samples.

    The shards are opened (memory-mapped) at the first request, once every rank has verified its
    share of them (`open_cache`), so a broken shard is reported by the rank that checked it."""

    def __init__(self, folder: Path, m: dict, samples, device: torch.device):
        self.folder, self.m, self.samples, self.device, self.dtype = folder, m, samples, device, DTYPES[m["values_dtype"]]
        self.files = None

    def _open(self) -> None:
        from safetensors import safe_open

        m = self.m
        self.files = [safe_open(self.folder / s["file"], framework="pt") for s in m["shards"]]
        self.shard_of = torch.full((m["samples"],), -1, dtype=torch.int64)
        self.row_of = torch.empty(m["samples"], dtype=torch.int64)
        for i, f in enumerate(self.files):  # key -> (shard, row), without a Python loop over samples
            keys = f.get_tensor("keys")
            self.shard_of[keys], self.row_of[keys] = i, torch.arange(keys.numel())
        if (self.shard_of < 0).any():
            raise InputError(f"{self.folder / MANIFEST}: the shards miss {(self.shard_of < 0).sum().item()} of the {m['samples']} samples")

    def request(self, batch: Batch):
        if self.files is None:
            self._open()
        values, indices = [], []
        for i in batch.index:  # one slice per sample of the micro-batch, read from the memory-mapped shard
            key = self.samples.key(i)
            f, row = self.files[self.shard_of[key]], self.row_of[key].item()
            values.append(f.get_slice("values")[row:row + 1])
            indices.append(f.get_slice("indices")[row:row + 1])
        width = batch.completion_len  # the cache holds completion_len tokens; this batch is padded to its longest
        out = TopK(torch.cat(values)[:, :width].to(self.device, self.dtype), torch.cat(indices)[:, :width].to(self.device))
        return lambda: out


def open_cache(folder: Path | None, plan, seed: int, steps: int, tokenizer, samples, device: torch.device,
               part: int = 0, parts: int = 1) -> CachedTeacher:
    """The cached teacher for this run, after every check: the manifest against the plan, and shards
    `part`, `part + parts`, ... verified here (the other student ranks verify the rest)."""
    if folder is None:
        raise InputError("workload.teacher_output: cached needs --teacher-cache DIR (write one first with "
                         "`planner run PLAN --cache-teacher DIR`)")
    folder = Path(folder)
    m = read_manifest(folder, fingerprint(plan, seed, tokenizer), samples_needed(plan, samples, steps))
    verify(folder, m, list(range(part, len(m["shards"]), parts)))
    return CachedTeacher(folder, m, samples, device)

"""Load a model's weights without materialising it: build on the meta device, apply the strategy,
then read only this rank's part straight from the local Hugging Face safetensors checkpoint.

Flow (the order matters):

1. `empty_model`: the model's structure on the meta device (no memory for weights).
2. The strategy: FSDP2 `fully_shard` works on meta parameters (each becomes a sharded DTensor);
   a pipeline stage keeps only its layers (`keep`), the other modules stay on meta and are dropped.
3. `fill`: `to_empty` allocates the parameters this rank holds (a shard, a stage, or all of them),
   `_init_weights` recomputes the non-persistent buffers (rotary frequencies), and
   `torch.distributed.checkpoint.load` with `HuggingFaceStorageReader` copies the tensors in,
   reading for a DTensor only the slice this rank owns (safetensors `get_slice`), converting the
   dtype on the way. Each rank reads alone (`no_dist`): teacher and student ranks load at
   different times.

So no rank holds a full copy of a model it shards or pipelines; a replicated model is read once,
straight into its final device. `--random-init` takes the other road (`build.build_model`: seeded
random weights, the whole model on every rank) for shapes without weights and for tests.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from planner.inputs.errors import InputError

SAFETENSORS = ("model.safetensors", "model.safetensors.index.json")
OTHER_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json")
HOW = ("point it at a local checkpoint folder (config.json + model.safetensors, or sharded model-*.safetensors with "
       "model.safetensors.index.json; `save_pretrained` writes one) with --teacher/--student or the plan's ref, "
       "or pass --random-init for random weights")


def has_safetensors(folder: Path) -> bool:
    return folder.is_dir() and (any((folder / f).is_file() for f in SAFETENSORS) or any(folder.glob("*.safetensors")))


def checkpoint_folder(ref: str, field: str, random_init: bool, source: str = "") -> Path | None:
    """The folder to load `ref`'s weights from, or None with `random_init` (random weights).

    Without `random_init`, anything but a folder with config.json and safetensors weights is one
    `InputError` line naming the folder (or `source`, the plan file) and `field`, saying how to
    point at a checkpoint."""
    if random_init:
        return None
    p = Path(ref).expanduser()
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise InputError(f"{p}: {field}: no config.json in this folder; {HOW}")
        if has_safetensors(p):
            return p
        if any((p / f).is_file() for f in OTHER_WEIGHTS):
            raise InputError(f"{p}: {field}: only safetensors weights are loaded (this folder has pytorch_model.bin); "
                             "re-save it with `model.save_pretrained(FOLDER)` (safetensors is the default)")
        raise InputError(f"{p}: {field}: no weights in this folder (a config.json only); {HOW}")
    what = "a config file" if p.is_file() else "a model shape (bundled name or YAML), not weights"
    raise InputError(f"{source + ': ' if source else ''}{field}: {ref!r} is {what}; {HOW}")


def empty_model(config, dtype: torch.dtype) -> nn.Module:
    """The causal LM of `config` on the meta device, parameters in `dtype`."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config, dtype=dtype)


def stage_modules(model: nn.Module, lo: int, hi: int) -> list[nn.Module]:
    """What a pipeline stage holding layers [lo, hi) keeps (as `teacher.Stage` takes them)."""
    inner, n = model.model, model.config.num_hidden_layers
    keep = [inner.rotary_emb, *inner.layers[lo:hi]]
    if lo == 0:
        keep.append(inner.embed_tokens)
    if hi == n:
        keep += [inner.norm, model.lm_head]
    return keep


def _stored_keys(folder: Path) -> set[str]:
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            return set(json.loads(index.read_text())["weight_map"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise InputError(f"{index}: not a readable safetensors index ({type(e).__name__}: {e})") from None
    from safetensors import safe_open

    keys: set[str] = set()
    for f in sorted(folder.glob("*.safetensors")):
        with safe_open(f, framework="pt") as st:
            keys |= set(st.keys())
    return keys


def fill(model: nn.Module, folder: Path, device: torch.device, keep: list[nn.Module] | None = None) -> nn.Module:
    """Allocate on `device` the parameters this rank holds of `model` (all, or those of `keep`) and
    read them from `folder`; parameters of modules not kept stay on meta."""
    import torch.distributed.checkpoint as dcp

    parts = keep if keep is not None else [model]
    for part in parts:
        part.to_empty(device=device)
    held = {id(t) for part in parts for t in [*part.parameters(), *part.buffers()]}
    for m in model.modules():  # rotary frequencies and the like: computed, not stored
        if m._non_persistent_buffers_set and all(id(b) in held for b in m.buffers(recurse=False)):
            model._init_weights(m)
    stored = _stored_keys(folder)
    tied = getattr(model, "all_tied_weights_keys", None) or {}  # e.g. lm_head.weight -> model.embed_tokens.weight
    wanted: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    missing = []
    for key, t in model.state_dict(keep_vars=True).items():
        if t.is_meta or id(t) in seen:  # not on this rank, or tied to a tensor already asked for
            continue
        name = key if key in stored else tied.get(key)
        if name not in stored or name in wanted:
            missing.append(key)
            continue
        wanted[name] = t.detach()
        seen.add(id(t))
    if missing:
        raise InputError(f"{folder}: the checkpoint has no tensor {missing[0]!r}" + (f" (nor {len(missing) - 1} more)" if len(missing) > 1 else "")
                         + f" that the {type(model).__name__} of its config.json needs")
    try:
        dcp.load(wanted, storage_reader=dcp.HuggingFaceStorageReader(str(folder)), no_dist=True)
    except (Exception, dcp.api.CheckpointException) as e:  # noqa: BLE001 - a BaseException wrapping each rank's traceback
        lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
        why = lines[-1] if lines else type(e).__name__  # the traceback's last line: the reader's own error
        raise InputError(f"{folder}: could not read the weights ({why[:300]})") from None
    return model


"""One rank of a load test: build a checkpoint's model on meta, take this rank's part (FSDP2 shard,
pipeline stage, tensor-parallel slice, or all of it), load it with `planner.executor.weights`, and report what the load
added to the process's peak RSS and whether every loaded tensor equals the checkpoint's.

Usage: torchrun --nproc-per-node 2 tests/executor/load_worker.py CHECKPOINT_DIR MODE[,MODE...] OUT_PREFIX
with MODE shard|pipeline|tp|replicate (writes OUT_PREFIX.MODE.RANK.json). Several modes share one launch;
the peak-RSS figure means something only for a launch's first mode (memory freed by one load stays
in the process and is reused by the next).
"""

import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors import safe_open
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard

from planner.executor import build, teacher, weights
from planner.executor.tensor_parallel import apply_tp


def status(field: str) -> int:
    """A /proc/self/status figure, in bytes."""
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith(field + ":"))
    return int(line.split()[1]) * 1024


def load(folder: Path, mode: str, out: str) -> None:
    rank, world = dist.get_rank(), dist.get_world_size()
    model = weights.empty_model(build.model_config(str(folder), None), torch.float32)
    keep = None
    if mode == "shard":
        mesh = init_device_mesh("cpu", (world,))
        for layer in model.model.layers:
            fully_shard(layer, mesh=mesh)
        fully_shard(model, mesh=mesh)
    elif mode == "tp":
        apply_tp(model, init_device_mesh("cpu", (world,)))
    elif mode == "pipeline":
        lo, hi = teacher.layer_split(model.config.num_hidden_layers, world)[rank]
        keep = weights.stage_modules(model, lo, hi)
    Path("/proc/self/clear_refs").write_text("5")  # reset the high-water mark to the current RSS
    before = status("VmRSS")
    weights.fill(model, folder, torch.device("cpu"), keep)
    added = status("VmHWM") - before
    held = sum(t.to_local().nbytes if hasattr(t, "to_local") else t.nbytes for t in model.parameters() if not t.is_meta)

    # The loaded tensors against the checkpoint's, read here with safetensors directly.
    index = json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"]
    tied = model.all_tied_weights_keys or {}
    checked, wrong = 0, []
    full = {k: v.full_tensor() if hasattr(v, "full_tensor") else v for k, v in model.state_dict().items()}  # collective for DTensors
    for key, value in full.items():
        if value.is_meta:
            continue
        name = key if key in index else tied[key]
        with safe_open(folder / index[name], framework="pt") as f:
            if not torch.equal(f.get_tensor(name), value):
                wrong.append(key)
        checked += 1
    Path(f"{out}.{mode}.{rank}.json").write_text(json.dumps({"added_rss": added, "held_bytes": held, "checked": checked, "wrong": wrong,
                                                             "pid": os.getpid()}))


dist.init_process_group("gloo")
for mode in sys.argv[2].split(","):
    load(Path(sys.argv[1]), mode, sys.argv[3])
dist.barrier()  # no rank closes its connections while a peer still reads (see executor_helpers.torchrun)
dist.destroy_process_group()

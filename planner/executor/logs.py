"""The run's log: one JSON line per logged step and per evaluation, and the same values as
TensorBoard scalars (`torch.utils.tensorboard.SummaryWriter`, optional: `pip install tensorboard`).

Written by the first student rank only. The JSONL file is appended to (a resumed run goes on in the
same file; every run starts with a `{"event": "start", ...}` line), so nothing written is lost.

Step lines: step (1-based: optimizer steps done), loss (global-batch mean), lr (the one the step
ran at), grad_norm (before clipping), step_time_s, samples_per_s and tokens_per_s (of that step;
prompt + completion tokens), memory_bytes (peak so far: `cuda_max_allocated` on a GPU, the
process's peak RSS on the CPU). Eval lines: step, eval_loss, eval_samples.
"""

from __future__ import annotations

import importlib.util
import json
import resource
import time
from pathlib import Path

import torch

from planner.inputs.errors import InputError

STEP_FIELDS = ("step", "loss", "lr", "grad_norm", "step_time_s", "samples_per_s", "tokens_per_s", "memory_bytes")


def require_tensorboard(where: str = "training.tensorboard_dir") -> None:
    """A one-line error when TensorBoard is asked for and not installed."""
    if importlib.util.find_spec("tensorboard") is None:
        raise InputError(f"{where}: TensorBoard is not installed; `pip install 'kd-planner[tensorboard]'` "
                         "(or `pip install tensorboard`), or leave tensorboard_dir out")


def peak_memory(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


class RunLog:
    """Where the run's values go; does nothing when `enabled` is false (every rank but one) or when
    neither a JSONL file nor a TensorBoard folder is given."""

    def __init__(self, jsonl: str | Path | None, tensorboard_dir: str | Path | None, enabled: bool):
        self.file = self.writer = None
        if not enabled:
            return
        if jsonl:
            Path(jsonl).expanduser().parent.mkdir(parents=True, exist_ok=True)
            self.file = open(Path(jsonl).expanduser(), "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        if tensorboard_dir:
            require_tensorboard()
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(Path(tensorboard_dir).expanduser()))

    def _line(self, record: dict) -> None:
        if self.file:
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()

    def start(self, start_step: int, steps: int) -> None:
        self._line({"event": "start", "start_step": start_step, "steps": steps, "time": time.time()})

    def step(self, step: int, loss: float, lr: float, grad_norm: float, step_time_s: float, samples: int, tokens: int,
             device: torch.device) -> None:
        if not (self.file or self.writer):
            return
        rate = 1 / step_time_s if step_time_s > 0 else float("nan")
        record = {"step": step, "loss": loss, "lr": lr, "grad_norm": grad_norm, "step_time_s": step_time_s,
                  "samples_per_s": samples * rate, "tokens_per_s": tokens * rate, "memory_bytes": peak_memory(device)}
        self._line(record)
        if self.writer:
            for key in STEP_FIELDS[1:]:
                self.writer.add_scalar(f"train/{key}", record[key], step)
            self.writer.flush()

    def eval(self, step: int, loss: float, samples: int) -> None:
        self._line({"step": step, "eval_loss": loss, "eval_samples": samples})
        if self.writer:
            self.writer.add_scalar("eval/loss", loss, step)
            self.writer.flush()

    def close(self) -> None:
        if self.file:
            self.file.close()
        if self.writer:
            self.writer.close()

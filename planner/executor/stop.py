"""Stop cleanly on request, for requeue: SIGUSR1 (what Slurm's `--signal=USR1@120` sends before
the time limit) or a stop file (what the exported sbatch script's USR1 trap creates, on a shared
folder, when the signal goes to the batch shell only).

At the end of every optimizer step the student ranks agree (an all-reduce MAX of one flag) on
whether any of them was asked to stop; if so the run saves a checkpoint of that step, skips the
final evaluation and save, writes its metrics and exits 0, and a rerun resumes from that
checkpoint. A disaggregated plan's teacher ranks serve a fixed number of requests, so there the
request is noted and ignored (the run goes on to its last step). The stop file is removed once
acted on, so a script can tell a run that stopped from one that had ended anyway.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import torch
import torch.distributed as dist

from planner.executor.groups import Layout


class StopRequest:
    def __init__(self, stop_file: str | Path | None, lay: Layout, active: bool = True):
        self.file = Path(stop_file).expanduser() if stop_file else None
        self.lay, self.active, self.signalled, self._old = lay, active, False, None
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGUSR1, self._on_signal)

    def _on_signal(self, signum, frame) -> None:
        self.signalled = True

    def agreed(self) -> bool:
        """Whether any student rank was asked to stop (collective over the student ranks)."""
        if not self.active:
            return False
        mine = self.signalled or (self.lay.rank == self.lay.coordinator and self.file is not None and self.file.exists())
        flag = torch.tensor([int(mine)], device=self.lay.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self.lay.student_group)
        return bool(flag.item())

    def consume(self) -> None:
        """The request was acted on: remove the stop file (the sbatch script requeues only then)."""
        if self.lay.rank == self.lay.coordinator and self.file is not None:
            self.file.unlink(missing_ok=True)

    def close(self) -> None:
        if self._old is not None:
            signal.signal(signal.SIGUSR1, self._old)
            self._old = None

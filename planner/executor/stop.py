"""Stop cleanly on request, for requeue: SIGUSR1 (what Slurm's `--signal=USR1@120` sends before
the time limit) or a stop file (what the exported sbatch script's USR1 trap creates, on a shared
folder, when the signal goes to the batch shell only).

At the end of every optimizer step all ranks agree (an all-reduce MAX of one flag over the whole
world) on whether any of them was asked to stop; if so the student ranks save a checkpoint of that
step, and every rank skips the final evaluation and save, writes its metrics and exits 0; a rerun
resumes from that checkpoint. A disaggregated plan's teacher ranks take part too: they serve one
step's requests at a time (`loop.serve_steps`) and stop with the students. The stop file is
removed once acted on, so a script can tell a run that stopped from one that had ended anyway.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import torch
import torch.distributed as dist

from planner.executor.groups import Layout


class StopRequest:
    def __init__(self, stop_file: str | Path | None, lay: Layout):
        self.file = Path(stop_file).expanduser() if stop_file else None
        self.lay, self.signalled, self._old = lay, False, None
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGUSR1, self._on_signal)

    def _on_signal(self, signum, frame) -> None:
        self.signalled = True

    def agreed(self) -> bool:
        """Whether any rank was asked to stop (collective over every rank: teacher-only ones too)."""
        mine = self.signalled or (self.lay.rank == self.lay.coordinator and self.file is not None and self.file.exists())
        flag = torch.tensor([int(mine)], device=self.lay.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    def consume(self) -> None:
        """The request was acted on: remove the stop file (the sbatch script requeues only then)."""
        if self.lay.rank == self.lay.coordinator and self.file is not None:
            self.file.unlink(missing_ok=True)

    def close(self) -> None:
        if self._old is not None:
            signal.signal(signal.SIGUSR1, self._old)
            self._old = None

"""What the executor measures, and the metrics JSON it writes next to the plan's predictions.

- `samples_per_s`: global batch x steady steps / their wall time (the first `warmup_steps`
  steps of this process are excluded: they pay for allocator growth, pipeline shape inference
  and first collectives); `tokens_per_s` counts the prompt + completion tokens of every sample
  over the same steps, not the padding (micro-batches are padded to their longest sample).
- `step_times_s`, `loss`, `grad_norm` (before clipping), `lr` (the one the step ran at): per
  optimizer step, as seen by the first student rank (the loss is the global-batch mean,
  all-reduced over the student ranks); `eval_loss`: [step, loss] per evaluation.
- `phase_times_s` (with `--phases`): per step, seconds spent in teacher (its logits, or the wait
  for them), generation (on-policy micro-steps only), student_forward, loss_forward, backward (loss and student, with the gradient
  sync) and optimizer (clip, step, zero_grad, loss all-reduce), as seen by the first student rank.
- `peak_memory_bytes[rank]`: on a GPU `cuda_max_allocated`; on the CPU `peak_rss` (the process
  high-water mark, everything included: file pages of a memory-mapped checkpoint too) and, where
  /proc is, `peak_anon` (the sampled peak of anonymous resident memory, RssAnon: what tensors and
  the interpreter hold) and `start_anon` (RssAnon when the run started: the imports), with
  `peak_anon_phase[rank]` beside them (load, first_step or steps: where the peak was reached); on both, the exact
  bytes of the student's parameters, gradients and optimizer state and of the teacher's
  parameters held by that rank.
- `plan_fingerprint`: `planner.plan.fingerprint` of the plan that ran (`planner validate` refuses
  metrics of another plan). The plan's `predicted` block is not copied: it could have been edited;
  `planner validate` recomputes the predictions.
"""

from __future__ import annotations

import json
import resource
import threading
import time
from pathlib import Path

import torch
from torch import nn

import planner
from planner.files import write_text
from planner.plan import fingerprint


def _local_bytes(model: nn.Module | None) -> int:
    if model is None:
        return 0
    ts = [p.to_local() if hasattr(p, "to_local") else p for p in model.parameters()]
    return sum(t.numel() * t.element_size() for t in ts)


class PhaseClock:
    """Wall time per phase of each step (`planner run --phases`): `lap(name)` charges the time since
    the previous lap to `name` (None: to nothing); on a GPU each lap synchronizes first. Off, it
    does nothing."""

    def __init__(self, device: torch.device, enabled: bool):
        self.device, self.enabled, self.steps, self._now, self._step = device, enabled, [], 0.0, {}

    def start(self) -> None:
        if self.enabled:
            self._step, self._now = {}, self._time()

    def lap(self, name: str | None) -> None:
        if self.enabled:
            now = self._time()
            if name is not None:
                self._step[name] = self._step.get(name, 0.0) + now - self._now
            self._now = now

    def add(self, name: str, seconds: float) -> None:
        """Charge `seconds` spent off this thread (the async schedule's background rollouts) to `name`."""
        if self.enabled:
            self._step[name] = self._step.get(name, 0.0) + seconds

    def stop(self) -> None:
        if self.enabled:
            self.steps.append(self._step)

    def _time(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()


def phase_seconds(steps: list[dict]) -> dict[str, float]:
    """The PhaseClock's laps of `steps`, summed into the four roles' phases: rollout (generation),
    weight_sync (trainer to rollout engine), teacher (its forward, or the wait for a remote or served
    one) and train (student forward, loss, backward, optimizer); with the async schedule also
    rollout_overlapped, the background generation that ran beside the other phases (rollout is
    then only the trainer's wait for it)."""
    total = lambda *names: sum(st.get(n, 0.0) for st in steps for n in names)  # noqa: E731
    out = {"rollout": total("generation"), "weight_sync": total("weight_sync"), "teacher": total("teacher"),
           "train": total("student_forward", "loss_forward", "backward", "optimizer")}
    if any("generation_overlapped" in st for st in steps):
        out["rollout_overlapped"] = total("generation_overlapped")
    return out


def anon_bytes() -> int | None:
    """This process's anonymous resident memory (RssAnon in /proc/self/status), bytes; None without /proc."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


class AnonPeak:
    """The peak of `anon_bytes` while a run lasts, sampled by a daemon thread every `interval_s`
    while the models load and the first step runs (where a transient copy of a model would show)
    and every `steady_s` in the later steps, with the phase (`mark`) it was reached in. `ru_maxrss`
    counts the file pages of a memory-mapped checkpoint too, and only its high-water mark: a
    transient copy of a model shows here, by phase. A peak shorter than the interval can be missed;
    every `mark` and the final reading are always taken. The steady interval is long because each
    reading takes the GIL: at 5 ms the sampler made a colocated vLLM rollout (Python-bound at small
    batch) 12% slower and the step 7% (2 rounds, 27m pair, 2 CPU ranks, 2026-12-08)."""

    def __init__(self, interval_s: float = 0.005, steady_s: float = 0.25):
        self.start = anon_bytes()
        self.peak, self.phase, self._at = self.start, "load", "load"
        self._done = threading.Event()
        self._thread = None
        self._interval, self._steady = interval_s, steady_s
        if self.start is not None:
            self._thread = threading.Thread(target=self._sample, daemon=True, name="anon-peak")
            self._thread.start()

    def mark(self, phase: str) -> None:
        self._take()
        self.phase = phase
        if phase == "steps":
            self._interval = self._steady

    def _take(self) -> None:
        now = anon_bytes()
        if now is not None and now > (self.peak or 0):
            self.peak, self._at = now, self.phase

    def _sample(self) -> None:
        while not self._done.wait(self._interval):
            self._take()

    def stop(self) -> dict[str, int | str]:
        """The figures for the metrics (nothing without /proc); the sampler ends."""
        self._done.set()
        if self._thread is not None:
            self._thread.join()
        self._take()
        return {} if self.start is None else {"peak_anon": self.peak, "start_anon": self.start}

    @property
    def peak_phase(self) -> str | None:
        """The phase the peak was reached in (load, first_step, steps); None without /proc."""
        return None if self.start is None else self._at


def memory(device: torch.device, student_state: dict[str, int], teacher: nn.Module | None,
           anon: AnonPeak | None = None) -> dict[str, int | str]:
    mem = dict(student_state) | {"teacher_params": _local_bytes(teacher)}
    if device.type == "cuda":
        mem["cuda_max_allocated"] = torch.cuda.max_memory_allocated(device)
    mem["peak_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
    return mem | (anon.stop() if anon is not None else {})


def versions() -> dict[str, str]:
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__, "planner": planner.__version__}


def summarize(plan, records: list[dict], start_step: int, warmup: int, backend: str) -> dict:
    """One metrics document from every rank's record (gathered on rank 0)."""
    lead = next(r for r in records if r["role"] != "teacher")
    times = lead["step_times_s"]
    warm = min(warmup, max(len(times) - 1, 0))
    steady = times[warm:]
    sps = plan.workload.global_batch * len(steady) / sum(steady) if steady and sum(steady) > 0 else None
    t, s = plan.teacher, plan.student
    return {
        "job": plan.job,
        "placement": plan.placement,
        "teacher": {"ref": t.ref, "strategy": t.strategy, "pp": t.pp, "shard": t.shard, "ranks": t.ranks},
        "student": {"ref": s.ref, "strategy": s.strategy, "shard": s.shard, "ranks": s.ranks},
        "world": plan.world, "torch_world": plan.torch_world, "backend": backend, "device": lead["device"],
        "global_batch": plan.workload.global_batch, "micro_batch": plan.micro_batch, "grad_accum": plan.grad_accum,
        "seq_len": plan.workload.seq_len,
        "start_step": start_step, "end_step": start_step + len(times), "warmup_steps": warm,
        "stopped": "stopped_at" in lead,  # asked to stop (SIGUSR1, stop file) before its last step
        "samples_per_s": sps,
        "tokens_per_s": sum(lead["tokens"][warm:]) / sum(steady) if sps is not None else None,
        "step_times_s": times, "loss": lead["loss"], "grad_norm": lead["grad_norm"], "on_policy": lead["on_policy"],
        "lr": lead.get("lr", []), "eval_loss": lead.get("eval_loss", []),
        "peak_memory_bytes": {str(r["rank"]): r["memory"] for r in records},
        **({"peak_anon_phase": {str(r["rank"]): r["peak_anon_phase"] for r in records}} if all(r.get("peak_anon_phase") for r in records) else {}),
        **({"phase_times_s": lead["phase_times_s"]} if "phase_times_s" in lead else {}),
        "roles": {str(r["rank"]): r["role"] for r in records},
        "engines": lead.get("engines"),  # what ran each role: {rollout: hf-eager | hf-static | vllm | vllm-server (dedicated) (None off policy), teacher: pytorch | vllm-server}
        "schedule": lead.get("schedule"),  # sync, or async: rollouts one step ahead
        # async: per step, the optimizer steps applied to the weights that generated its rollouts (None: none on policy), and the most stale
        **({"rollout_version": lead["rollout_version"],
            "staleness": max([start_step + i - v for i, v in enumerate(lead["rollout_version"]) if v is not None], default=0)}
           if lead.get("schedule") == "async" else {}),
        "phase_s": lead.get("phase_s"),  # seconds per phase over the steady steps (rollout, weight_sync, teacher, train); None on a GPU without --phases
        "plan_fingerprint": fingerprint(plan),  # predictions are recomputed by `planner validate`, never copied from the plan
        "versions": versions(),
    }


def write(metrics: dict, path: str | Path, force: bool = False) -> None:
    """Write the metrics JSON (`planner.files.write_text`: atomic, never over a file unless `force`)."""
    write_text(path, json.dumps(metrics, indent=2) + "\n", force)

"""What every launch script shares: the options, shell quoting, and the `planner run` command line."""

from __future__ import annotations

import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from planner.inputs.errors import InputError
from planner.plan import Plan

DEFAULT_PORT = 29500


@dataclass(frozen=True)
class LaunchOptions:
    """Flags of `planner export`; None means "the plan's or the topology's value"."""

    job_name: str | None = None      # default: the plan's `job`
    partition: str | None = None     # slurm only; default: the topology's slurm.partition
    account: str | None = None       # slurm only; default: the topology's slurm.account
    time: str | None = None          # slurm only; default: the topology's slurm.time_limit
    port: int = DEFAULT_PORT         # c10d rendezvous port on the head node
    steps: int | None = None         # passed to `planner run --steps`
    metrics_out: str | Path | None = None  # passed to `planner run --metrics-out` (made absolute)
    python: str | None = None        # interpreter with kd-planner and torch; default: the one running now


def q(value: object) -> str:
    """`value` as one shell word. Refuses line breaks and control characters: a quoted newline
    would still end a `#SBATCH` or comment line and start a command."""
    text = str(value)
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise InputError(f"{text!r}: control characters (line breaks, tabs) cannot go into a launch script")
    return shlex.quote(text)


def slug(name: str) -> str:
    """A file-name-safe form of a job name (for the Slurm log files)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_.") or "job"


def python(opts: LaunchOptions) -> str:
    """The interpreter the script runs torchrun with (`PYTHON -m torch.distributed.run` is torchrun).

    Default: the absolute path of the running interpreter, unresolved so that a virtual
    environment's `bin/python` symlink keeps its environment; the job then needs no activation.
    """
    return opts.python or str(Path(sys.executable).absolute())


def planner_run(plan_path: str | Path, opts: LaunchOptions) -> list[str]:
    """`-m planner run PLAN [--steps N] [--metrics-out F]`, quoted, with absolute paths."""
    words = ["-m", "planner", "run", q(Path(plan_path).expanduser().resolve())]
    if opts.steps is not None:
        words += ["--steps", q(int(opts.steps))]
    if opts.metrics_out is not None:
        words += ["--metrics-out", q(Path(opts.metrics_out).expanduser().resolve())]
    return words


def ranks(rs: list[int]) -> str:
    """[0, 1, 2, 5] -> '0-2,5' (for the header comment)."""
    out, rs = [], sorted(rs)
    for r in rs:
        if out and out[-1][1] == r - 1:
            out[-1][1] = r
        else:
            out.append([r, r])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in out)


def header(plan: Plan, plan_path: str | Path, job: str) -> list[str]:
    """Comment lines saying what the script runs (every value already checked by `q`)."""
    t, s = plan.teacher, plan.student
    return [f"# kd-planner launch of {Path(plan_path).name}, job {job}, written by `planner export`.",
            f"# {plan.nodes} node(s) x {plan.gpus_per_node} process(es), backend {plan.backend}, {plan.placement}:",
            f"#   teacher {t.ref} ({t.strategy}) on ranks {ranks(t.ranks)}; student {s.ref} ({s.strategy}) on ranks {ranks(s.ranks)}."]


def python_line(opts: LaunchOptions) -> list[str]:
    return ["# The Python with kd-planner and torch (`$PYTHON -m torch.distributed.run` is torchrun);",
            "# override at launch time: PYTHON=python3 (the one on PATH) or a path.",
            f"PYTHON=${{PYTHON:-{q(python(opts))}}}"]

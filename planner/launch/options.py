"""What every launch script shares: the options, shell quoting, and the `planner run` command line."""

from __future__ import annotations

import re
import shlex
import sys
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from planner.inputs.errors import InputError
from planner.plan import Plan, tokenizer_folder

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
    checkpoint_dir: str | Path | None = None  # passed to `planner run --checkpoint-dir` (made absolute)
    checkpoint_every: int | None = None       # passed to `planner run --checkpoint-every`
    requeue: bool = False            # slurm only: save and requeue on USR1 before the time limit
    signal_s: int = 120              # slurm only: seconds before the time limit that USR1 comes
    modules: tuple[str, ...] = ()    # `module load` lines before the run
    container_image: str | None = None  # slurm only: `srun --container-image` (pyxis/enroot)
    random_init: bool = False        # passed to `planner run --random-init` (random weights, no checkpoints)
    server_port: int = 8000          # served roles: the first vLLM server's port (one more per replica)
    health_timeout_s: int = 900      # served roles: how long the script waits for each server's /health


# Bidirectional overrides reorder what a reader of the script sees ("Trojan Source", CVE-2021-42574).
_BIDI = set("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _unsafe(c: str) -> bool:
    """Control characters (C0, DEL, C1: newline, CR, NUL, tab, ...), Unicode line and paragraph
    separators, and bidirectional overrides."""
    return unicodedata.category(c) in ("Cc", "Zl", "Zp") or c in _BIDI


def text(value: object, field: str) -> str:
    """`value` as text for a comment or directive line, refused if it holds a control character:
    a newline, even inside quotes, ends a `#` comment or `#SBATCH` line and starts a command."""
    s = str(value)
    bad = next((c for c in s if _unsafe(c)), None)
    if bad is not None:
        shown = s if len(s) <= 60 else s[:57] + "..."
        raise InputError(f"{field}: {shown!r} holds the control character {bad!r}; "
                         "line breaks and control characters cannot go into a launch script")
    return s


def q(value: object, field: str) -> str:
    """`value` as one shell word (`shlex.quote`), after `text` has refused control characters."""
    return shlex.quote(text(value, field))


def lines_to_script(lines: list[str]) -> str:
    """Join the script's lines; a second guard after the per-field checks: no line may hold a
    control character, so every line stays the one line it was written as."""
    for n, line in enumerate(lines, 1):
        if any(_unsafe(c) for c in line):
            raise InputError(f"launch script line {n} would hold a control character; nothing was written")
    return "\n".join(lines) + "\n"


def slug(name: str) -> str:
    """A file-name-safe form of a job name (for the Slurm log files)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_.") or "job"


def job_name(plan: Plan, opts: LaunchOptions) -> str:
    """The job name (`--job-name`, else the plan's `job`), checked for control characters."""
    return text(opts.job_name or plan.job, "--job-name" if opts.job_name else "job")


def python(opts: LaunchOptions) -> str:
    """The interpreter the script runs torchrun with (`PYTHON -m torch.distributed.run` is torchrun).

    Default: the absolute path of the running interpreter, unresolved so that a virtual
    environment's `bin/python` symlink keeps its environment; the job then needs no activation.
    """
    if opts.python and opts.python.startswith("-"):  # srun and exec would read it as their own option
        raise InputError(f"--python: {opts.python!r}: give a program name or path, not something that starts with '-'")
    return opts.python or str(Path(sys.executable).absolute())


def planner_run(plan_path: str | Path, opts: LaunchOptions, stop_file: str | None = None) -> list[str]:
    """`-m planner run PLAN [--steps N] [--metrics-out F] [--checkpoint-dir D] [--checkpoint-every K]
    [--stop-file S] [--random-init]`, quoted, with absolute paths; `stop_file` is a shell word already."""
    words = ["-m", "planner", "run", q(Path(plan_path).expanduser().resolve(), "plan path")]
    if opts.steps is not None:
        words += ["--steps", str(int(opts.steps))]
    if opts.metrics_out is not None:
        words += ["--metrics-out", q(Path(opts.metrics_out).expanduser().resolve(), "--metrics-out")]
    if opts.checkpoint_dir is not None:
        words += ["--checkpoint-dir", q(Path(opts.checkpoint_dir).expanduser().resolve(), "--checkpoint-dir")]
    if opts.checkpoint_every is not None:
        words += ["--checkpoint-every", str(int(opts.checkpoint_every))]
    if stop_file is not None:
        words += ["--stop-file", stop_file]
    if opts.random_init:
        words.append("--random-init")
    return words


def run_summary(plan: Plan, opts: LaunchOptions) -> list[str]:
    """Comment lines naming what the run reads and writes (the plan's `training`, with the flags that win)."""
    tr = plan.training
    steps = opts.steps or tr.steps or f"workload.epochs ({plan.workload.epochs}) over the data"
    ckpt = opts.checkpoint_dir or tr.checkpoint_dir
    every = tr.checkpoint_every if opts.checkpoint_every is None else opts.checkpoint_every
    where = "--checkpoint-dir" if opts.checkpoint_dir else "training.checkpoint_dir"
    return [f"# run: {text(steps, 'steps')} steps; data {text(plan.dataset or 'synthetic', 'dataset')}; "
            f"tokenizer {text(tokenizer_folder(plan) or 'bytes', 'tokenizer')};",
            f"#   checkpoints {text(ckpt or 'none', where)}" + (f" every {every} steps" if ckpt and every else "")
            + f"; final save {text(tr.output_dir or 'none', 'training.output_dir')}."]


def module_lines(opts: LaunchOptions) -> list[str]:
    """`module load NAME` per --module (environment modules / Lmod), each name one quoted word."""
    return [f"module load {q(m, '--module')}" for m in opts.modules]


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
    """Comment lines saying what the script runs; `job` is already quoted, the rest is checked here
    (numbers and the strategy, backend and placement words are validated by the plan schema)."""
    t, s, r = plan.teacher, plan.student, plan.rollout
    lines = [f"# kd-planner launch of {text(Path(plan_path).name, 'plan path')}, job {job}, written by `planner export`.",
             f"# {plan.nodes} node(s) x {plan.gpus_per_node} process(es), backend {plan.backend}, {plan.placement}:",
             f"#   teacher {text(t.ref, 'teacher.ref')} ({t.strategy}) on ranks {ranks(t.ranks)}; "
             f"student {text(s.ref, 'student.ref')} ({s.strategy}) on ranks {ranks(s.ranks)}."]
    if t.served or r.placement == "dedicated":
        lines.append(f"#   torchrun starts the trainer's {plan.torch_world} rank(s) {ranks(plan.torch_ranks)}; vLLM servers run "
                     + " and ".join(([f"the teacher ({t.replicas} x tp {t.tp}) on GPUs {ranks(t.ranks)}"] if t.served else [])
                                    + ([f"rollout ({len(r.ranks) // r.tp} x tp {r.tp}) on GPUs {ranks(r.ranks)}"] if r.placement == "dedicated" else []))
                     + ".")
    return lines


def python_line(opts: LaunchOptions) -> list[str]:
    return ["# The Python with kd-planner and torch (`$PYTHON -m torch.distributed.run` is torchrun);",
            "# override at launch time: PYTHON=python3 (the one on PATH) or a path.",
            f"PYTHON=${{PYTHON:-{q(python(opts), '--python')}}}"]

"""What every command shares: error handling, output format, rich consoles."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
from enum import Enum
from typing import Any, Callable, Iterator

import typer
from typer.core import TyperCommand, TyperGroup
from rich.console import Console
from rich.markup import escape
from rich.text import Text

from planner.inputs.errors import InputError
from planner.inputs.yamlio import dump_yaml

# No markup by default: names, paths and expressions a user wrote (`a[/b]`) print as written; a
# deliberate style is a `Text`, or `markup=True` with every inserted value passed through `escape`.
# Widths are set when a command starts (`_size_consoles`).
out = Console(highlight=False, markup=False)
err = Console(stderr=True, highlight=False, markup=False)


def _size_consoles() -> None:
    """A terminal: its own width. Piped: $COLUMNS if set, else 150 (rich's 80 would cut table rows)."""
    columns = os.environ.get("COLUMNS", "")
    for console, stream in ((out, sys.stdout), (err, sys.stderr)):
        console.width = None if stream.isatty() else int(columns) if columns.isdigit() else 150


class _FlagsTakeNoValue:
    """Leaves out the `<bool>` type that typer's help shows for every flag (flags take no value)."""

    def get_params(self, ctx):
        params = super().get_params(ctx)
        for p in params:
            if getattr(p, "is_flag", False):
                p.metavar = ""
        return params


class Command(_FlagsTakeNoValue, TyperCommand):
    """Every `planner` command (`@app.command(cls=Command)`)."""


class Group(_FlagsTakeNoValue, TyperGroup):
    """The `planner` group itself."""


# Exit statuses: 0 done; 1 bad input (`InputError`); 2 usage error (click); 3 done, but the answer
# is no. Said in `planner --help` and in the README.
EXIT_NO = 3
EXIT_STATUS_HELP = (
    "Exit status: 0 done; 1 bad input (a file, name or flag value: one line per problem on stderr); "
    "2 usage error (unknown flag, missing argument); 3 done, but the answer is no (estimate: the plan "
    "does not fit; recommend: no plan fits; validate: the prediction disagrees with the measurement)."
)


class Format(str, Enum):
    table = "table"
    json = "json"
    yaml = "yaml"


def handles_errors(fn: Callable) -> Callable:
    """Print an `InputError` as its lines on stderr and exit 1; never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        _size_consoles()
        try:
            return fn(*args, **kwargs)
        except InputError as e:
            for line in e.lines:
                err.print(f"[red]error:[/red] {escape(line)}", markup=True, soft_wrap=True)
            raise typer.Exit(1) from None

    return wrapper


def require_executor(what: str, transformers: bool = True) -> None:
    """Import the executor's packages now, so that a missing one is one line with the install hint
    before any work starts, not a traceback from deep inside it (transformers is imported lazily)."""
    try:
        import torch  # noqa: F401
        if transformers:
            import transformers  # noqa: F401
    except ImportError as e:
        missing = e.name or str(e)
        raise InputError(f"{what} needs torch{' and transformers' if transformers else ''} ({missing} is missing): "
                         "pip install 'kd-planner[executor]'") from None


def emit(data: Any, fmt: Format) -> None:
    """Machine-readable output on stdout (plain print: no rich wrapping)."""
    try:  # NaN and infinity are not JSON: a figure that is one is a bug to report, never output
        text = json.dumps(data, indent=2, allow_nan=False)
    except ValueError:
        raise InputError("the cost model gave a figure that is not a finite number for these inputs; "
                         "nothing was printed; please report the command line") from None
    print(dump_yaml(json.loads(text)) if fmt == Format.yaml else text, end="" if fmt == Format.yaml else "\n")


def heading(what: str, job, cl) -> str:
    """`what: TEACHER teacher -> STUDENT student on N x CLUSTER (W x GPU).`"""
    return (f"{what}: {job.teacher.name} teacher -> {job.student.name} student "
            f"on {cl.nodes} x {cl.name} ({cl.world} x {cl.gpu.name}).")


def load_inputs(model: str | None, cluster: str | None, nodes: int | None, teacher: str | None = None,
                student: str | None = None):
    """The job and cluster a planning command works on, and the line that says which they are."""
    from planner.inputs import load

    job = load.load_job(model, teacher, student)
    cl = on_this_machine(load.load_cluster(cluster or load.DEFAULT_CLUSTER, nodes), cluster or load.DEFAULT_CLUSTER)
    from planner.inputs.machine import slow_bf16_note

    if note := slow_bf16_note(cl, job):
        err.print(note, highlight=False, markup=False, soft_wrap=True)
    source = f"job '{model}'" if model else f"the bundled default job '{load.DEFAULT_JOB}'"
    if teacher or student:  # the models are the user's, only the workload is the job's
        line = (f"Planning {job.teacher.name} teacher -> {job.student.name} student with the workload of {source} "
                f"on {cl.nodes} x {cl.name} ({cl.world} x {cl.gpu.name}).")
    else:
        line = heading(f"Planning {source if not model else f'job {job.name!r}'}", job, cl)
    return job, cl, cluster or load.DEFAULT_CLUSTER, line


def on_this_machine(cl, ref: str, replace: bool = True):
    """`cl`, or for a bundled CPU topology measured on another CPU this machine's cached
    calibration (`replace`); a one-line note on stderr when the figures are another CPU's
    (planner.inputs.machine)."""
    from planner.inputs import load
    from planner.inputs.machine import for_this_machine

    try:
        bundled = load._find(ref, "topologies", None).parent == load.bundled_dir("topologies")
    except InputError:
        bundled = False
    new, note = for_this_machine(cl, ref, bundled and replace)
    if note:
        err.print(note, highlight=False, markup=False, soft_wrap=True)
    return new


@contextlib.contextmanager
def progress(description: str, total: int) -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr for long work, yielding `advance(n)`. It is drawn only where stderr
    is a terminal (rich's test, which `TTY_COMPATIBLE=1` forces), so stdout stays clean for JSON,
    YAML and CSV and a pipe or log never sees it; it disappears when the work is done."""
    from rich.progress import Progress

    with Progress(console=err, transient=True, disable=not err.is_terminal) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n=1: bar.advance(task, n)


def bold(text: str) -> Text:
    return Text(text, style="bold")


def gib(x: float) -> str:
    return f"{x / 2**30:,.1f}"

"""What every command shares: error handling, output format, rich consoles."""

from __future__ import annotations

import functools
import json
import sys
from enum import Enum
from typing import Any, Callable

import typer
from rich.console import Console

from planner.inputs.errors import InputError
from planner.inputs.yamlio import dump_yaml

# Piped output keeps whole table rows (rich would wrap at 80 columns); a terminal uses its width.
out = Console(highlight=False, width=None if sys.stdout.isatty() else 150)
err = Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 150)


class Format(str, Enum):
    table = "table"
    json = "json"
    yaml = "yaml"


def handles_errors(fn: Callable) -> Callable:
    """Print an `InputError` as its lines on stderr and exit 1; never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except InputError as e:
            for line in e.lines:
                err.print(f"[red]error:[/red] {line}", markup=True, soft_wrap=True)
            raise typer.Exit(1) from None

    return wrapper


def emit(data: Any, fmt: Format) -> None:
    """Machine-readable output on stdout (plain print: no rich wrapping)."""
    try:  # NaN and infinity are not JSON: a figure that is one is a bug to report, never output
        text = json.dumps(data, indent=2, allow_nan=False)
    except ValueError:
        raise InputError("the cost model gave a figure that is not a finite number for these inputs; "
                         "nothing was printed; please report the command line") from None
    print(dump_yaml(json.loads(text)) if fmt == Format.yaml else text, end="" if fmt == Format.yaml else "\n")


def load_inputs(model: str | None, cluster: str | None, nodes: int | None, teacher: str | None = None,
                student: str | None = None):
    """The job and cluster a planning command works on, and the line that says which they are."""
    from planner.inputs import load

    job = load.load_job(model, teacher, student)
    cl = load.load_cluster(cluster or load.DEFAULT_CLUSTER, nodes)
    default = "the bundled default job " if model is None and not (teacher or student) else "job "
    line = (f"Planning {default}'{job.name}': {job.teacher.name} teacher -> {job.student.name} student "
            f"on {cl.nodes} x {cl.name} ({cl.world} x {cl.gpu.name}).")
    return job, cl, cluster or load.DEFAULT_CLUSTER, line


def gib(x: float) -> str:
    return f"{x / 2**30:,.1f}"

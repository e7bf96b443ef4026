"""What every command shares: error handling, output format, rich consoles."""

from __future__ import annotations

import functools
import json
from enum import Enum
from typing import Any, Callable

import typer
from rich.console import Console

from planner.inputs.errors import InputError
from planner.inputs.yamlio import dump_yaml

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


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
    if fmt == Format.yaml:
        print(dump_yaml(data), end="")
    else:
        print(json.dumps(data, indent=2))

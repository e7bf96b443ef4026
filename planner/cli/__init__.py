"""The `planner` command line: thin commands that delegate to the library."""

from __future__ import annotations

import typer

from planner.cli import calibrate, estimate, inflection, info, recommend, sweep, validate
from planner.cli import run
from planner.cli import export
from planner.cli.common import EXIT_STATUS_HELP, Group

app = typer.Typer(
    name="planner",
    cls=Group,
    help="Plan how to split a frozen teacher and a trained student across a GPU cluster for knowledge distillation.",
    epilog=EXIT_STATUS_HELP,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
info.register(app)
estimate.register(app)
recommend.register(app)
inflection.register(app)
sweep.register(app)
calibrate.register(app)
validate.register(app)
run.register(app)
export.register(app)


def main() -> None:
    app()

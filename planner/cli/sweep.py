"""`planner sweep`: the regime map over two variables, as CSV and PNG/SVG."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from planner.cli import options as o
from planner.cli.common import Command, handles_errors, load_inputs, out, progress
from planner.files import check_outputs, write_files
from planner.inputs.errors import InputError

VARS = "inter_bw, micro_batch, completion_len, teacher_layers, nodes, vocab"


def register(app: typer.Typer) -> None:
    @app.command(cls=Command)
    @handles_errors
    def sweep(
        x: Annotated[str, typer.Option("--x", help=f"x variable: {VARS}.")] = "inter_bw",
        y: Annotated[str, typer.Option("--y", help=f"y variable: {VARS}.")] = "teacher_layers",
        x_range: Annotated[str, typer.Option(help="LO:HI or LO:HI:log.")] = "5:800:log",
        y_range: Annotated[str, typer.Option(help="LO:HI or LO:HI:log.")] = "8:160",
        points: Annotated[int, typer.Option(help="Grid points per axis.", min=2, max=400)] = 24,
        model: o.Model = None, cluster: o.ClusterOpt = None, nodes: o.Nodes = None,
        teacher: o.Teacher = None, student: o.Student = None,
        csv_out: Annotated[str, typer.Option("--csv", help="CSV of the best plan at every grid point ('': none).")] = "regimes.csv",
        plot_out: Annotated[Optional[str], typer.Option("--plot", help="Regime map image (.png or .svg; '': none); needs matplotlib, checked before the sweep starts.")] = "regimes.png",
        force: Annotated[bool, typer.Option(help="Overwrite existing output files.")] = False,
    ) -> None:
        """Best plan over a grid of two variables: a CSV and a regime map with the crossings on top, each cell paler the less its winner wins by, the job red when another regime is within 3%."""
        from planner.inflection import sweep as sw

        for flag, var in (("--x", x), ("--y", y)):
            if var not in sw.VARIABLES:
                raise InputError(f"{flag}: '{var}' is not one of {VARS}")
        if x == y:
            raise InputError("--x and --y must differ")
        check_outputs({"--csv": csv_out or None, "--plot": plot_out or None}, force)
        fmt = sw.plot_format(plot_out) if plot_out else None  # matplotlib is there and knows the format: before the minutes of work
        job, cl, _, line = load_inputs(model, cluster, nodes, teacher, student)
        out.print(line)
        xs, ys = sw.axis(x_range, x, points, "--x-range"), sw.axis(y_range, y, points, "--y-range")
        with progress("searching the grid", len(xs) * len(ys)) as advance:
            m = sw.sweep(job, cl, x, xs, y, ys, progress=advance)
        writes = [(csv_out, sw.csv_text(m), False)] if csv_out else []
        if plot_out:
            writes.append((plot_out, sw.plot_bytes(m, fmt, title=f"{job.teacher.name} -> {job.student.name} on {cl.name}"), False))
        write_files(writes, force)
        counts: dict[str, int] = {}
        for row in m.labels:
            for lab in row:
                counts[lab] = counts.get(lab, 0) + 1
        out.print(f"{len(xs)} x {len(ys)} grid: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1])))
        if m.job_margin < float("inf"):
            out.print(f"At the job, the next regime is {m.job_margin:.1%} slower"
                      + (f": fragile (under {sw.FRAGILE:.0%}, well inside the model's error); read it as a tie." if m.fragile else "."))
        wrote = " and ".join(p for p in (csv_out, plot_out) if p)
        out.print((f"Wrote {wrote}; " if wrote else "") + f"{len(m.boundaries)} crossing points found.")

"""`planner inflection`: where the choice of split changes, and which side of it the job sits on."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from planner.cli import options as o
from planner.cli.common import Command, Format, emit, err, escape, handles_errors, load_inputs, out, progress


def _sentences(found: list, job_value: float, a: str, b: str) -> list[str]:
    """One statement per crossing of one pair in one variable, all consistent: the winner at the job
    is the side of the nearest crossings it sits between; the others are said as further out. Over
    a whole-number variable, the whole values either side and both sides' step times there."""
    found = sorted(found, key=lambda c: c.value)
    below = [c for c in found if c.value <= job_value]
    above = [c for c in found if c.value > job_value]
    here = below[-1].winner_above if below else found[0].winner_below
    nearest = below[-1:] + above[:1]
    out = []
    for c in found:
        v = c.variable
        at = (f"{c.whole[1][0]} {v.unit}" if c.whole else f"{c.value:.4g} {v.unit}")
        if any(c is d for d in nearest):
            up = c.value > job_value
            ratio = c.value / job_value if job_value else float("inf")
            text = (f"{v.describe} is {job_value:g} {v.unit}: {here} wins here; "
                    + (f"from {at} on" if up and c.whole else f"at {c.whole[0][0]} {v.unit} and below" if c.whole
                       else f"above {at}" if up else f"below {at}")
                    + f" ({ratio:.2f}x the job's value) {c.winner_above if up else c.winner_below} wins")
        else:
            text = f"further out, at {c.value:.4g} {v.unit}, {c.winner_above} takes over from {c.winner_below}"
        if c.whole:
            (n0, a0, b0), (n1, a1, b1) = c.whole
            text += f" (step time at {n0}: {a} {a0:.4g} s, {b} {b0:.4g} s; at {n1}: {a} {a1:.4g} s, {b} {b1:.4g} s)"
            if not c.changes:
                text += "; the next crossing comes before another whole value, so the winner at whole values does not change here"
        out.append(text)
    return out


def register(app: typer.Typer) -> None:
    @app.command(cls=Command)
    @handles_errors
    def inflection(
        model: o.Model = None, cluster: o.ClusterOpt = None, nodes: o.Nodes = None,
        teacher: o.Teacher = None, student: o.Student = None,
        between: Annotated[Optional[list[str]], typer.Option(help=escape("Two regimes: best, a baseline (trl-gkd-zero3, trl-gkd-ddp, trl-distill-zero3, trl-distill-ddp, trl-server) or a strategy as `recommend` prints it, TEACHER/STUDENT[/PLACEMENT[/MICRO_BATCH]][+topk|+cached|+logits] (give the option twice)."))] = None,
        in_: Annotated[Optional[list[str]], typer.Option("--in", help="Free variable(s): inter_bw, micro_batch, completion_len, teacher_layers, nodes, vocab (default: all).")] = None,
        latex: Annotated[bool, typer.Option(help="Print the equations as LaTeX.")] = False,
        format: Annotated[Format, typer.Option("--format", "-f", help="table, json or yaml.")] = Format.table,
    ) -> None:
        """Closed-form crossings between splitting regimes and the memory boundaries around the job."""
        from planner.inflection import crossing, regimes
        from planner.inputs.errors import InputError
        from planner.search import rank

        job, cl, _, line = load_inputs(model, cluster, nodes, teacher, student)
        (err if format != Format.table else out).print(line)
        res = rank.search(job, cl)
        variables = [regimes.variable(v) for v in (in_ or list(crossing.VARIABLES))]
        if between and len(between) != 2:
            raise InputError("--between: give exactly two regimes (the option twice)")
        pairs = [tuple(between)] if between else regimes.default_pairs(res)
        rows = []
        with progress("solving for the crossings", len(pairs) * len(variables)) as advance:
            for a_text, b_text in pairs:
                a, b = regimes.resolve(a_text, job, cl, res), regimes.resolve(b_text, job, cl, res)
                for var in variables:
                    found = regimes.between(a, b, var, job, cl)
                    advance(1)
                    jv = regimes.job_value(var, job, cl, a.strategy)
                    if not found:
                        rows.append({"between": [a.name, b.name], "variable": var.name, "value": None, "job_value": jv,
                                     "expression": None, "latex": None, "root": None, "winner_below": None, "winner_above": None,
                                     "text": f"{var.describe}: no crossing between {var.lo:g} and {var.hi:g} {var.unit}"})
                    for c, text in zip(sorted(found, key=lambda c: c.value), _sentences(found, jv, a.name, b.name) if found else []):
                        rows.append({"between": [a.name, b.name], "variable": var.name, "value": c.value, "job_value": jv,
                                     "expression": crossing.describe(c), "latex": crossing.describe(c, latex=True),
                                     "root": None if c.closed is None else str(c.closed[1]),
                                     "winner_below": c.winner_below, "winner_above": c.winner_above,
                                     "whole": None if c.whole is None else [{"at": n, "step_time_s": {a.name: x, b.name: y}} for n, x, y in c.whole],
                                     "winner_changes": c.changes, "text": text})
        if not between and res.ranked:
            a = regimes.resolve("replicate/zero3/colocated/1", job, cl, res)
            for c in regimes.memory_boundary(a, crossing.VARIABLES["teacher_layers"], job, cl):
                rows.append({"between": [a.name, "out of memory"], "variable": "teacher_layers", "value": c.value,
                             "job_value": job.teacher.num_layers, "expression": crossing.describe(c),
                             "latex": crossing.describe(c, latex=True), "root": None if c.closed is None else str(c.closed[1]),
                             "winner_below": "fits", "winner_above": "out of memory",
                             "text": f"a replicated teacher fits up to {c.value:.4g} layers of this shape; the job's has {job.teacher.num_layers}"})
        if format != Format.table:
            return emit({"crossings": rows}, format)
        for r in rows:
            out.print(f"[bold]{escape(r['between'][0])}[/bold] vs [bold]{escape(r['between'][1])}[/bold] in {r['variable']}:", markup=True)
            if r["expression"]:
                out.print(f"  {r['latex'] if latex else r['expression']}   (x = {r['value']:.6g})")
            out.print(f"  {r['text']}")

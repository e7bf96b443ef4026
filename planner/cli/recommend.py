"""`planner recommend`: search every split of teacher and student and rank the plans."""

from __future__ import annotations

import shlex
from enum import Enum
from typing import Annotated, Optional

import typer
from rich import box
from rich.table import Table
from rich.text import Text

from planner.cli import options as o
from planner.cli.common import EXIT_NO, Command, Format, emit, err, gib, handles_errors, load_inputs, out
from planner.inputs.errors import InputError
from planner import files
from planner.plan import plan_text
from planner.search import output as outputs
from planner.search import plans, rank


class Objective(str, Enum):
    throughput = "throughput"
    memory = "memory"


def _entry(sc: rank.Scored, res: rank.SearchResult, job, runtime=None) -> dict:
    """One plan or baseline for -f json/yaml: its speed-up over the strongest baseline that fits
    (named in `baseline`) and over each baseline."""
    st, name = sc.strategy, res.strongest
    pred = plans.predicted(sc, res.baselines.get(name) if name else None, name).model_dump()
    return {"strategy": str(st) + outputs.suffix(sc.output), "teacher": st.teacher_part, "student": st.student_part,
            "placement": st.placement, "teacher_output": sc.output, "runtime": sc.runtime,
            "teacher_gpus": st.n_T, "student_gpus": st.n_S, "micro_batch": st.b,
            "grad_accum": job.workload.global_batch // (st.b * st.n_S), "free_bytes": sc.free, "predicted": pred,
            "speedup_vs_baseline": pred["speedup_vs_baseline"], "baseline": pred["baseline"],
            "speedup_vs_baselines": {n: rank.speedup(sc, b) for n, b in res.baselines.items()},
            "roles": plans.roles(sc, runtime if sc.runtime == res.runtime else None), "schedule": plans.schedule(sc)}


def _largest(sc: rank.Scored) -> str:
    terms = sc.busiest_terms()
    return max(terms, key=terms.get)


def _span(values: list[float], fmt: str) -> str:
    lo, hi = format(min(values), fmt), format(max(values), fmt)
    return lo if lo == hi else f"{lo}-{hi}"


STRATEGY_WIDTH = 34  # the narrow table's strategy column, so that it keeps under 100 columns


def _fold(text: str, width: int = STRATEGY_WIDTH) -> str:
    """A strategy longer than the narrow column, on as many lines as it needs: broken before a '+' of
    the part after the micro-batch (rollout engine, schedule, output; the layout stays whole), each
    line as full as fits, the later ones indented; paste it back as one word."""
    if len(text) <= width:
        return text
    last = text.rfind("/")
    cuts = [i for i, ch in enumerate(text) if ch == "+" and i > last]
    lines, start = [], 0
    for i, j in zip(cuts, [*cuts[1:], len(text)]):
        room = width - (2 if lines else 0)
        if i > start and j - start > room:  # the piece up to the next cut would overflow: break before this '+'
            lines.append(text[start:i])
            start = i
    lines.append(text[start:])
    return "\n  ".join(lines)


def _table(res: rank.SearchResult, top: int, wide: bool = False) -> Table:
    """The ranking: the recommended plan, one line for the plans that tie with it, the next plans
    by speed, and TRL's baselines. The speed-up column is over the strongest baseline that fits
    (named in the wide table's header and, narrow, on the line under the table: `_strongest_line`). By default under 100 columns (no box, two-line headers, no largest
    memory term, no step time, no speed-up over the other baselines); with `wide` every column in a
    boxed table."""
    tied, rest = res.ranked[:res.tied], res.ranked[res.tied:]
    shown = rest[:top - 1]
    title = f"{len(res.ranked)} feasible plans of {res.evaluated}; the fastest {1 + len(shown)} (ties as one line)"
    name = res.strongest or "baseline"
    others = [n for n in res.baselines if n != res.strongest] if wide else []
    if wide:
        t = Table(title=title)
        columns = ("#", "strategy: teacher/student/placement/micro-batch[+output]", "peak GiB (largest term)", "free GiB", "step s",
                   "samples/s", f"vs {name}", *(f"vs {n}" for n in others))
    else:
        t = Table(title=title, box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 1, 0, 0))
        columns = ("#", "strategy\nteacher/student/placement/b", "peak\nGiB", "free\nGiB", "samples/s", "vs best\nbaseline")
    for c in columns:
        t.add_column(c, justify="left" if c.startswith(("strategy", "peak GiB (")) else "right", no_wrap=True)
    bases = [res.baselines.get(n) for n in [res.strongest, *others]]

    def cells(label: str, sc: rank.Scored) -> list:
        sp = [rank.speedup(sc, b) if sc.feasible else None for b in bases]
        mem = Text(gib(sc.figures["mem_peak"]) + (f" ({_largest(sc)})" if wide else ""))
        free = Text(gib(sc.free)) if sc.feasible else Text("OOM", style="red")  # does not fit: nothing free
        step = [f"{sc.figures['step_time']:.3f}"] if wide else []  # narrow: samples/s says it (global batch / step)
        text = str(sc.strategy) + outputs.suffix(sc.output)
        return [label, text if wide else _fold(text), mem, free,
                *step, f"{sc.samples_per_s:.2f}", *(f"{x:.2f}x" if x else "-" for x in sp)]

    if tied:
        t.add_row(*cells("1", tied[0]))
    if len(tied) > 1:  # the others that tie: one line of ranges
        tied_others = tied[1:]
        sp = [rank.speedup(s, bases[0]) for s in tied_others]
        t.add_row("", Text(f"+ {len(tied_others)} more within {res.margin:.0%} (below)", style="dim"),
                  _span([s.figures["mem_peak"] / 2**30 for s in tied_others], ",.1f"), _span([s.free / 2**30 for s in tied_others], ",.1f"),
                  *([""] if wide else []), _span([s.samples_per_s for s in tied_others], ".2f" if wide else ".1f"),  # narrow: under 100 columns
                  _span(sp, ".2f") + "x" if all(sp) else "-", *(["-"] * len(others)))
    for i, sc in enumerate(shown):
        t.add_row(*cells(str(i + 2), sc))
    for name, sc in res.baselines.items():
        if sc is not None:
            t.add_row(*cells(name, sc))
    return t


def _strongest_line(res: rank.SearchResult) -> str:
    """Which baseline the speed-ups are against, and why that one."""
    name = res.strongest
    if name is None:
        return "No baseline (TRL, verl) fits in memory: no speed-up to give."
    sc = res.baselines[name]
    return (f"Speed-ups are over {name} ({sc.strategy}{outputs.suffix(sc.output)}, {sc.samples_per_s:.2f} samples/s), "
            f"the fastest baseline that fits (TRL, verl; of {len(res.baselines)}; -f json gives the speed-up over each).")


def _ties(res: rank.SearchResult, shown: int = 8) -> list[str]:
    """The lines under the table: how many tie with #1, why #1 is the one, and the others' names."""
    if res.tied < 2:
        return []
    others = [str(s.strategy) + outputs.suffix(s.output) for s in res.ranked[1:res.tied]]
    more = f", and {len(others) - shown} more (-f json lists all)" if len(others) > shown else ""
    return [f"{res.tied} plans within {res.margin:.0%} of the fastest; #1 is recommended: {res.why_first}.",
            "The others: " + ", ".join(others[:shown]) + more + "."]


def register(app: typer.Typer) -> None:
    @app.command(cls=Command)
    @handles_errors
    def recommend(
        model: o.Model = None, cluster: o.ClusterOpt = None, nodes: o.Nodes = None,
        teacher: o.Teacher = None, student: o.Student = None, runtime: o.RuntimeOpt = None,
        top: Annotated[int, typer.Option("--top", "-k", help="How many plans to show (the plans that tie with #1 count as one).", min=1)] = 5,
        objective: Annotated[Objective, typer.Option(help="Rank by samples/s (throughput) or by peak memory.")] = Objective.throughput,
        output: Annotated[Optional[str], typer.Option("--output", "-o", help="Write the best plan to this YAML file (with --export: the script; the plan goes to --plan-out).")] = None,
        export: Annotated[Optional[str], typer.Option(help="Also write the launch script: slurm or torchrun (needs -o).")] = None,
        plan_out: Annotated[Optional[str], typer.Option(help="With --export: where the plan goes (default: next to the script, .plan.yaml).")] = None,
        random_init: o.RandomInit = False,
        force: Annotated[bool, typer.Option(help="Overwrite --output (and --plan-out) if it exists.")] = False,
        format: Annotated[Format, typer.Option("--format", "-f", help="table, json or yaml.")] = Format.table,
        wide: Annotated[bool, typer.Option("--wide", help="Every column (largest memory term, speed-up over every baseline), over 100 characters wide.")] = False,
        reserve: o.ReserveOpt = 0.05, reserve_gib: o.ReserveGib = 0.0,
        margin: Annotated[float, typer.Option("--margin", help="Plans within this fraction of the fastest tie; #1 is the simplest of them with the most free memory.", min=0.0, max=0.5)] = rank.TIE_MARGIN,
    ) -> None:
        """Rank every teacher x student split (and teacher output: full logits, top-k, cached top-k) on the cluster against TRL's baselines and write the recommended plan. Exits 3 if no plan fits."""
        from pathlib import Path

        if export and export not in ("slurm", "torchrun"):
            raise InputError(f"--export: '{export}' is not slurm or torchrun")
        if export and not output:
            raise InputError("--export: give the script's path with -o")
        if random_init and not export:
            raise InputError("--random-init: goes into the launch script, so only with --export; or pass it to `planner export` or `planner run`")
        plan_path = (plan_out or str(Path(output).with_suffix(".plan.yaml"))) if export else output
        files.check_outputs({"-o": output, "--plan-out": plan_path if export else None}, force)
        job, cl, cl_ref, line = load_inputs(model, cluster, nodes, teacher, student)
        (err if format != Format.table else out).print(line)
        from planner.inputs.load import DEFAULT_RUNTIME, load_runtime
        rt_ref = runtime or DEFAULT_RUNTIME
        rt = load_runtime(rt_ref)
        res = rank.search(job, cl, objective.value, rt, rank.Reserve(reserve, reserve_gib), margin)
        best_base = res.baselines.get(res.strongest) if res.strongest else None
        if format != Format.table:
            data = {"baseline": {name: (_entry(sc, res, job) | {"feasible": sc.feasible}) if sc else None for name, sc in res.baselines.items()},
                    "strongest_baseline": res.strongest,
                    "plans": [_entry(sc, res, job, rt) | {"tied_with_first": i < res.tied} for i, sc in enumerate(res.ranked[:max(top, res.tied)])],
                    "recommended_because": res.why_first, "schedule_reason": plans.schedule_reason(res.ranked),
                    "teacher_gpus_why": rank.teacher_gpus_why(res), "rollout_gpus_why": rank.rollout_gpus_why(res),
                    "rollout_tp_why": res.rollout_tp.reason(res.ranked[0].strategy) if res.rollout_tp and res.ranked else "", "tie_margin": res.margin, "usable_bytes": res.usable_bytes,
                    "reserve_bytes": res.reserve_bytes, "rejected": res.rejected, "evaluated": res.evaluated, "notes": res.notes}
            emit(data, format)
        else:
            _print(res, top, cl, wide, job.workload.topk, rt)
        if not res.ranked:
            raise typer.Exit(EXIT_NO)
        if plan_path:
            plan = plans.to_plan(res.ranked[0], job, cl, cl_ref, best_base, rt_ref, res.strongest)
            writes = [(plan_path, plan_text(plan), False)]
            if export:  # the script is rendered before anything is written: a plan it refuses is not written either
                from planner.cli.export import launch_script, next_step
                script = launch_script(plan_path, plan, export, random_init=random_init)
                writes.append((output, script, True))
            files.write_files(writes, force)
            err.print(f"Wrote the recommended plan ({res.ranked[0].strategy}) to {plan_path}.")
            if export:
                err.print(next_step(export, output, script))
            else:
                q = shlex.quote(str(plan_path))
                err.print(f"Next: `planner estimate --plan {q}` or `planner export {q} --to slurm`.")


def _print(res: rank.SearchResult, top: int, cl, wide: bool, k: int, runtime=None) -> None:
    if not res.ranked:
        c = res.closest
        out.print("No plan fits in memory.", style="red")
        if c is not None:
            out.print(f"Closest: {c.strategy}: {gib(c.figures['mem_peak'])} GiB of {gib(res.usable_bytes)} usable "
                      f"({gib(res.reserve_bytes)} GiB of it kept free); largest term {_largest(c)}.")
        out.print("Next: more nodes (--nodes), a smaller micro_batch_min, `loss: chunked`, gradient checkpointing, "
                  "an fp8 teacher (teacher_dtype: fp8) in the job's workload, or a smaller --reserve.")
    else:
        out.print(_table(res, top, wide))
        out.print(_strongest_line(res))
        for line in _ties(res):
            out.print(line)
        first, name = res.ranked[0], res.strongest or "trl-gkd-zero3"  # none fits: against TRL's default, which does not
        out.print(f"Why #1 wins: {rank.why_it_wins(first, res.baselines.get(name), cl, name)}.")
        out.print(f"Roles of #1: {plans.roles_line(first, runtime)}.")
        if why := rank.teacher_gpus_why(res):
            out.print(f"Teacher GPUs: {why}.")
        if why := rank.rollout_gpus_why(res):
            out.print(f"Rollout GPUs: {why}.")
        if res.rollout_tp and (why := res.rollout_tp.reason(first.strategy)):
            out.print(f"Rollout TP: {why}.")
        out.print(f"Schedule: {plans.schedule_reason(res.ranked)}.")
        if note := outputs.note(first.output, k):
            out.print(f"Note: {note}.")
    if res.rejected:
        out.print("Rejected: " + "; ".join(f"{n} {why}" for why, n in res.rejected.items()))
    for note in res.notes:
        out.print(note)

"""`planner estimate`: the cost model's figures for one plan, next to the strongest baseline (TRL, verl) that fits."""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.table import Table

from planner.cli import options as o
from planner.cli.symbolic import print_symbolic
from planner.cli.common import EXIT_NO, Command, Format, bold, emit, err, gib, handles_errors, heading, load_inputs, on_this_machine, out
from planner.inputs.errors import InputError
from planner.search import output as outputs
from planner.search import rank
from planner.strategy import Strategy


def _figures(sc: rank.Scored | None) -> dict | None:
    if sc is None:
        return None
    mem, tim = sc.memory_terms(), sc.time_terms()
    st = sc.strategy
    return {
        "strategy": str(st) + outputs.suffix(sc.output), "teacher": st.teacher_part, "student": st.student_part,
        "placement": st.placement, "micro_batch": st.b, "teacher_output": sc.output, "runtime": sc.runtime,
        "memory_bytes": mem | {"total": sc.figures["mem_peak"]}, "memory_bytes_by_side": sc.memory_sides(),
        "time_s": tim | {"total": sc.figures["step_time"]},
        "samples_per_s": sc.samples_per_s, "free_bytes": sc.free, "feasible": sc.feasible, "reason": sc.reason,
    }


def register(app: typer.Typer) -> None:
    @app.command(cls=Command)
    @handles_errors
    def estimate(
        model: o.Model = None, cluster: o.ClusterOpt = None, nodes: o.Nodes = None,
        teacher: o.Teacher = None, student: o.Student = None, runtime: o.RuntimeOpt = None,
        plan: Annotated[Optional[str], typer.Option("--plan", "-p", help="Re-evaluate a plan file (its job and strategy) instead of the flags below.")] = None,
        strategy: Annotated[Optional[str], typer.Option("--strategy", "-s", help="The whole strategy as `recommend` prints it: teacher / student / placement / micro-batch, e.g. shard:16/zero3/colocated/4 (a missing micro-batch is 1), with +vllm for a vLLM rollout engine and +topk or +cached for a top-k teacher output (default: the job's, full logits under auto), e.g. shard:2/zero2/disaggregated:8/1+vllm+topk; instead of the four flags below.")] = None,
        teacher_split: Annotated[str, typer.Option(help="replicate | shard[:k] | pipeline[:k] | tp[:k] (default k: shard all teacher GPUs, the others one node; pipeline:k on more GPUs than k is replicated; hybrid is read as pipeline); an MoE teacher may add +ep:N, its experts split over N ranks (e.g. shard:16+ep:8).")] = "shard",
        student_split: Annotated[str, typer.Option(help="ddp | zero1 | zero2 | zero3 (fsdp) | hsdp[:SHARD] (default shard: one node; it must divide the student GPUs); zero3 and hsdp may add +per_step: gathered layer by layer at every decode step instead of once per generation.")] = "zero3",
        placement: Annotated[str, typer.Option(help="colocated | disaggregated[:TEACHER_GPUS].")] = "colocated",
        micro_batch: Annotated[int, typer.Option(help="Samples per student rank per micro-step.", min=1)] = 1,
        reserve: o.ReserveOpt = 0.05, reserve_gib: o.ReserveGib = 0.0,
        format: Annotated[Format, typer.Option("--format", "-f", help="table, json or yaml.")] = Format.table,
        symbolic: Annotated[bool, typer.Option(help="Print the model's expressions instead of numbers: repeated sub-expressions named once, and a legend of the symbols.")] = False,
        latex: Annotated[bool, typer.Option(help="With --symbolic: LaTeX.")] = False,
        term: Annotated[Optional[list[str]], typer.Option("--term", help="With --symbolic: only this expression (e.g. time.teacher_comm, step_time) and what it uses; repeatable.")] = None,
    ) -> None:
        """Memory per device and step time, by term, for one plan next to the strongest baseline (TRL, verl) that fits. Exits 3 if the plan does not fit (with the memory reserve kept free)."""
        if symbolic:
            return print_symbolic(latex, format, term or [])
        if term or latex:
            raise InputError("--term and --latex go with --symbolic")
        if plan:
            from planner.plan import load_plan, plan_cluster
            from planner.validate import job_of
            p = load_plan(plan)
            cl = on_this_machine(plan_cluster(plan, p), p.cluster, replace=False)  # next to the plan first, as `export` finds it
            job = job_of(p)
            line = heading(f"Estimating plan {plan} (job '{p.job}')", job, cl)
            st = Strategy.from_plan(p)
            runtime = runtime or p.runtime
        else:
            job, cl, _, line = load_inputs(model, cluster, nodes, teacher, student)
            if strategy:
                given = {"--teacher-split": teacher_split != "shard", "--student-split": student_split != "zero3",
                         "--placement": placement != "colocated", "--micro-batch": micro_batch != 1}
                if any(given.values()):
                    raise InputError(f"--strategy: give the whole strategy there or use {', '.join(k for k, v in given.items() if v)}, not both")
                strategy, chosen = outputs.split(strategy, "--strategy")
                job = outputs.choose(job, chosen, "--strategy")
                st = Strategy.parse(strategy, cl, "--strategy")
            else:
                st = Strategy.from_words(teacher_split, student_split, placement, micro_batch, cl,
                                         ("--teacher-split", "--student-split", "--placement", "--micro-batch"))
        from planner.inputs.load import DEFAULT_RUNTIME, load_runtime
        keep = rank.Reserve(reserve, reserve_gib)
        rt = load_runtime(runtime or DEFAULT_RUNTIME)
        why = st.rejection(job) or outputs.rejection(outputs.of(job), st.disaggregated)
        sc = rank.score([st], [why], job, cl, rt, keep)[0]
        bases = rank.baselines(job, cl, reserve=keep)
        name = rank.strongest(bases) or "trl-gkd-zero3"
        base = bases[name]
        data = _figures(sc) | {"baseline_name": name, "baseline": _figures(base), "speedup_vs_baseline": rank.speedup(sc, base),
                               "speedup_vs_baselines": {n: rank.speedup(sc, b) for n, b in bases.items()}}
        if format != Format.table:
            err.print(line)
            emit(data, format)
        else:
            out.print(line)
            _tables(sc, base, rank.bind.usable_bytes(cl), keep.describe(cl), name)
        if not sc.feasible:
            raise typer.Exit(EXIT_NO)


def _tables(sc: rank.Scored, base: rank.Scored | None, usable: float, reserve: str, name: str) -> None:
    label = str(sc.strategy) + outputs.suffix(sc.output)
    blabel = f"{name} ({base.strategy}{outputs.suffix(base.output)})" if base else f"{name} (n/a)"
    bm, bt = (base.memory_terms(), base.time_terms()) if base else ({}, {})
    t = Table(title=f"Memory per device (GiB), usable {gib(usable)}, {reserve} kept free")
    for c in ("term", label, blabel):
        t.add_column(c, justify="left" if c == "term" else "right")
    for k, v in sc.memory_terms().items():
        t.add_row(k, gib(v), gib(bm[k]) if k in bm else "-")
    if sc.apart:  # two kinds of device (or of phase: an offline cache's teacher pass): say each one's total
        sides = sc.memory_sides()
        t.add_row("student ranks (student_* terms, logits, loss)", gib(sides["student_ranks"]), "-")
        t.add_row("teacher ranks (teacher_* terms)" if "teacher_ranks" in sides else "the one-time teacher pass (teacher_* terms)",
                  gib(sides.get("teacher_ranks", sides.get("teacher_pass", 0.0))), "-")
    t.add_row(bold("total (busiest device)"), gib(sc.figures["mem_peak"]), gib(base.figures["mem_peak"]) if base else "-")
    t.add_row("free", gib(sc.free), gib(base.free) if base else "-")
    out.print(t)
    t = Table(title="Step time (ms)")
    for c in ("term", label, blabel):
        t.add_column(c, justify="left" if c == "term" else "right")
    for k, v in sc.time_terms().items():
        t.add_row(k, f"{v * 1e3:,.1f}", f"{bt[k] * 1e3:,.1f}" if k in bt else "-")
    t.add_row(bold("step"), f"{sc.figures['step_time'] * 1e3:,.1f}", f"{base.figures['step_time'] * 1e3:,.1f}" if base else "-")
    out.print(t)
    status = "fits" if sc.feasible else f"INFEASIBLE: {sc.reason}"
    out.print(f"{sc.samples_per_s:.2f} samples/s ({status}); {name}: "
              + (f"{base.samples_per_s:.2f} samples/s" + ("" if base.feasible else f" but {base.reason}") if base else "n/a"))

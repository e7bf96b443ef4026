"""`planner validate`: the plan's predicted figures next to what the executor measured."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table
from rich.text import Text

from planner.cli.common import EXIT_NO, Command, Format, emit, err, handles_errors, out, require_executor
from planner.files import read_text
from planner.inputs.errors import InputError


def run_plan(plan_path: str, nproc: int, steps: int, metrics_out: Path, random_init: bool = False) -> None:
    """Run the executor on this machine (one node) and wait for its metrics."""
    import torch

    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "planner", "run", plan_path, "--steps", str(steps), "--metrics-out", str(metrics_out), "--no-progress"] + (["--random-init"] if random_init else [])
    if not torch.cuda.is_available():  # on a GPU the phase clock would synchronize inside the timed steps
        cmd.append("--phases")
    err.print("Running: " + " ".join(cmd))
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise InputError(f"{plan_path}: the executor failed (exit {done.returncode}): {worker_error(done.stderr + done.stdout)}")


def worker_error(output: str) -> str:
    """The line that says why a worker stopped, out of everything torchrun printed: the worker's own
    `error: ...` line (an input error, printed once by rank 0), else the first exception line of a
    worker's traceback, else the last line; torchrun's own report (`ChildFailedError`, its table of
    failures) is left out."""
    lines = [_RANK_PREFIX.sub("", ln).strip() for ln in output.splitlines()]
    lines = [ln for ln in lines if ln]
    own = [ln[len("error:"):].strip() for ln in lines if ln.startswith("error:")]
    if own:
        return own[0]
    for ln in lines:
        m = _EXCEPTION.match(ln)
        if m and "ChildFailedError" not in m.group(1):
            return ln
    return lines[-1] if lines else "no output"


_RANK_PREFIX = re.compile(r"^\[(?:rank|default)?\d+\]:")  # torchrun's per-worker line prefix
_EXCEPTION = re.compile(r"^((?:[A-Za-z_][A-Za-z0-9_]*\.)*[A-Za-z_][A-Za-z0-9_]*(?:Error|Exception|Interrupt)): ")


def register(app: typer.Typer) -> None:
    @app.command(cls=Command)
    @handles_errors
    def validate(
        plan: Annotated[str, typer.Argument(help="Plan file.")],
        metrics: Annotated[Optional[str], typer.Option(help="Metrics JSON written by `planner run --metrics-out`.")] = None,
        run: Annotated[bool, typer.Option("--run", help="Run the executor here (one node, torchrun) and use its metrics.")] = False,
        cluster: Annotated[Optional[str], typer.Option("--cluster", "-c", help="Predict on this topology (e.g. one from `planner calibrate`); default: the plan's.")] = None,
        runtime: Annotated[Optional[str], typer.Option("--runtime", help="Predict under this runtime (e.g. the .runtime.yaml of `planner calibrate --model`); default: the plan's.")] = None,
        steps: Annotated[int, typer.Option(help="With --run: optimizer steps.", min=2)] = 6,
        random_init: Annotated[bool, typer.Option("--random-init", help="With --run: random weights instead of the refs' checkpoints (`planner run --random-init`).")] = False,
        format: Annotated[Format, typer.Option("--format", "-f", help="table, json or yaml.")] = Format.table,
    ) -> None:
        """Predicted vs measured per term (step time, samples/s, teacher, generation and student sides of the step, model-state memory) with the relative error. Exits 3 if a figure is off by more than its tolerance."""
        from planner import validate as v
        from planner.inputs.load import load_cluster, load_runtime
        from planner.plan import check_fits, load_plan, plan_cluster

        if bool(metrics) == run:
            raise InputError("give exactly one of --metrics FILE or --run")
        p = load_plan(plan)
        cl = check_fits(plan, p, load_cluster(cluster)) if cluster else plan_cluster(plan, p)
        rt = load_runtime(runtime) if runtime else None
        if run:
            if p.nodes != 1:
                raise InputError(f"{plan}: --run starts one node; this plan needs {p.nodes} (use `planner export`)")
            require_executor("validate --run")
            from planner.executor.groups import check_supported
            check_supported(p)  # refuse here, in one line, rather than from inside every rank
            from planner.executor.models import folders
            folders(p, random_init, plan)  # a ref without weights needs --random-init
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "metrics.json"
                run_plan(plan, p.gpus_per_node, steps, path, random_init)
                data = json.loads(read_text(path))
        else:
            try:
                data = json.loads(read_text(metrics))
            except json.JSONDecodeError as e:
                raise InputError(f"{metrics}: not valid JSON: line {e.lineno}: {e.msg}") from None
            except (ValueError, RecursionError) as e:  # an integer of more than 4300 digits; nesting too deep
                raise InputError(f"{metrics}: not valid JSON: {e or 'nesting too deep'}") from None
        data = v.check_metrics(p, data, metrics or "the run's metrics")
        rows = v.compare(p, data, cl, rt)
        verdict = v.verdict(rows)
        if format != Format.table:
            emit({"rows": [{"what": r.what, "predicted": r.predicted, "measured": r.measured, "rel_error": r.rel_error,
                            "tolerance": r.tolerance, "ok": r.ok} for r in rows], "verdict": verdict,
                  "cluster": cl.name}, format)
        else:
            _table(plan, cl, rows, verdict)
        if any(r.ok is False for r in rows):
            raise typer.Exit(EXIT_NO)


def _table(plan: str, cl, rows, verdict: str) -> None:
    t = Table(title=f"{plan}: predicted on {cl.name} vs measured")
    for c in ("figure", "predicted", "measured", "error", "within"):
        t.add_column(c, justify="left" if c == "figure" else "right")
    for r in rows:
        fmt = (lambda x: f"{x:,.4g}") if "bytes" not in r.what else (lambda x: f"{x:,.0f}")
        t.add_row(r.what, fmt(r.predicted), fmt(r.measured), f"{r.rel_error:+.1%}",
                  "-" if r.ok is None else ("yes" if r.ok else Text("no", style="red") + f" (±{r.tolerance:.0%})"))
    out.print(t)
    out.print(f"Verdict: {verdict}.")

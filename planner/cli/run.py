"""`planner run PLAN`: run GKD training with exactly the plan's partitioning (one process of torchrun)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from planner.cli.common import Command, err, handles_errors, require_executor
from planner.files import check_output
from planner.inputs.errors import InputError


def _override(plan, teacher: str | None, student: str | None, tokenizer: str | None, dataset: str | None):
    from planner.inputs.load import load_model

    update = {}
    for key, ref in (("teacher", teacher), ("student", student)):
        if ref:
            part = getattr(plan, key)
            update[key] = part.model_copy(update={"ref": ref, "shape": load_model(ref)})
    if tokenizer:
        update["tokenizer"] = tokenizer
    if dataset:
        if not Path(dataset).is_file():
            raise InputError(f"--dataset: {dataset}: not found; give a local JSONL file")
        update["dataset"] = dataset
    return plan.model_copy(update=update) if update else plan


def register(app: typer.Typer) -> None:
    @app.command(cls=Command)
    @handles_errors
    def run(
        plan: Annotated[Path, typer.Argument(help="Plan file (YAML) from `planner recommend` or written by hand.")],
        steps: Annotated[int, typer.Option(help="Optimizer steps to reach (a resumed run continues to this count).", min=1)] = 10,
        seed: Annotated[int, typer.Option(help="Seed of the weights, the data order and on-policy sampling.")] = 0,
        metrics_out: Annotated[Optional[Path], typer.Option(help="Write measured samples/s, losses and memory (JSON) here (checked before training starts).")] = None,
        force: Annotated[bool, typer.Option(help="Overwrite --metrics-out if it exists.")] = False,
        checkpoint_dir: Annotated[Optional[Path], typer.Option(help="Folder of student checkpoints; the run resumes from the newest complete one.")] = None,
        checkpoint_every: Annotated[int, typer.Option(help="Save a checkpoint every N steps (0: never).", min=0)] = 0,
        warmup_steps: Annotated[int, typer.Option(help="Steps left out of samples/s.", min=0)] = 2,
        teacher: Annotated[Optional[str], typer.Option(help="Replace the plan's teacher: a local checkpoint folder (config.json + safetensors); with --random-init also a bundled name or config.json.")] = None,
        student: Annotated[Optional[str], typer.Option(help="Replace the plan's student: a local checkpoint folder (config.json + safetensors); with --random-init also a bundled name or config.json.")] = None,
        random_init: Annotated[bool, typer.Option("--random-init", help="Seeded random weights from the refs' shapes instead of their checkpoints (needed for a bundled name or a folder without weights).")] = False,
        tokenizer: Annotated[Optional[str], typer.Option(help="Local tokenizer folder (default: the plan's, else bytes).")] = None,
        dataset: Annotated[Optional[str], typer.Option(help="Local JSONL dataset (default: the plan's, else synthetic prompts).")] = None,
        progress: Annotated[bool, typer.Option(help="Progress bar on the first student rank.")] = True,
        phases: Annotated[bool, typer.Option(help="Also time each phase of a step into the metrics (on a GPU this synchronizes at every phase).")] = False,
    ) -> None:
        """Train the student by GKD with the plan's split of both models; launch with `torchrun --nproc-per-node N -m planner run PLAN`."""
        # Each problem is said once: one found before the ranks meet (the plan, the flags: the same on
        # every rank of a node) by the first rank of each node; one every rank learned together (the
        # executor's inputs: tokenizer, dataset) by rank 0; the executor's others by the rank that saw them.
        try:
            p = _prepare(plan, metrics_out, force, checkpoint_dir, checkpoint_every, teacher, student, tokenizer, dataset)
            _check_weights(plan, p, random_init)
        except InputError as e:
            raise InputError(e.lines if os.environ.get("LOCAL_RANK", "0") == "0" else []) from None
        from planner.executor.loop import RunOptions, run as run_plan
        try:
            out = run_plan(p, RunOptions(steps=steps, seed=seed, metrics_out=metrics_out, force=force, checkpoint_dir=checkpoint_dir,
                                         checkpoint_every=checkpoint_every, warmup_steps=warmup_steps, progress=progress,
                                         phases=phases, random_init=random_init))
        except InputError as e:
            if getattr(e, "all_ranks", False) and os.environ.get("RANK", "0") != "0":
                raise InputError([]) from None
            raise
        if out is not None:
            sps = out["samples_per_s"]
            err.print(f"done: steps {out['start_step']}..{out['end_step']}, last loss {out['loss'][-1] if out['loss'] else float('nan'):.4f}, "
                      f"{sps:.2f} samples/s" if sps else "done")


def _prepare(plan: Path, metrics_out: Path | None, force: bool, checkpoint_dir: Path | None, checkpoint_every: int,
             teacher: str | None, student: str | None, tokenizer: str | None, dataset: str | None):
    """The plan to run, with every check that needs no other rank done."""
    from planner.plan import load_plan

    if checkpoint_every and not checkpoint_dir:
        raise InputError("--checkpoint-every needs --checkpoint-dir")
    if checkpoint_dir and checkpoint_dir.exists() and not checkpoint_dir.is_dir():
        raise InputError(f"--checkpoint-dir: {checkpoint_dir}: is a file, not a folder")
    if metrics_out:  # every rank checks; rank 0 writes at the end, atomically and again without clobbering
        check_output(metrics_out, force, "--metrics-out")
    require_executor("planner run")
    return _override(load_plan(plan), teacher, student, tokenizer, dataset)


def _check_weights(plan: Path, p, random_init: bool) -> None:
    """A ref without weights and no --random-init: one line per model, naming the plan file (or the folder)."""
    from planner.executor.models import folders

    folders(p, random_init, str(plan))

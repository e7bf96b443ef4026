"""`planner calibrate`: measure this machine and write it as a topology file."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.progress import Progress

from planner.cli.common import Command, err, handles_errors, out, require_executor
from planner.files import check_outputs, write_files
from planner.inputs.errors import InputError


def register(app: typer.Typer) -> None:
    @app.command(cls=Command)
    @handles_errors
    def calibrate(
        output: Annotated[Optional[str], typer.Option("--output", "-o", help="Topology YAML to write (raw measurements go next to it as .raw.json).")] = None,
        world: Annotated[int, typer.Option(help="Local processes for the collective benchmark (GPUs on a GPU machine).", min=1)] = 2,
        name: Annotated[str, typer.Option(help="Name of the topology.")] = "my-machine",
        quick: Annotated[bool, typer.Option(help="Smaller problems (seconds instead of a minute).")] = False,
        model: Annotated[Optional[str], typer.Option("--model", help="Also time this model (a bundled name or config.json): training steps (compute efficiency, per-layer overhead), the GKD loss, the optimizer step, and on CPU processes FSDP, DDP and pipeline overheads.")] = None,
        repeat: Annotated[int, typer.Option(help="Rounds of every measurement; the topology gets each figure's median.", min=1)] = 1,
        force: Annotated[bool, typer.Option(help="Overwrite --output and its .raw.json if they exist.")] = False,
    ) -> None:
        """Short micro-benchmarks (matmul FLOP/s, memory bandwidth, each collective; with --model, training steps) -> a topology file."""
        require_executor("calibrate" + (" --model" if model else ""), transformers=bool(model))
        import torch
        from planner.calibrate import topology
        from planner.inputs.cluster import Cluster
        from planner.inputs.yamlio import dump_yaml

        raw_out = Path(output).with_suffix(".raw.json") if output else None
        check_outputs({"-o": output, "-o (raw measurements)": raw_out}, force)
        cuda = torch.cuda.is_available()
        if not cuda:  # each CPU "device" is one process of `world`: measure it with its share of the cores
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
        if cuda and world > torch.cuda.device_count():
            raise InputError(f"--world: {world} processes but only {torch.cuda.device_count()} GPUs")
        with Progress(console=err, transient=True) as bar:
            task = bar.add_task("calibrating", total=3 * repeat)
            rounds = [topology.measure_once(world, model, quick, lambda: bar.advance(task)) for _ in range(repeat)]
        raw = topology.median_of(rounds) | {"rounds": rounds}
        topo = topology.to_topology(raw, name, world)
        Cluster(**topo)  # what we write must load
        text = "# Written by `planner calibrate`: peaks are what large matmuls reached; with --model, compute_efficiency and the overhead figures are fitted to timed passes and steps of that model (raw timings in the .raw.json).\n" + dump_yaml(topo)
        if output:
            write_files([(output, text, False), (raw_out, json.dumps(raw, indent=2) + "\n", False)], force)
            err.print(f"Wrote {output} and {raw_out}. Next: `planner recommend -c {output}`.")
        else:
            out.print(text, end="")

"""`planner calibrate`: measure this machine; write its hardware as a topology and, with --model, the
executor's fitted framework overheads as a runtime."""

from __future__ import annotations

import json
import os
import shlex
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
        output: Annotated[Optional[str], typer.Option("--output", "-o", help="Topology YAML to write (raw measurements go next to it as .raw.json; with --model the runtime as .runtime.yaml).")] = None,
        world: Annotated[int, typer.Option(help="Local processes for the collective benchmark (GPUs on a GPU machine).", min=1)] = 2,
        name: Annotated[str, typer.Option(help="Name of the topology (the runtime is NAME-runtime).")] = "my-machine",
        quick: Annotated[bool, typer.Option(help="Smaller problems (seconds instead of a minute).")] = False,
        model: Annotated[Optional[str], typer.Option("--model", help="Also time the executor on this model (a bundled name or config.json) at one sequence length: training steps (compute efficiency, per-layer overhead), the GKD loss, the optimizer step, generation, and on CPU processes FSDP, DDP and pipeline overheads; each fitted through the cost model into a runtime file.")] = None,
        runtime_out: Annotated[Optional[str], typer.Option("--runtime-out", help="Runtime YAML to write with --model (default: next to --output, as .runtime.yaml).")] = None,
        base_runtime: Annotated[str, typer.Option("--base-runtime", help="Runtime whose other fields the written runtime keeps (bundled name or YAML).")] = "kd-planner",
        repeat: Annotated[int, typer.Option(help="Rounds of every measurement; every figure is the median of the rounds.", min=1)] = 1,
        force: Annotated[bool, typer.Option(help="Overwrite --output, --runtime-out and the .raw.json if they exist.")] = False,
    ) -> None:
        """Short micro-benchmarks (matmul FLOP/s, memory bandwidth, each collective) -> a topology file; with --model, the executor's overheads -> a runtime file."""
        require_executor("calibrate" + (" --model" if model else ""), transformers=bool(model))
        import torch
        from planner.calibrate import topology
        from planner.inputs.cluster import Cluster
        from planner.inputs.load import load_runtime
        from planner.inputs.runtime import Runtime
        from planner.inputs.yamlio import dump_yaml

        raw_out = Path(output).with_suffix(".raw.json") if output else None
        rt_out = runtime_out or (str(Path(output).with_suffix(".runtime.yaml")) if output and model else None)
        if runtime_out and not model:
            raise InputError("--runtime-out: needs --model (the runtime's overheads are fitted to timed runs of a model)")
        check_outputs({"-o": output, "-o (raw measurements)": raw_out, "--runtime-out": rt_out}, force)
        load_runtime(base_runtime)  # a bad --base-runtime fails before minutes of measuring
        cuda = torch.cuda.is_available()
        if not cuda:  # each CPU "device" is one process of `world`: measure it with its share of the cores
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
        if cuda and world > torch.cuda.device_count():
            raise InputError(f"--world: {world} processes but only {torch.cuda.device_count()} GPUs")
        with Progress(console=err, transient=True) as bar:
            task = bar.add_task("calibrating", total=3 * repeat)
            rounds = [topology.measure_once(world, model, quick, lambda: bar.advance(task)) for _ in range(repeat)]
        raw = topology.median_of(rounds) | {"rounds": rounds}
        topo, runtime, knobs = topology.calibrated(raw, name, world, base_runtime)
        raw["fitted"] = knobs
        Cluster(**topo)  # what we write must load
        text = ("# Written by `planner calibrate`: the hardware only (peaks are what large matmuls reached; with --model, "
                "compute_efficiency is fitted to timed training steps). Raw timings in the .raw.json.\n" + dump_yaml(topo))
        files = [(output, text, False), (raw_out, json.dumps(raw, indent=2) + "\n", False)]
        if runtime is not None:
            Runtime(**runtime)
            rt_text = ("# Written by `planner calibrate --model`: the overheads of this backend fitted through the cost model "
                       f"(planner.calibrate.fit) to timed runs of {model}; the other fields are {base_runtime}'s.\n" + dump_yaml(runtime))
            files.append((rt_out, rt_text, False))
        written = [f for f in files if f[0]]
        if written:
            write_files(written, force)
        if output:
            also = f" and {rt_out}" if runtime is not None else ""
            q = shlex.quote
            err.print(f"Wrote {output}, {raw_out}{also}. Next: `planner recommend -c {q(str(output))}"
                      + (f" --runtime {q(str(rt_out))}`." if runtime is not None else "`."))
        else:
            out.print(text + ("---\n" + rt_text if runtime is not None and not rt_out else ""), end="")

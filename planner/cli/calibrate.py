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
        output: Annotated[Optional[str], typer.Option("--output", "-o", help="Topology YAML to write (raw measurements go next to it as .raw.json; with --model the runtime as .runtime.yaml). Each measurement is kept in a .partial.json beside it as soon as it is taken; a rerun with the same options resumes from it.")] = None,
        world: Annotated[int, typer.Option(help="Local processes for the collective benchmark (GPUs on a GPU machine).", min=1)] = 2,
        name: Annotated[str, typer.Option(help="Name of the topology (the runtime is NAME-runtime).")] = "my-machine",
        quick: Annotated[bool, typer.Option(help="Smaller problems (seconds instead of a minute).")] = False,
        model: Annotated[Optional[str], typer.Option("--model", help="Also time the executor on this model (a bundled name, a config.json or a checkpoint folder) at one sequence length: training steps (compute efficiency, per-layer overhead), the GKD loss, the optimizer step, generation, and on CPU processes FSDP, DDP and pipeline overheads; each fitted through the cost model into a runtime file.")] = None,
        runtime_out: Annotated[Optional[str], typer.Option("--runtime-out", help="Runtime YAML to write with --model (default: next to --output, as .runtime.yaml).")] = None,
        base_runtime: Annotated[str, typer.Option("--base-runtime", help="Runtime whose other fields the written runtime keeps (bundled name or YAML).")] = "kd-planner",
        repeat: Annotated[int, typer.Option(help="Rounds of every measurement; every figure is the median of the rounds.", min=1)] = 1,
        force: Annotated[bool, typer.Option(help="Overwrite --output, --runtime-out and the .raw.json if they exist.")] = False,
        cache: Annotated[bool, typer.Option("--cache", help="Write the files to this machine's cache (~/.cache/kd-planner/machines/CPU/NAME.yaml, or under $XDG_CACHE_HOME), replacing what is there: on this CPU the bundled CPU topology NAME (e.g. --name cpu-local) is then planned with them.")] = False,
    ) -> None:
        """Short micro-benchmarks (matmul FLOP/s, memory bandwidth, each collective) -> a topology file; with --model, the executor's overheads -> a runtime file."""
        require_executor("calibrate" + (" --model" if model else ""), transformers=bool(model))
        import torch
        from planner.calibrate import topology
        from planner.inputs.cluster import Cluster
        from planner.inputs.load import load_model, load_runtime
        from planner.inputs.runtime import Runtime
        from planner.inputs.yamlio import dump_yaml

        if cache:
            from planner.inputs.machine import cached_topology

            if output:
                raise InputError("--cache: writes to this machine's cache; give -o or --cache, not both")
            output, force = str(cached_topology(name)), True
            Path(output).parent.mkdir(parents=True, exist_ok=True)
        raw_out = Path(output).with_suffix(".raw.json") if output else None
        rt_out = runtime_out or (str(Path(output).with_suffix(".runtime.yaml")) if output and model else None)
        if runtime_out and not model:
            raise InputError("--runtime-out: needs --model (the runtime's overheads are fitted to timed runs of a model)")
        check_outputs({"-o": output, "-o (raw measurements)": raw_out, "--runtime-out": rt_out}, force)
        load_runtime(base_runtime)  # a bad --base-runtime fails before minutes of measuring
        shape = load_model(model) if model else None  # so does a bad --model
        cuda = torch.cuda.is_available()
        if not cuda:  # each CPU "device" is one process of `world`: measure it with its share of the cores
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
        if cuda and world > torch.cuda.device_count():
            raise InputError(f"--world: {world} processes but only {torch.cuda.device_count()} GPUs")
        settings = {"world": world, "quick": quick, "repeat": repeat, "cuda": cuda,
                    "model": shape.model_dump(mode="json") if shape else None}
        partial = Path(output).with_suffix(".partial.json") if output else None
        done = partial_rounds(partial, settings, force)[:repeat]
        done += [{} for _ in range(repeat - len(done))]

        def keep(i: int):  # round i's measurements so far -> the partial file, atomically, as each completes
            def save(measured: dict) -> None:
                done[i] = measured
                write_files([(partial, json.dumps({"settings": settings, "rounds": done}, indent=2) + "\n", False)], force=True)
            return save if partial else None

        counter = [0]  # new measurements of this run (KD_PLANNER_CALIBRATE_FAIL_AFTER counts them)
        records = [topology.Record(done[i], keep(i), counter) for i in range(repeat)]
        reused = sum(len(r.done) for r in records)
        if reused:
            err.print(f"Resuming from {partial}: {reused} measurements taken by an earlier run are reused, not measured again.")
        from planner.calibrate.hardware import speed_probe

        probe_on = "cuda" if cuda else "cpu"
        before = speed_probe(probe_on)
        with Progress(console=err, transient=True) as bar:
            task = bar.add_task("calibrating", total=3 * repeat)
            try:
                rounds = [topology.measure_once(world, shape, quick, lambda: bar.advance(task), rec) for rec in records]
            except BaseException:
                if partial and any(done):
                    err.print(f"Kept {sum(map(len, done))} completed measurements in {partial}: the same command resumes from them.")
                raise
        probe = {"before": before, "after": speed_probe(probe_on)}
        raw = topology.median_of(rounds) | {"rounds": rounds, "speed_probe_tflops": probe}
        if (change := topology.speed_change(probe)) is not None:
            err.print(f"Warning: this machine's speed changed by {change:+.0%} during the calibration (fp32 matmul {probe['before']:.3g} -> "
                      f"{probe['after']:.3g} TFLOP/s; another job, a busy host or a disk still writing): its figures may not hold. "
                      "Rerun it on a quiet machine; --repeat 3 takes the median of three rounds.")
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
        if partial and partial.exists():
            partial.unlink()  # everything it held is in the .raw.json now
        if output:
            also = f" and {rt_out}" if runtime is not None else ""
            q = shlex.quote
            err.print(f"Wrote {output}, {raw_out}{also}. Next: `planner recommend -c {q(str(output))}"
                      + (f" --runtime {q(str(rt_out))}`." if runtime is not None else "`."))
        else:
            out.print(text + ("---\n" + rt_text if runtime is not None and not rt_out else ""), end="")


def partial_rounds(path: Path | None, settings: dict, force: bool) -> list[dict]:
    """The measurements an interrupted run with the same settings left in `path` (one dict per
    round), or none. A partial file of other settings is refused unless --force starts over."""
    if path is None or not path.exists():
        return []
    try:
        data = json.loads(path.read_text())
        rounds, old = data["rounds"], data["settings"]
    except (OSError, ValueError, KeyError, TypeError):
        if force:
            return []
        raise InputError(f"{path}: not a partial calibration this version can read; remove it or pass --force to start over") from None
    if old != settings:
        if force:
            return []
        diff = ", ".join(k for k in settings if old.get(k) != settings[k])
        raise InputError(f"{path}: partial measurements of a calibration with other options ({diff}); rerun with those, "
                         "or pass --force to start over")
    return [r for r in rounds if isinstance(r, dict)]

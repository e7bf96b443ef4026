"""`planner calibrate`: measure this machine and write it as a topology file."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.progress import Progress

from planner.cli.common import err, handles_errors, out
from planner.inputs.errors import InputError


def register(app: typer.Typer) -> None:
    @app.command()
    @handles_errors
    def calibrate(
        output: Annotated[Optional[str], typer.Option("--output", "-o", help="Topology YAML to write (raw measurements go next to it as .raw.json).")] = None,
        world: Annotated[int, typer.Option(help="Local processes for the collective benchmark (GPUs on a GPU machine).", min=1)] = 2,
        name: Annotated[str, typer.Option(help="Name of the topology.")] = "my-machine",
        quick: Annotated[bool, typer.Option(help="Smaller problems (seconds instead of a minute).")] = False,
        model: Annotated[Optional[str], typer.Option("--model", "-m", help="Also time training steps of this model (a bundled name or config.json) to fit compute efficiency and per-layer overhead.")] = None,
        force: Annotated[bool, typer.Option(help="Overwrite --output if it exists.")] = False,
    ) -> None:
        """Short micro-benchmarks (matmul FLOP/s, memory bandwidth, each collective; with --model, training steps) -> a topology file."""
        try:
            import torch
        except ImportError:
            raise InputError("calibrate needs torch: pip install 'kd-planner[executor]'") from None
        from planner.calibrate import measure
        from planner.inputs.cluster import Cluster
        from planner.inputs.yamlio import dump_yaml

        if output and Path(output).exists() and not force:
            raise InputError(f"{output}: exists; pass --force to overwrite it")
        cuda = torch.cuda.is_available()
        if not cuda:  # each CPU "device" is one process of `world`: measure it with its share of the cores
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
        device, backend = ("cuda", "nccl") if cuda else ("cpu", "gloo")
        if cuda and world > torch.cuda.device_count():
            raise InputError(f"--world: {world} processes but only {torch.cuda.device_count()} GPUs")
        dtypes = ["fp32", "bf16"] + (["fp16"] if cuda else [])
        n = (2048 if quick else 4096) if cuda else (512 if quick else 1024)
        sizes = [2**k for k in (range(12, 23, 2) if quick else range(12, 25, 2))]
        raw: dict = {"device": device, "backend": backend, "world": world}
        with Progress(console=err, transient=True) as bar:
            task = bar.add_task("calibrating", total=len(dtypes) + 3)
            raw["matmul_tflops"] = {}
            for dt in dtypes:
                raw["matmul_tflops"][dt] = measure.matmul_tflops(dt, device, n)
                bar.advance(task)
            raw["memory_gb_per_s"] = measure.memory_gb_per_s(device, 256 if quick else 1024)
            bar.advance(task)
            raw["collectives_s"] = measure.collective(world, backend, sizes) if world > 1 else {}
            bar.advance(task)
            if model:
                from planner.inputs.load import load_model
                shape = load_model(model)
                fit = [(1, 16), (1, 64), (2, 64), (4, 64), (4, 128)] if not cuda else [(1, 128), (4, 512), (8, 1024), (16, 1024)]
                tflops, overhead = measure.layer_costs(shape, device, fit)
                raw["model_fit"] = {"model": shape.name, "sizes": fit, "tflops": tflops, "layer_overhead_us": overhead,
                                    "optimizer_tensor_overhead_us": measure.optimizer_tensor_overhead(shape, device, raw["memory_gb_per_s"]),
                                    "loss_element_ns": measure.loss_element_ns(shape.vocab, device)}
                if not cuda and world > 1 and raw["collectives_s"]:
                    ag = measure.fit_collectives(raw["collectives_s"], world)["all_gather"]
                    raw["model_fit"]["shard_unit_overhead_us"] = measure.shard_unit_overhead(shape, world, ag, torch.get_num_threads())
            bar.advance(task)
        fits = measure.fit_collectives(raw["collectives_s"], world) if raw["collectives_s"] else {}
        bw, alpha = fits.get("all_reduce", (1000.0, 1.0))
        per_collective = {k: {"bw_gb_per_s": round(b, 4), "latency_us": round(a, 2)} for k, (b, a) in fits.items()}
        if cuda:
            props = torch.cuda.get_device_properties(0)
            dev_name, mem_gib = props.name, props.total_memory / 2**30
        else:
            dev_name = f"1 CPU process ({os.cpu_count()} cores shared)"
            mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30 / world
        topo = {
            "name": name, "description": f"measured by planner calibrate on {device} ({backend}, {world} processes)",
            "nodes": 1, "gpus_per_node": world,
            "gpu": {"name": dev_name, "mem_gib": round(mem_gib, 2), "reserved_mem_gib": round(min(1.0, mem_gib / 8), 2),
                    "peak_tflops": {k: round(v, 5) for k, v in raw["matmul_tflops"].items()},
                    "compute_efficiency": round(min(1.0, raw["model_fit"]["tflops"] / raw["matmul_tflops"]["fp32"]), 4) if model else 1.0,
                    "hbm_bw_gb_per_s": round(raw["memory_gb_per_s"], 3), "hbm_efficiency": 1.0,
                    "layer_overhead_us": round(raw["model_fit"]["layer_overhead_us"], 2) if model else 0.0,
                    "shard_unit_overhead_us": round(raw.get("model_fit", {}).get("shard_unit_overhead_us", 0.0), 2),
                    "optimizer_tensor_overhead_us": round(raw.get("model_fit", {}).get("optimizer_tensor_overhead_us", 0.0), 2),
                    "loss_element_ns": round(raw.get("model_fit", {}).get("loss_element_ns", 0.0), 3)},
            "intra_node": {"name": f"{backend}, measured", "bw_gb_per_s": round(bw, 4), "latency_us": round(alpha, 2), "efficiency": 1.0,
                           "collectives": per_collective},
            "inter_node": {"name": "not measured (one node)", "bw_gb_per_s": round(bw, 4), "latency_us": round(alpha, 2), "efficiency": 1.0},
            "backend": backend, "comm_overlap": 1.0 if cuda else 0.0,
        }
        Cluster(**topo)  # what we write must load
        text = "# Written by `planner calibrate`: peaks are what large matmuls reached; with --model, compute_efficiency and the *_overhead_us figures come from timed passes and steps of that model.\n" + dump_yaml(topo)
        raw["collectives_s"] = {c: {str(k): v for k, v in d.items()} for c, d in raw["collectives_s"].items()}
        if output:
            Path(output).write_text(text)
            Path(output).with_suffix(".raw.json").write_text(json.dumps(raw, indent=2))
            err.print(f"Wrote {output} and {Path(output).with_suffix('.raw.json')}. Next: `planner recommend -c {output}`.")
        else:
            out.print(text, end="")

"""`planner show`, `planner list`, `planner schema`: learn about the inputs."""

from __future__ import annotations

import json
from typing import Annotated, Optional

import typer
from rich.table import Table

from planner.cli import options as o
from planner.cli.common import Command, Format, bold, emit, escape, handles_errors, out
from planner.inputs import load
from planner.inputs.errors import InputError

SCHEMAS = ("model", "cluster", "workload", "job", "plan", "runtime")


def model_summary(ref: str, seq_len: int) -> dict:
    """Parameter count by component and FLOPs per token of one model."""
    from planner.cost import params
    from planner.cost.symbols import S

    shape = load.load_model(ref)
    vals = S.values(shape)
    breakdown = {k: int(v.subs(vals)) for k, v in params.params_breakdown(S).items()}
    fwd = int(params.forward_flops_per_token(S, seq_len).subs(vals))
    return {
        "name": shape.name,
        "params": sum(breakdown.values()),
        "active_params": int(params.active_params(S).subs(vals)),
        "breakdown": breakdown,
        "flops_per_token": {"seq_len": seq_len, "forward": fwd, "train": 3 * fwd},
        "shape": shape.model_dump(),
    }


def _show_model(ref: str, seq_len: int, fmt: Format) -> None:
    s = model_summary(ref, seq_len)
    if fmt != Format.table:
        return emit(s, fmt)
    t = Table(title=f"{s['name']}: {s['params']:,} parameters")
    t.add_column("component")
    t.add_column("parameters", justify="right")
    t.add_column("share", justify="right")
    for k, v in s["breakdown"].items():
        if v:  # a dense model has no experts or router, a pure MoE model no dense MLP
            t.add_row(k, f"{v:,}", f"{100 * v / s['params']:.1f}%")
    t.add_row(bold("total"), bold(f"{s['params']:,}"), "100%")
    out.print(t)
    f = s["flops_per_token"]
    out.print(f"FLOPs per token at sequence length {f['seq_len']}: forward {f['forward'] / 1e9:.2f} GFLOP, "
              f"training (fwd + bwd) {f['train'] / 1e9:.2f} GFLOP")
    sh = s["shape"]
    out.print(f"shape: {sh['num_layers']} layers, hidden {sh['hidden']}, heads {sh['num_heads']} "
              f"(kv {sh['num_kv_heads'] or sh['num_heads']}), ffn {sh['ffn']}, vocab {sh['vocab']}, dtype {sh['dtype']}")
    if sh["num_experts"]:
        out.print(f"mixture of experts: {sh['num_experts']} experts of width {sh['expert_ffn']}, {sh['experts_per_token']} per token; "
                  f"{s['active_params']:,} parameters active per token (FLOPs), all {s['params']:,} held (memory)")
    if sh["sliding_layers"]:
        out.print(f"sliding-window attention: {sh['sliding_layers']} of {sh['num_layers']} layers attend to the last {sh['sliding_window']} tokens")


def _show_cluster(ref: str, nodes: int | None, fmt: Format) -> None:
    c = load.load_cluster(ref, nodes)
    if fmt != Format.table:
        return emit(c.model_dump() | {"world": c.world}, fmt)
    t = Table(title=f"{c.name}: {c.nodes} node(s) x {c.gpus_per_node} = {c.world} devices")
    t.add_column("what")
    t.add_column("value")
    g = c.gpu
    if c.description:
        t.add_row("description", c.description)
    t.add_row("device", f"{g.name}, {g.mem_gib:g} GiB ({g.reserved_mem_gib:g} reserved)")
    t.add_row("peak dense TFLOP/s", ", ".join(f"{k} {v:g}" for k, v in g.peak_tflops.items()))
    t.add_row("memory bandwidth", f"{g.hbm_bw_gb_per_s:g} GB/s")
    for label, tier in (("intra-node", c.intra_node), ("inter-node", c.inter_node)):
        t.add_row(label, f"{tier.name}: {tier.bw_gb_per_s:g} GB/s per GPU, {tier.latency_us:g} us, "
                         f"efficiency {tier.efficiency:g}, {tier.gpus_per_nic} GPU(s) per NIC")
    t.add_row("backend", c.backend)
    out.print(t)


def register(app: typer.Typer) -> None:
    @app.command(cls=Command)
    @handles_errors
    def show(
        model: Annotated[Optional[str], typer.Argument(help="Bundled model name, config.json (or its folder) or a YAML shape.")] = None,
        cluster: Annotated[Optional[str], typer.Option("--cluster", "-c", help="Show a cluster topology (bundled name or YAML file) instead.")] = None,
        nodes: o.Nodes = None,
        seq_len: Annotated[int, typer.Option(help="Context length for FLOPs per token.", min=1)] = 2048,
        format: Annotated[Format, typer.Option("--format", "-f", help="table, json or yaml.")] = Format.table,
    ) -> None:
        """Parameter count (exact, by component) and FLOPs per token of a model, or a cluster topology."""
        if cluster:
            _show_cluster(cluster, nodes, format)
        elif model:
            _show_model(model, seq_len, format)
        else:
            raise InputError("give a MODEL or --cluster C; `planner list` shows what is bundled")

    @app.command("list", cls=Command)
    @handles_errors
    def list_(format: Annotated[Format, typer.Option("--format", "-f", help="table, json or yaml.")] = Format.table) -> None:
        """Bundled models, cluster topologies and jobs."""
        data = {kind: load.bundled_names(kind) for kind in ("models", "topologies", "runtimes", "jobs")}
        if format != Format.table:
            return emit(data, format)
        for kind, names in data.items():
            out.print(f"[bold]{kind}[/bold]: " + escape(", ".join(names)), markup=True)
        out.print("Next: `planner show NAME` or `planner show --cluster NAME`.")

    @app.command(cls=Command)
    @handles_errors
    def schema(
        kind: Annotated[str, typer.Argument(help=f"One of: {', '.join(SCHEMAS)}.")] = "job",
    ) -> None:
        """JSON Schema of an input format, for editors and validators."""
        from planner.inputs.cluster import Cluster
        from planner.inputs.model import ModelShape
        from planner.inputs.workload import Workload

        from planner.inputs.runtime import Runtime
        from planner.plan import Plan

        models = {"model": ModelShape, "cluster": Cluster, "workload": Workload, "job": load.Job, "plan": Plan, "runtime": Runtime}
        if kind not in models:
            raise InputError(f"schema: unknown kind '{kind}'; choose one of {', '.join(models)}")
        print(json.dumps(load.runtime_file_schema() if kind == "runtime" else models[kind].model_json_schema(), indent=2))

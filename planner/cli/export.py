"""`planner export PLAN --to torchrun|slurm`: the command (or sbatch script) that runs a plan."""

from __future__ import annotations

import shlex
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from planner.cli import options as o
from planner.cli.common import Command, err, handles_errors

SLURM_ONLY = ("partition", "account", "time", "requeue", "container_image")  # LaunchOptions fields torchrun has no use for


class To(str, Enum):
    torchrun = "torchrun"
    slurm = "slurm"


def launch_script(plan_path: str | Path, plan, to: str, **opts) -> str:
    """The launch script of a plan, for `planner export` and `planner recommend --export` alike:
    Slurm-only flags refused for torchrun (exit 2), then `planner.launch.render` with `opts`
    (`LaunchOptions` fields)."""
    from planner.launch import render

    if to == To.torchrun.value:
        for key in SLURM_ONLY:
            if opts.get(key):
                raise typer.BadParameter("only applies to --to slurm", param_hint="--" + key.replace("_", "-"))
    return render(plan_path, plan, to, **opts)


def next_step(to: str, output: str | Path, text: str) -> str:
    """What to do with the written script (its path shell-quoted: the command is for pasting)."""
    path = shlex.quote(str(output))
    run = f"sbatch {path}" if to == To.slurm.value else f"bash {path}" + (" on every node" if "NODE_RANK" in text else "")
    return f"Wrote the {to} launch script to {output}. Next: `{run}`."


def register(app: typer.Typer) -> None:
    @app.command(cls=Command)
    @handles_errors
    def export(
        plan: Annotated[Path, typer.Argument(help="Plan file (YAML) from `planner recommend` or written by hand.")],
        to: Annotated[To, typer.Option("--to", "-t", help="torchrun (a command for one node, or for each node) or slurm (an sbatch script).")],
        output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write the script here (made executable) instead of stdout.")] = None,
        force: Annotated[bool, typer.Option(help="Overwrite --output if it exists.")] = False,
        job_name: Annotated[Optional[str], typer.Option(help="Job name (default: the plan's `job`).")] = None,
        partition: Annotated[Optional[str], typer.Option(help="Slurm partition (default: the topology's hint; none: left out).")] = None,
        account: Annotated[Optional[str], typer.Option(help="Slurm account (default: the topology's hint; none: left out).")] = None,
        time: Annotated[Optional[str], typer.Option("--time", help="Slurm time limit, HH:MM:SS (default: the topology's hint).")] = None,
        port: Annotated[int, typer.Option(help="Rendezvous port on the head node.", min=1, max=65535)] = 29500,
        steps: Annotated[Optional[int], typer.Option(help="Passed to `planner run --steps`.", min=1)] = None,
        metrics_out: Annotated[Optional[Path], typer.Option(help="Passed to `planner run --metrics-out` (made absolute).")] = None,
        random_init: o.RandomInit = False,
        python: Annotated[Optional[str], typer.Option(help="Python with kd-planner and torch that runs torchrun (default: this one, by absolute path; `python3`: the one on PATH; PYTHON=... at launch wins).")] = None,
        checkpoint_dir: Annotated[Optional[Path], typer.Option(help="Passed to `planner run --checkpoint-dir` (made absolute; default: the plan's training.checkpoint_dir).")] = None,
        checkpoint_every: Annotated[Optional[int], typer.Option(help="Passed to `planner run --checkpoint-every` (default: the plan's training.checkpoint_every).", min=0)] = None,
        requeue: Annotated[bool, typer.Option(help="Slurm only: before the time limit (USR1, --signal-s) the run saves a checkpoint and stops, and the job is requeued to resume from it; needs a checkpoint folder.")] = False,
        signal_s: Annotated[int, typer.Option(help="Slurm only, with --requeue: seconds before the time limit that the run is asked to stop (enough for one step and a checkpoint).", min=1)] = 120,
        module: Annotated[Optional[list[str]], typer.Option(help="`module load NAME` before the run (repeatable).")] = None,
        container_image: Annotated[Optional[str], typer.Option(help="Slurm only: run the tasks in this container image (`srun --container-image`, pyxis/enroot).")] = None,
        server_port: Annotated[int, typer.Option(help="Served roles (a vllm-server teacher, dedicated rollout): the first vLLM server's port; each further replica takes the next.", min=1, max=65535)] = 8000,
        health_timeout: Annotated[int, typer.Option(help="Served roles: seconds to wait for each server's /health before the job fails.", min=1)] = 900,
    ) -> None:
        """Write the torchrun command or Slurm sbatch script that runs PLAN with `planner run`."""
        from planner.files import check_output
        from planner.launch import write_script

        if output is not None:
            check_output(output, force, "-o")
        text = launch_script(plan, None, to.value, job_name=job_name, partition=partition, account=account, time=time,
                             port=port, steps=steps, metrics_out=metrics_out, python=python, checkpoint_dir=checkpoint_dir,
                             checkpoint_every=checkpoint_every, requeue=requeue, signal_s=signal_s, modules=tuple(module or ()),
                             container_image=container_image, random_init=random_init,
                             server_port=server_port, health_timeout_s=health_timeout)
        if output is None:
            print(text, end="")
            return
        write_script(text, output, force=force)
        err.print(next_step(to.value, output, text))

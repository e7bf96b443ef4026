"""Launcher export: turn a plan file into a `torchrun` command or a Slurm `sbatch` script.

`render(plan_path, plan, "slurm", steps=3)` is the one entry point (the CLI's `planner export`
and anything else that wants a script call it); `write_script` writes it without clobbering.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from planner.files import write_text
from planner.inputs.errors import InputError
from planner.launch import slurm, torchrun
from planner.launch.options import LaunchOptions
from planner.plan import Plan, load_plan, plan_cluster

Target = Literal["torchrun", "slurm"]
RENDERERS = {"torchrun": torchrun.render, "slurm": slurm.render}

__all__ = ["LaunchOptions", "Target", "plan_cluster", "render", "write_script"]


def render(plan_path: str | Path, plan: Plan | None = None, to: Target = "slurm", **opts) -> str:
    """The launch script for the plan file at `plan_path` (loaded when `plan` is None).

    `opts` are `LaunchOptions` fields: job_name, partition, account, time, port, steps,
    metrics_out, python, random_init. The plan path is written absolute; every value is shell-quoted.
    """
    if to not in RENDERERS:
        raise InputError(f"--to: {to!r}: choose one of {', '.join(RENDERERS)}")
    plan = plan if plan is not None else load_plan(plan_path)
    refuse_unrunnable(plan_path, plan)
    return RENDERERS[to](plan_path, plan, plan_cluster(plan_path, plan), LaunchOptions(**opts))


def refuse_unrunnable(plan_path: str | Path, plan: Plan) -> None:
    """A script runs `planner run`, the bundled executor: refuse, before writing anything, a plan
    whose teacher split it does not run (its runtime's capability lists, `runtimes/kd-planner.yaml`;
    an expert-parallel teacher is plan-only), rather than fail on every rank after the launch."""
    from planner.inputs.load import DEFAULT_RUNTIME, load_runtime
    from planner.strategy import Strategy

    st = Strategy.from_plan(plan)
    why = load_runtime(DEFAULT_RUNTIME).cannot_run(st.teacher, st.placement, st.ep, moe=bool(plan.teacher.shape.num_experts))
    if why:
        field = "teacher.ep" if st.ep > 1 else "teacher.strategy"
        raise InputError(f"{plan_path}: {field}: {st.teacher_part}: {why}, and the exported script runs it (`planner run`); "
                         f"the plan was made for the {plan.runtime} runtime: launch it with that framework, or re-plan under kd-planner")


def write_script(text: str, path: str | Path, force: bool = False) -> Path:
    """Write an executable script (`planner.files.write_text`: never over an existing file unless `force`)."""
    return write_text(path, text, force, executable=True)

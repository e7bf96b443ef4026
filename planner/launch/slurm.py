"""An `sbatch` script: one task per node, each a `torchrun` that meets the others by c10d rendezvous
on the first node of the allocation."""

from __future__ import annotations

from pathlib import Path

from planner.inputs.cluster import Cluster
from planner.launch import env
from planner.launch.options import LaunchOptions, header, planner_run, python_line, q, slug
from planner.plan import Plan


def directives(plan: Plan, cluster: Cluster, opts: LaunchOptions, job: str) -> list[str]:
    """The `#SBATCH` lines; flags win over the topology's hints, unset ones are left out.
    sbatch reads these lines itself (no shell), and it strips shell-style quotes, so `q` fits."""
    hints = cluster.slurm
    lines = [f"#SBATCH --job-name={q(job)}", f"#SBATCH --nodes={plan.nodes}", "#SBATCH --ntasks-per-node=1"]
    if plan.backend != "gloo":  # gloo (cpu-local) asks for no GPUs
        flag = hints.gpus_flag.lstrip("-")  # '--gpus-per-node' -> --gpus-per-node=8, '--gres=gpu' -> --gres=gpu:8
        lines.append(f"#SBATCH --{q(f'{flag}:{plan.gpus_per_node}' if '=' in flag else f'{flag}={plan.gpus_per_node}')}")
    for key, value in (("cpus-per-task", hints.cpus_per_task), ("time", opts.time or hints.time_limit),
                       ("partition", opts.partition or hints.partition), ("account", opts.account or hints.account),
                       ("output", f"{slug(job)}-%j.out"), ("error", f"{slug(job)}-%j.err")):
        if value is not None:
            lines.append(f"#SBATCH --{key}={q(value)}")
    return lines


def render(plan_path: str | Path, plan: Plan, cluster: Cluster, opts: LaunchOptions) -> str:
    job = opts.job_name or plan.job
    srun = ["srun", "--kill-on-bad-exit=1"]
    if cluster.slurm.cpus_per_task:  # srun does not inherit --cpus-per-task from sbatch (Slurm >= 22.05)
        srun.append(f"--cpus-per-task={cluster.slurm.cpus_per_task}")
    lines = ["#!/bin/bash", *directives(plan, cluster, opts, job),
             *header(plan, plan_path, q(job)),
             f"# Submit with `sbatch THIS_FILE`; logs go to {slug(job)}-JOBID.out and .err in the folder sbatch ran in.",
             "set -euo pipefail",
             *python_line(opts), *env.exports(cluster, plan.backend),
             "# The first node of the allocation hosts the rendezvous; every node runs one torchrun.",
             "# (sed, not `head -n 1`: under pipefail head's early exit can fail scontrol with SIGPIPE.)",
             'head=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | sed -n 1p)',
             f'echo "kd-planner: job $SLURM_JOB_ID on $SLURM_NNODES node(s), rendezvous at $head:{int(opts.port)}"',
             " ".join(srun) + ' "$PYTHON" -m torch.distributed.run \\',
             f'    --nnodes "$SLURM_NNODES" --nproc-per-node {plan.gpus_per_node} \\',
             f'    --rdzv-id "$SLURM_JOB_ID" --rdzv-backend c10d --rdzv-endpoint "$head:{int(opts.port)}" \\',
             "    " + " ".join(planner_run(plan_path, opts))]
    return "\n".join(lines) + "\n"

"""An `sbatch` script: one task per node, each a `torchrun` that meets the others by c10d rendezvous
on the first node of the allocation."""

from __future__ import annotations

from pathlib import Path

from planner.inputs.cluster import Cluster
from planner.launch import env
from planner.launch.options import LaunchOptions, header, job_name, lines_to_script, planner_run, python_line, q, slug
from planner.plan import Plan


def directives(plan: Plan, cluster: Cluster, opts: LaunchOptions, job: str) -> list[str]:
    """The `#SBATCH` lines; flags win over the topology's hints, unset ones are left out.
    sbatch reads these lines itself (no shell), and it strips shell-style quotes, so `q` fits.
    A line break would end the directive and start a command (bash reads it as a comment), so `q`
    refuses one and names where the value came from: the flag or the topology's `slurm:` hint."""
    hints = cluster.slurm
    lines = [f"#SBATCH --job-name={q(job, 'job')}", f"#SBATCH --nodes={plan.nodes}", "#SBATCH --ntasks-per-node=1"]
    if plan.backend != "gloo":  # gloo (cpu-local) asks for no GPUs
        flag = hints.gpus_flag.lstrip("-")  # '--gpus-per-node' -> --gpus-per-node=8, '--gres=gpu' -> --gres=gpu:8
        lines.append(f"#SBATCH --{q(f'{flag}:{plan.gpus_per_node}' if '=' in flag else f'{flag}={plan.gpus_per_node}', 'slurm.gpus_flag (topology)')}")
    if hints.cpus_per_task is not None:
        lines.append(f"#SBATCH --cpus-per-task={int(hints.cpus_per_task)}")
    for key, flag, hint in (("time", opts.time, hints.time_limit), ("partition", opts.partition, hints.partition),
                            ("account", opts.account, hints.account)):
        if flag or hint is not None:
            where = f"--{key}" if flag else f"slurm.{'time_limit' if key == 'time' else key} (topology)"
            lines.append(f"#SBATCH --{key}={q(flag or hint, where)}")
    lines += [f"#SBATCH --output={slug(job)}-%j.out", f"#SBATCH --error={slug(job)}-%j.err"]
    return lines


def render(plan_path: str | Path, plan: Plan, cluster: Cluster, opts: LaunchOptions) -> str:
    job = job_name(plan, opts)
    srun = ["srun", "--kill-on-bad-exit=1"]
    if cluster.slurm.cpus_per_task:  # srun does not inherit --cpus-per-task from sbatch (Slurm >= 22.05)
        srun.append(f"--cpus-per-task={cluster.slurm.cpus_per_task}")
    lines = ["#!/bin/bash", *directives(plan, cluster, opts, job),
             *header(plan, plan_path, q(job, "job")),
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
    return lines_to_script(lines)

"""An `sbatch` script: one task per node, each a `torchrun` that meets the others by c10d rendezvous
on the first node of the allocation.

With `requeue`, Slurm sends USR1 to the batch shell `signal_s` seconds before the time limit
(`--signal=B:USR1@T`; not to torchrun, whose agent would die of it). The shell's trap creates a
stop file in the checkpoint folder; `planner run --stop-file` sees it at the end of a step, saves a
checkpoint, removes the file and exits 0; the shell then requeues the job (`scontrol requeue`),
which resumes from that checkpoint. A run that ended anyway leaves the file, and is not requeued."""

from __future__ import annotations

from pathlib import Path

from planner.inputs.cluster import Cluster
from planner.launch import env, servers
from planner.inputs.errors import InputError
from planner.launch.options import (LaunchOptions, header, job_name, lines_to_script, module_lines, planner_run, python_line, q,
                                    run_summary, slug)
from planner.plan import Plan

STOP_NAME = ".kd-planner-stop"  # in the checkpoint folder, which every node sees


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
    if opts.requeue:  # a requeued job appends to its logs rather than truncating them
        lines += ["#SBATCH --requeue", f"#SBATCH --signal=B:USR1@{int(opts.signal_s)}", "#SBATCH --open-mode=append"]
    return lines


def stop_file(plan: Plan, opts: LaunchOptions) -> str | None:
    """The stop file's path as a shell word (None without requeue); needs a checkpoint folder."""
    if not opts.requeue:
        return None
    folder = opts.checkpoint_dir or plan.training.checkpoint_dir
    if folder is None:
        raise InputError("--requeue: a requeued run resumes from its checkpoints; give --checkpoint-dir or set "
                         "training.checkpoint_dir in the plan")
    where = "--checkpoint-dir" if opts.checkpoint_dir else "training.checkpoint_dir"
    folder = Path(folder).expanduser().resolve() if opts.checkpoint_dir else Path(folder)  # the plan's: from the run's folder, as the executor reads it
    return q(str(folder / STOP_NAME), where)


def requeue_lines(stop: str, srun_words: list[str]) -> list[str]:
    """srun in the background, a USR1 trap that asks the run to stop, a wait that survives the trap,
    and a requeue when the run stopped on that request."""
    return ["# Requeue: USR1 before the time limit asks the run to save and stop (a stop file), then the job is requeued.",
            "# A requeued job (SLURM_RESTART_COUNT > 0) may replace what its own earlier part wrote (--force).",
            'force=""; if [ "${SLURM_RESTART_COUNT:-0}" -gt 0 ]; then force=--force; fi',
            f"STOP={stop}",
            'mkdir -p "$(dirname "$STOP")" && rm -f "$STOP"',
            "asked=0",
            'on_usr1() { asked=1; echo "kd-planner: USR1: asking the run to save a checkpoint and stop"; touch "$STOP"; }',
            "trap on_usr1 USR1",
            *srun_words[:-1], srun_words[-1] + " &",
            "pid=$!",
            "# `wait` returns early when the trap runs: wait again until srun has ended.",
            "set +e",
            'wait "$pid"; status=$?',
            'while [ "$status" -gt 128 ] && kill -0 "$pid" 2>/dev/null; do wait "$pid"; status=$?; done',
            "set -e",
            'if [ "$asked" = 1 ] && [ "$status" = 0 ] && [ ! -e "$STOP" ]; then',
            '    echo "kd-planner: the run saved and stopped; requeueing job $SLURM_JOB_ID"',
            '    scontrol requeue "$SLURM_JOB_ID"',
            "fi",
            'exit "$status"']


def trainer_nodes(plan: Plan) -> tuple[int, int]:
    """(nodes, processes per node) of the trainer's torchrun: its ranks come first, so the first
    nodes; torchrun starts as many on each, so they must fill those nodes alike."""
    counts = [n for n in (sum(1 for r in plan.torch_ranks if r // plan.gpus_per_node == k) for k in range(plan.nodes)) if n]
    if len(set(counts)) > 1:
        raise InputError(f"the trainer's {plan.torch_world} ranks fill its {len(counts)} nodes unevenly ({', '.join(map(str, counts))} "
                         "per node); torchrun starts as many on each node: give served roles whole nodes, or one node's tail")
    return len(counts), counts[0]


def srun_words(cluster: Cluster, opts: LaunchOptions) -> list[str]:
    words = []
    if cluster.slurm.cpus_per_task:  # srun does not inherit --cpus-per-task from sbatch (Slurm >= 22.05)
        words.append(f"--cpus-per-task={cluster.slurm.cpus_per_task}")
    if opts.container_image:  # pyxis/enroot: the job's tasks run inside the image
        words.append(f"--container-image={q(opts.container_image, '--container-image')}")
    return words


def server_lines(plan: Plan, cluster: Cluster, served: list[servers.Server], opts: LaunchOptions, job: str) -> list[str]:
    """One srun step per server replica, in the background on its node (`--overlap`: it shares the
    node with the trainer's step; CUDA_VISIBLE_DEVICES picks its GPUs), then a health wait per server."""
    lines = servers.prelude(len(served), opts.health_timeout_s)
    lines += ['mapfile -t nodes < <(scontrol show hostnames "$SLURM_JOB_NODELIST")']
    for s in served:
        host = f'"${{nodes[{s.node}]}}"'
        log = q(f"{s.log(job)}-%j.log", "job")
        lines += [f"# {s.role} replica {s.index}: node {s.node}, GPUs {','.join(map(str, s.gpus))}, port {s.port}; its log {s.log(job)}-JOBID.log.",
                  " ".join(["srun", "--overlap", "--nodes=1", "--ntasks=1", f"--nodelist={host}", f"--output={log}",
                            *srun_words(cluster, opts), *servers.command(plan, s, host, opts)]) + " &",
                  'server_pids+=("$!")']
    for i, s in enumerate(served):
        log = q(s.log(job), "job") + '-"$SLURM_JOB_ID".log'
        lines.append(f'wait_healthy "http://${{nodes[{s.node}]}}:{s.port}" "${{server_pids[{i}]}}" {log}')
    return lines + [servers.started(len(served))]


def render(plan_path: str | Path, plan: Plan, cluster: Cluster, opts: LaunchOptions) -> str:
    job = job_name(plan, opts)
    served = servers.servers(plan, opts)
    srun = ["srun", "--kill-on-bad-exit=1"]
    nnodes, nproc = '"$SLURM_NNODES"', plan.gpus_per_node
    if served:  # the trainer's step shares its nodes with the servers' steps
        k, nproc = trainer_nodes(plan)
        srun += ["--overlap", f"--nodes={k}", f"--ntasks={k}", "--ntasks-per-node=1"]
        nnodes = str(k)
    srun += srun_words(cluster, opts)
    stop = stop_file(plan, opts)
    urls = servers.url_words(served, lambda s: f"${{nodes[{s.node}]}}")
    run = [" ".join(srun) + ' "$PYTHON" -m torch.distributed.run \\',
           f'    --nnodes {nnodes} --nproc-per-node {nproc} \\',
           f'    --rdzv-id "$SLURM_JOB_ID" --rdzv-backend c10d --rdzv-endpoint "$head:{int(opts.port)}" \\',
           "    " + " ".join(planner_run(plan_path, opts, '"$STOP"' if stop else None) + urls) + (" $force" if stop else "")]
    lines = ["#!/bin/bash", *directives(plan, cluster, opts, job),
             *header(plan, plan_path, q(job, "job")), *run_summary(plan, opts),
             f"# Submit with `sbatch THIS_FILE`; logs go to {slug(job)}-JOBID.out and .err in the folder sbatch ran in.",
             "set -euo pipefail", *module_lines(opts),
             *python_line(opts), *env.exports(cluster, plan.backend), *env.error_handling(plan.backend),
             "# The first node of the allocation hosts the rendezvous; every node runs one torchrun.",
             "# (sed, not `head -n 1`: under pipefail head's early exit can fail scontrol with SIGPIPE.)",
             'head=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | sed -n 1p)',
             f'echo "kd-planner: job $SLURM_JOB_ID on $SLURM_NNODES node(s), rendezvous at $head:{int(opts.port)}"',
             *(server_lines(plan, cluster, served, opts, job) if served else []),
             *(requeue_lines(stop, run) if stop else run)]
    return lines_to_script(lines)

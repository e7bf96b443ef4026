"""A `torchrun` launch script: `--standalone` on one node; on several, the command every node runs."""

from __future__ import annotations

from pathlib import Path

from planner.inputs.cluster import Cluster
from planner.launch import env
from planner.launch.options import LaunchOptions, header, job_name, lines_to_script, module_lines, planner_run, python_line, q, run_summary
from planner.plan import Plan


def render(plan_path: str | Path, plan: Plan, cluster: Cluster, opts: LaunchOptions) -> str:
    job = job_name(plan, opts)
    lines = ["#!/usr/bin/env bash", *header(plan, plan_path, q(job, "job")), *run_summary(plan, opts)]
    torchrun = ['"$PYTHON"', "-m", "torch.distributed.run"]
    if plan.nodes == 1:
        torchrun += ["--standalone", "--nproc-per-node", str(plan.gpus_per_node)]
    else:
        lines += [f"# Run this script once on each of the {plan.nodes} nodes, with",
                  f"#   NODE_RANK  0 on the head node, 1..{plan.nodes - 1} on the others (e.g. NODE_RANK=$SLURM_NODEID),",
                  "#   HEAD       the head node's hostname or IP, reachable from every node,",
                  "# e.g. `NODE_RANK=0 HEAD=node001 ./launch.sh`. All nodes meet at HEAD:PORT (c10d rendezvous)."]
        torchrun += ["--nnodes", str(plan.nodes), "--nproc-per-node", str(plan.gpus_per_node),
                     "--node-rank", '"$NODE_RANK"', "--rdzv-backend", "c10d",
                     "--rdzv-endpoint", f'"$HEAD":{int(opts.port)}', "--rdzv-id=" + q(job, "job")]  # `=`: a name that starts with '-' is not an option
    lines += ["set -euo pipefail", *module_lines(opts)]
    if plan.nodes > 1:
        lines += [f': "${{NODE_RANK:?set NODE_RANK: 0 on the head node, 1..{plan.nodes - 1} on the others}}"',
                  ': "${HEAD:?set HEAD to the head node hostname or IP}"']
    lines += python_line(opts) + env.exports(cluster, plan.backend) + env.error_handling(plan.backend)
    lines += ["exec " + " ".join(torchrun) + " \\", "    " + " ".join(planner_run(plan_path, opts))]
    return lines_to_script(lines)

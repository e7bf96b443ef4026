"""A `torchrun` launch script: `--standalone` on one node; on several, the command every node runs."""

from __future__ import annotations

from pathlib import Path

from planner.inputs.cluster import Cluster
from planner.launch import env, servers
from planner.inputs.errors import InputError
from planner.launch.options import LaunchOptions, header, job_name, lines_to_script, module_lines, planner_run, python_line, q, run_summary
from planner.plan import Plan

LOCAL = "127.0.0.1"  # one node: the trainer reaches its servers on the loopback


def render(plan_path: str | Path, plan: Plan, cluster: Cluster, opts: LaunchOptions) -> str:
    job = job_name(plan, opts)
    lines = ["#!/usr/bin/env bash", *header(plan, plan_path, q(job, "job")), *run_summary(plan, opts)]
    torchrun = ['"$PYTHON"', "-m", "torch.distributed.run"]
    served = servers.servers(plan, opts)
    if served and plan.nodes > 1:
        raise InputError(f"--to torchrun: a plan with served roles on {plan.nodes} nodes needs their hosts before the trainer starts; "
                         "export it with --to slurm (or run it on one node)")
    if plan.nodes == 1:
        torchrun += ["--standalone", "--nproc-per-node", str(plan.torch_world)]
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
    run = "    " + " ".join(planner_run(plan_path, opts))
    if not served:
        lines += ["exec " + " ".join(torchrun) + " \\", run]
        return lines_to_script(lines)
    lines += server_lines(plan, served, opts, job)
    lines += ["# The trainer, once every server is healthy (not exec'd: the EXIT trap stops the servers after it).",
              " ".join(torchrun) + " \\", run + " \\", "    " + " ".join(servers.url_words(served, lambda s: LOCAL))]
    return lines_to_script(lines)


def server_lines(plan: Plan, served: list[servers.Server], opts: LaunchOptions, job: str) -> list[str]:
    """Each server in a session of its own (setsid: the trap stops its whole process group), its
    output in JOB-ROLE-I.log, then a health wait per server."""
    lines = servers.prelude(len(served), opts.health_timeout_s)
    for s in served:
        log = q(s.log(job) + ".log", "job")
        lines += [f"# {s.role} replica {s.index}: GPUs {','.join(map(str, s.gpus))}, port {s.port}.",
                  "setsid " + " ".join(servers.command(plan, s, LOCAL, opts)) + f" > {log} 2>&1 &",
                  'server_pids+=("-$!")']
    for i, s in enumerate(served):
        lines.append(f'wait_healthy "http://{LOCAL}:{s.port}" "${{server_pids[{i}]}}" {q(s.log(job) + ".log", "job")}')
    return lines + [servers.started(len(served))]
    return lines_to_script(lines)

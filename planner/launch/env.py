"""Environment variables the topology asks for (its `nccl_env`), as `export` lines."""

from __future__ import annotations

import re

from planner.inputs.cluster import Cluster
from planner.inputs.errors import InputError
from planner.launch.options import q, text

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def variables(cluster: Cluster, backend: str) -> dict[str, str]:
    """The topology's `nccl_env`; on gloo also GLOO_SOCKET_IFNAME, copied from NCCL_SOCKET_IFNAME
    when that is a plain interface list (gloo has no `^exclude` syntax)."""
    env = dict(cluster.nccl_env)
    nic = env.get("NCCL_SOCKET_IFNAME")
    if backend == "gloo" and nic and not nic.startswith("^") and "GLOO_SOCKET_IFNAME" not in env:
        env["GLOO_SOCKET_IFNAME"] = nic
    bad = [k for k in env if not _NAME.fullmatch(k)]
    if bad:
        raise InputError(f"topology {cluster.name!r}: nccl_env: {', '.join(map(repr, bad))}: not a valid variable name")
    return env


def exports(cluster: Cluster, backend: str) -> list[str]:
    env = variables(cluster, backend)
    if not env:
        return []
    name = text(cluster.name, "topology name")
    return [f"# Network settings from the topology {name} (nccl_env)."] + [f"export {k}={q(v, f'nccl_env.{k} (topology)')}" for k, v in env.items()]


def error_handling(backend: str) -> list[str]:
    """Variables that make a failure end the job with a report instead of a hang: a Python stack on
    a crash (faulthandler), and on NCCL a failed or timed-out collective that tears the process
    group down (`TORCH_NCCL_ASYNC_ERROR_HANDLING=1`) with a flight-recorder dump. Each keeps a value
    the environment already sets."""
    env = {"PYTHONFAULTHANDLER": "1"}
    if backend == "nccl":
        env |= {"TORCH_NCCL_ASYNC_ERROR_HANDLING": "1", "TORCH_NCCL_DUMP_ON_TIMEOUT": "1"}
    return ["# Fail loudly rather than hang (kept if already set)."] + [f'export {k}="${{{k}:-{v}}}"' for k, v in env.items()]

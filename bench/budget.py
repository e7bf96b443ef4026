"""Run a script or module under an enforced per-process memory budget (used by bench/vs_trl.py).

    torchrun ... bench/budget.py --budget-mib 300 --report peak.json -- -m planner run plan.yaml ...
    torchrun ... bench/budget.py --budget-mib 300 --report peak.json -- bench/trl_gkd_worker.py ...

Every side of the comparison starts here, so they share one baseline: this process first imports
the union of what either side imports (torch, transformers, accelerate, datasets, trl, deepspeed),
then reads its resident size (VmRSS) and allows `--budget-mib` above it. The budget is enforced on
resident memory in two ways: a watchdog thread reads /proc/self/statm every 20 ms and ends the
process (exit 137, "over budget" on stderr) as soon as it is over; and at exit the kernel's exact
high-water mark (VmHWM) is checked, so a peak shorter than 20 ms fails the run too (exit 137).
Without `--budget-mib` nothing is enforced; the peak is still measured.

Why not RLIMIT_AS or a cgroup: the only memory cgroup here is the sandbox's own (the machinery's,
not ours to split), and address space is not memory: `planner run` reserves about 1.2 GiB of
address space it never touches (thread stacks, malloc arenas, mappings) against TRL's 0.3 GiB,
while both peak at about the same resident size on the tiny models, so an address-space limit
would measure reservations, not use.

`--report FILE` (`{rank}` is replaced by the rank) writes {"baseline_rss_bytes", "peak_rss_bytes",
"budget_bytes", "over_budget"} at exit.
"""

from __future__ import annotations

import atexit
import json
import os
import runpy
import sys
import threading
import time

PAGE = os.sysconf("SC_PAGE_SIZE")


def status(key: str) -> int:
    """A /proc/self/status field in bytes (the kernel reports kB)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


def main() -> None:
    argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)
    own, target = argv[:split], argv[split + 1:]
    budget_mib = report = None
    for i, a in enumerate(own):
        if a == "--budget-mib":
            budget_mib = float(own[i + 1])
        elif a == "--report":
            report = own[i + 1]
    if not target:
        sys.exit("usage: budget.py [--budget-mib MIB] [--report FILE] -- SCRIPT|-m MODULE [ARGS...]")
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    import accelerate  # noqa: F401  - the shared baseline: everything either side imports
    import datasets  # noqa: F401
    import deepspeed  # noqa: F401
    import torch  # noqa: F401
    import torch.distributed  # noqa: F401
    import transformers  # noqa: F401
    import trl  # noqa: F401

    base = status("VmRSS")
    limit = None if budget_mib is None else base + int(budget_mib * 2**20)
    rank = os.environ.get("RANK", "0")

    def write(peak: int) -> None:
        if report:
            with open(report.replace("{rank}", rank), "w") as f:
                json.dump({"rank": int(rank), "baseline_rss_bytes": base, "peak_rss_bytes": peak,
                           "budget_bytes": None if limit is None else limit - base,
                           "over_budget": limit is not None and peak > limit}, f)

    def over(peak: int) -> None:
        write(peak)
        sys.stderr.write(f"rank {rank}: over budget: resident {peak / 2**20:.1f} MiB, budget {budget_mib:g} MiB "
                         f"above the shared baseline of {base / 2**20:.1f} MiB\n")
        sys.stderr.flush()
        os._exit(137)

    def watchdog() -> None:
        while True:
            with open("/proc/self/statm") as f:
                rss = int(f.read().split()[1]) * PAGE
            if rss > limit:
                over(rss)
            time.sleep(0.02)

    def at_exit() -> None:
        peak = status("VmHWM")
        if limit is not None and peak > limit:
            over(peak)
        write(peak)

    atexit.register(at_exit)
    if limit is not None:
        threading.Thread(target=watchdog, daemon=True, name="budget-watchdog").start()
    if target[0] == "-m":
        sys.argv = [target[1], *target[2:]]
        runpy.run_module(target[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv = target
        runpy.run_path(target[0], run_name="__main__")


if __name__ == "__main__":
    main()

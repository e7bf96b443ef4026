"""kd-planner's executor vs TRL 1.16's GKDTrainer and DistillationTrainer: samples/s, phases, first-step
losses and an enforced memory budget, side by side in one run.

    .venv/bin/pip install -e '.[executor,bench]' torch==2.13.0   # keep the pinned CPU torch
    .venv/bin/python bench/vs_trl.py [--sizes tiny,27m,27m-32k] [--rounds 3] [--steps 10] [--warmup 3] [--keep DIR]

Both sides train the same random Llamas (bench/vs_trl_inputs.py: per size, a teacher/student pair
saved with `save_pretrained` and loaded from there by both), with the same local byte-level
tokenizer (with a chat template) on the same chat `messages` JSONL (every sample exactly
prompt_len + completion_len tokens, so no padding), the same batch per rank (global batch 8 on 2
gloo ranks, OMP_NUM_THREADS=1), beta 0.5, temperature 1, fp32, AdamW lr 1e-4, max grad norm 1.0,
and the same data order (accelerate's SeedableRandomSampler and `planner run` both take
`torch.randperm(n)` seeded with seed + epoch and deal micro-batches round-robin over the ranks).
Every process starts in bench/budget.py, which imports what both sides import and measures the
resident memory each side adds above that shared baseline.

Per size, each a `torchrun --nproc-per-node 2` job, `planner recommend` on cpu-local choosing our plan:
  off-policy (lmbda 0):  planner run <recommended>  vs  TRL GKDTrainer + DDP (teacher replica per rank)
  on-policy  (lmbda 1):  planner run <recommended>  vs  TRL DistillationTrainer + DDP (always on-policy)
Under an enforced budget (--budget-size, --budget-mib: resident MiB per process above the baseline, by default
27m-32k at 1300 MiB, where TRL's DDP replica does not fit at any micro-batch (nor, in most runs, its ZeRO-3),
enforced by bench/budget.py; a process over it is ended and its side fails), the plan recommended on
cpu-local with that memory vs TRL GKDTrainer with DDP and with DeepSpeed ZeRO-3 (teacher sharded
by TRL's `prepare_deepspeed`), each at the largest micro-batch (4, 2, 1) that fits, found in round 1.
Runs alternate round after round; each run's first --warmup steps are left out; medians shown. At
lmbda 0 the per-step losses of `planner run` and TRL GKDTrainer must agree over --check-steps steps.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
import vs_trl_inputs as inputs  # noqa: E402

BIN = Path(sys.executable).parent
OVER_BUDGET = 137  # bench/budget.py's exit status for a process over the budget
PHASES = ("teacher", "generation", "student_forward", "loss", "backward", "optimizer", "other")
OURS_PHASES = {"teacher": "teacher", "generation": "generation", "student_forward": "student_forward", "loss_forward": "loss", "backward": "backward",
               "optimizer": "optimizer"}


@dataclass
class Case:
    key: str
    size: str
    lmbda: float
    plan: Path
    trl: list[tuple[str, str]]  # (trainer, mode)
    budget_mib: float | None = None
    results: dict = field(default_factory=dict)  # side -> list of run results


def sh(cmd: list, env: dict, log: Path) -> int:
    with log.open("a") as f:
        f.write("$ " + " ".join(map(str, cmd)) + "\n")
        f.flush()
        return subprocess.call([str(c) for c in cmd], env=env, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)


def fail(cmd: list, rc: int, log: Path) -> None:
    sys.exit(f"failed (exit {rc}): {' '.join(map(str, cmd))}\n{''.join(log.read_text().splitlines(True)[-40:])}")


def launch(work: Path, name: str, budget_mib: float | None, target: list) -> list:
    """torchrun over 2 ranks, each process starting in bench/budget.py (the shared baseline, the budget)."""
    own = ["--report", work / f"{name}.peak-{{rank}}.json"] + (["--budget-mib", budget_mib] if budget_mib is not None else [])
    return [BIN / "torchrun", "--standalone", "--nproc-per-node=2", ROOT / "bench" / "budget.py", *own, "--", *target]


def peak_mib(work: Path, name: str) -> float | None:
    peaks = []
    for p in work.glob(f"{name}.peak-*.json"):
        r = json.loads(p.read_text())
        peaks.append((r["peak_rss_bytes"] - r["baseline_rss_bytes"]) / 2**20)
    return max(peaks) if peaks else None


def run_ours(case: Case, r: int, work: Path, env: dict, log: Path, args) -> dict:
    name = f"ours-{case.key}-{r}"
    out = work / f"{name}.json"
    cmd = launch(work, name, case.budget_mib, ["-m", "planner", "run", case.plan, "--steps", args.steps, "--warmup-steps", args.warmup,
                                               "--seed", args.seed, "--tokenizer", work / "tokenizer", "--dataset", work / f"{case.size}.jsonl",
                                               "--metrics-out", out, "--force", "--no-progress", "--phases"])
    if failed := run_case(cmd, case, env, log, work, name):
        return failed
    m = json.loads(out.read_text())
    phases = [{OURS_PHASES.get(k, k): v for k, v in p.items()} for p in m["phase_times_s"][m["warmup_steps"]:]]  # a phase of a newer executor keeps its name
    for p, t in zip(phases, m["step_times_s"][m["warmup_steps"]:]):
        p["other"] = t - sum(p.values())
    return {"status": "ok", "samples_per_s": m["samples_per_s"], "loss": m["loss"], "phases": phases, "peak_mib": peak_mib(work, name),
            "layout": layout(m), "micro_batch": m["micro_batch"], "grad_accum": m["grad_accum"], "engines": m.get("engines"),
            "tokens_per_sample": m["tokens_per_s"] / m["samples_per_s"] if m.get("tokens_per_s") and m["samples_per_s"] else None}


def run_case(cmd, case: Case, env: dict, log: Path, work: Path, name: str) -> dict | None:
    """Run one side; None when it ran, else why not (over an enforced budget, or failed). Without a
    budget a failure stops the bench."""
    rc = sh(cmd, env, log)
    if rc and case.budget_mib is None:
        fail(cmd, rc, log)
    if rc:
        return {"status": "over budget" if rc == OVER_BUDGET or "over budget" in log.read_text()[-4000:] else f"failed ({rc})", "peak_mib": peak_mib(work, name)}
    return None


def run_trl(case: Case, trainer: str, mode: str, micro_batch: int, r: int, work: Path, env: dict, log: Path, args, extra: list = (),
            tag: str = "") -> dict:
    """One TRL run (bench/trl_gkd_worker.py); `extra`: more worker flags (e.g. --vllm colocate), `tag` names them in the files."""
    name = f"trl-{trainer}-{mode}{tag}-{case.key}-mb{micro_batch}-{r}"
    out = work / f"{name}.json"
    s = inputs.SIZES[case.size]
    cmd = launch(work, name, case.budget_mib, [ROOT / "bench" / "trl_gkd_worker.py", "--trainer", trainer, "--mode", mode,
                                               "--teacher", work / f"{case.size}-teacher", "--student", work / f"{case.size}-student",
                                               "--tokenizer", work / "tokenizer", "--data", work / f"{case.size}.jsonl", "--out", out,
                                               "--micro-batch", micro_batch, "--grad-accum", inputs.GLOBAL_BATCH // (2 * micro_batch),
                                               "--completion-len", s["completion_len"], "--steps", args.steps, "--warmup", args.warmup,
                                               "--seed", args.seed, "--lmbda", case.lmbda, "--beta", 0.5, "--temperature", 1.0, "--phases",
                                               "--prompt-len", s["prompt_len"], *extra])
    if failed := run_case(cmd, case, env, log, work, name):
        return failed
    m = json.loads(out.read_text())
    return {"status": "ok", "samples_per_s": m["samples_per_s"], "loss": m["loss"], "phases": m["phase_times_s"][args.warmup:],
            "peak_mib": peak_mib(work, name), "micro_batch": micro_batch, "grad_accum": inputs.GLOBAL_BATCH // (2 * micro_batch),
            "deepspeed": m["deepspeed"], **{k: m.get(k) for k in ("vllm", "completion_lengths", "completions", "weight_refreshes")}}


def layout(m: dict) -> str:
    t, s = m["teacher"], m["student"]
    deg = t["shard"] if t["strategy"] == "shard" else t["pp"]
    return f"T {t['strategy']}" + (f":{deg}" if deg > 1 else "") + f" / S {s['strategy']}" + (" disagg" if m["placement"] == "disaggregated" else "")


def recommend(job: Path, topo: Path, plan: Path, env: dict, log: Path, extra: list = ()) -> None:
    cmd = [BIN / "planner", "recommend", "-m", job, "-c", topo, "-o", plan, "--force", *extra]
    rc = sh(cmd, env, log)
    if rc:
        fail(cmd, rc, log)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1 round of 5 steps (2 warm-up), size tiny only: a smoke run")
    ap.add_argument("--sizes", default="tiny,27m,27m-32k", help=f"comma-separated, of {', '.join(inputs.SIZES)}")
    ap.add_argument("--policies", default="off,on", help="off: lmbda 0 vs GKDTrainer; on: lmbda 1 vs DistillationTrainer")
    ap.add_argument("--budget-size", default="27m-32k", help="the size run under the enforced budget ('' for none)")
    ap.add_argument("--budget-mib", type=float, default=1300.0,
                    help="resident MiB per process above the shared baseline; at 27m-32k, micro-batch 1, TRL GKDTrainer + DDP peaked at "
                         "1303-1322 MiB and + DeepSpeed ZeRO-3 at 1276-1321 (4 runs each), so ZeRO-3 fits in some runs and not in others")
    ap.add_argument("--budget-overhead-mib", type=float, default=650.0,
                    help="of the budget, what the cost model does not count (allocator, gloo, checkpoint loading; about "
                         "650 MiB at 27m-32k, 160 at 27m): the budget topology's reserved memory")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tol", type=float, default=1e-4, help="max |loss difference| over the compared steps")
    ap.add_argument("--check-steps", type=int, default=3, help="steps whose losses must agree (lmbda 0 only)")
    ap.add_argument("--keep", type=Path, help="work folder to keep (default: a temp dir, removed); results.json there "
                                              "holds every run so far, rewritten after each")
    ap.add_argument("--report-from", type=Path, help="print the report of a kept work folder's results.json (an interrupted run too)")
    args = ap.parse_args()
    if args.report_from:
        saved = json.loads((args.report_from / "results.json").read_text())
        vars(args).update(saved["args"])
        cases = [Case(**c | {"plan": Path(c["plan"]), "trl": [tuple(t) for t in c["trl"]]}) for c in saved["cases"]]
        sys.exit("loss mismatch between TRL and planner run" if report(args, cases, saved["counts"]) else 0)
    if args.quick:
        args.rounds, args.steps, args.warmup, args.sizes, args.budget_size = 1, 5, 2, "tiny", ""
    tmp = None if args.keep else tempfile.TemporaryDirectory(prefix="vs-trl-")
    work = args.keep or Path(tmp.name)
    work.mkdir(parents=True, exist_ok=True)
    log = work / "runs.log"
    env = os.environ | {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "TOKENIZERS_PARALLELISM": "false",
                        "HF_HUB_OFFLINE": "1", "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1", "MALLOC_ARENA_MAX": "2"}
    inputs.build_tokenizer(work / "tokenizer")
    sizes = [s for s in args.sizes.split(",") if s]
    cases, counts = [], {}
    for size in dict.fromkeys(sizes + ([args.budget_size] if args.budget_size else [])):
        s = inputs.SIZES[size]
        counts[size] = inputs.save_models(work, size, args.seed)
        inputs.write_data(work / f"{size}.jsonl", max(80, args.steps * inputs.GLOBAL_BATCH), s["prompt_len"], s["completion_len"], args.seed)
        inputs.check_tokenization(work / "tokenizer", work / f"{size}.jsonl", s["prompt_len"], s["completion_len"])
        for policy in args.policies.split(",") if size in sizes else []:
            lmbda = 0.0 if policy == "off" else 1.0
            job, plan = work / f"job-{size}-{policy}.yaml", work / f"plan-{size}-{policy}.yaml"
            inputs.write_job(job, size, counts[size]["teacher"], counts[size]["student"], lmbda)
            recommend(job, ROOT / "topologies" / "cpu-local.yaml", plan, env, log)
            cases.append(Case(f"{size}-{policy}", size, lmbda, plan, [("gkd", "ddp")] if lmbda == 0 else [("distill", "ddp")]))
    if args.budget_size:
        size, topo = args.budget_size, work / "cpu-budget.yaml"
        job, plan = work / f"job-{size}-off.yaml", work / f"plan-{size}-budget.yaml"
        inputs.write_job(job, size, counts[size]["teacher"], counts[size]["student"], 0.0)
        inputs.write_budget_topology(topo, args.budget_mib, args.budget_overhead_mib)
        recommend(job, topo, plan, env, log, ["--reserve", "0"])
        cases.append(Case(f"{size}-budget", size, 0.0, plan, [("gkd", "ddp"), ("gkd", "zero3")], args.budget_mib))
    trl_mb: dict = {}  # (case, trainer, mode) -> micro-batch that fits (None: none does)
    cases.sort(key=lambda c: c.budget_mib is None)  # the budget case first in each round
    for r in range(args.rounds):
        for case in cases:
            save(work, args, cases, counts)
            case.results.setdefault("ours", []).append(run_ours(case, r, work, env, log, args))
            for trainer, mode in case.trl:
                side = f"trl-{trainer}-{mode}"
                if r == 0:  # the largest micro-batch that fits (only a budget can refuse one)
                    tries = [4, 2, 1] if case.budget_mib is not None else [4]
                    for mb in tries:
                        res = run_trl(case, trainer, mode, mb, r, work, env, log, args)
                        if res["status"] == "ok":
                            break
                    trl_mb[case.key, side] = mb if res["status"] == "ok" else None
                    case.results[side] = [res | {"tried": tries[:tries.index(mb) + 1]}]
                elif trl_mb[case.key, side] is not None:
                    case.results[side].append(run_trl(case, trainer, mode, trl_mb[case.key, side], r, work, env, log, args))
            save(work, args, cases, counts)
    save(work, args, cases, counts)
    failed = report(args, cases, counts)
    if args.keep:
        print(f"work folder (plans, metrics, runs.log): {work}")
    if failed:
        sys.exit("loss mismatch between TRL and planner run")


def save(work: Path, args, cases: list[Case], counts: dict) -> None:
    keep = {k: getattr(args, k) for k in ("rounds", "steps", "warmup", "tol", "check_steps")}
    data = {"args": keep, "counts": {s: {k: str(v) if isinstance(v, Path) else v for k, v in c.items()} for s, c in counts.items()},
            "cases": [{"key": c.key, "size": c.size, "lmbda": c.lmbda, "plan": str(c.plan), "trl": c.trl, "budget_mib": c.budget_mib,
                       "results": c.results} for c in cases]}
    (work / "results.json").write_text(json.dumps(data, indent=1) + "\n")


def median_sps(runs: list[dict]) -> float | None:
    ok = [x["samples_per_s"] for x in runs if x["status"] == "ok"]
    return statistics.median(ok) if ok else None


def median_phases(runs: list[dict], phases: tuple = PHASES) -> dict[str, float]:
    steps = [p for x in runs if x["status"] == "ok" for p in x["phases"]]
    return {k: statistics.median(p.get(k, 0.0) for p in steps) for k in phases} if steps else {}


def report(args, cases: list[Case], counts: dict) -> bool:
    import trl

    print(f"\nTRL {trl.__version__} vs planner run, 2 x gloo CPU processes (1 thread each), fp32, global batch {inputs.GLOBAL_BATCH}, "
          f"beta 0.5, T 1; samples/s: median of {max(len(c.results.get('ours', [])) for c in cases)} alternating round(s), {args.steps - args.warmup} steady steps per run")
    for size, c in counts.items():
        s = inputs.SIZES[size]
        print(f"  {size}: teacher {c['teacher_params'] / 1e6:.1f}M, student {c['student_params'] / 1e6:.1f}M parameters, vocab {c.get('vocab', 512)}, "
              f"P+C {s['prompt_len']}+{s['completion_len']}")
    print(f"\n{'case':12} {'side':38} {'mb x ga':>7} {'samples/s':>9} {'runs':>18} {'peak MiB':>8} {'ratio':>6}")
    failed = False
    for case in cases:
        ours = case.results.get("ours")
        if not ours or not all(case.results.get(f"trl-{t}-{m}") for t, m in case.trl):
            continue  # not run yet (an interrupted run)
        o = median_sps(ours)
        trl_best = max((median_sps(v) or 0.0 for k, v in case.results.items() if k != "ours"), default=0.0)
        for side, runs in case.results.items():
            first = runs[0]
            label = f"planner run: {next((x['layout'] for x in ours if x['status'] == 'ok'), '?')}" if side == "ours" else \
                {"trl-gkd-ddp": "TRL GKDTrainer + DDP", "trl-gkd-zero3": "TRL GKDTrainer + DeepSpeed ZeRO-3",
                 "trl-distill-ddp": "TRL DistillationTrainer + DDP"}[side]
            med = median_sps(runs)
            if med is None:
                tried = "/".join(map(str, first.get("tried", []))) or "?"
                print(f"{case.key:12} {label:38} {tried:>7} {first['status']:>28} {first['peak_mib'] or 0:>8.0f}")
                continue
            mbga = f"{first['micro_batch']} x {first['grad_accum']}"
            each = ", ".join(f"{x['samples_per_s']:.2f}" for x in runs if x["status"] == "ok")
            peak = max(x["peak_mib"] or 0 for x in runs)
            ratio = "" if side == "ours" else f"{o / med:.2f}x" if o else "-"
            print(f"{case.key:12} {label:38} {mbga:>7} {med:>9.2f} {each:>18} {peak:>8.0f} {ratio:>6}")
        if case.budget_mib is not None:
            print(f"{'':12} budget {case.budget_mib:g} MiB resident per process above the shared baseline, enforced; "
                  f"planner run vs TRL's best that fits: {f'{o / trl_best:.2f}x' if o and trl_best else '-'}")
        gkd = case.results.get("trl-gkd-ddp") or case.results.get("trl-gkd-zero3")
        if case.lmbda == 0 and gkd and ours[0]["status"] == "ok" and gkd[0]["status"] == "ok":
            a, b = ours[0]["loss"][: args.check_steps], gkd[0]["loss"][: args.check_steps]
            diff = max(abs(x - y) for x, y in zip(a, b)) if None not in b else float("inf")
            ok = diff <= args.tol
            failed |= not ok
            print(f"{'':12} loss, first {len(a)} steps: ours {' '.join(f'{x:.6f}' for x in a)} | TRL GKD "
                  f"{' '.join(f'{x:.6f}' if x is not None else '-' for x in b)} | max diff {diff:.1e} {'OK' if ok else 'MISMATCH'} (tol {args.tol:g})")
    print("\nseconds per step by phase (median over steady steps of all rounds)")
    print(f"{'case':12} {'side':16} " + " ".join(f"{p[:9]:>9}" for p in PHASES))
    for case in cases:
        for side, runs in case.results.items():
            ph = median_phases(runs)
            if ph:
                print(f"{case.key:12} {side:16} " + " ".join(f"{ph[p]:>9.3f}" for p in PHASES))
    return failed


if __name__ == "__main__":
    main()

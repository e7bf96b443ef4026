"""kd-planner's executor vs TRL's GKDTrainer: samples/s and first-step losses, side by side in one run.

    .venv/bin/pip install -e '.[executor,bench]' torch==2.13.0   # keep the pinned CPU torch
    .venv/bin/python bench/vs_trl.py [--quick] [--rounds 3] [--steps 10] [--warmup 3] [--keep DIR]

Both sides train the same tiny random Llamas (models/tiny-{teacher,student}.json, seeded, saved
with `save_pretrained` into a temp dir and loaded from there by both), with the same local
byte-level tokenizer (built here, with a chat template) on the same chat `messages` JSONL (written
here: every sample is exactly prompt_len + completion_len tokens, so no padding), the same batch
per rank, lmbda, beta, temperature, AdamW lr 1e-4, max grad norm 1.0, and the same data order
(accelerate's SeedableRandomSampler and `planner run` both take `torch.randperm(n)` seeded with
seed + epoch and deal consecutive micro-batches round-robin over the ranks).

Pairs, each run as its own `torchrun --nproc-per-node 2` job (gloo, OMP_NUM_THREADS=1), job
jobs/tiny-cpu.yaml, micro-batch and accumulation from the plan on both sides:
  planner run <recommend on cpu-tight>  vs  TRL + DeepSpeed ZeRO-3 (a teacher replica does not fit)
  planner run <recommend on cpu-local>  vs  TRL + DDP, teacher replicated on every rank
  planner run <TRL's layout: replicate / ddp>  vs  the same TRL + DDP run (implementation only)
TRL logs the loss per step; it is compared with `planner run`'s over the first --check-steps steps.
Runs alternate round after round; each run's first --warmup steps are left out; medians shown.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import string
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BIN = Path(sys.executable).parent
JOB = ROOT / "jobs" / "tiny-cpu.yaml"
TEMPLATE = ("{% for m in messages %}{% if m['role'] == 'assistant' %}{{ 'assistant: ' + m['content'] + eos_token }}"
            "{% else %}{{ m['role'] + ': ' + m['content'] + '\n' }}{% endif %}{% endfor %}"
            "{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}")
PROMPT_OVERHEAD = len("user: \nassistant: ")  # template bytes around the user's text


def build_tokenizer(out: Path) -> None:
    """Bytes as tokens, laid out like the executor's fallback (pad 0, bos 1, eos 2, byte b -> b + 3)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    # GPT-2's byte -> printable character map, the alphabet of the ByteLevel pre-tokenizer
    keep = [*range(33, 127), *range(161, 173), *range(174, 256)]
    moved = [b for b in range(256) if b not in keep]
    chars = {b: chr(b) for b in keep} | {b: chr(256 + i) for i, b in enumerate(moved)}
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2} | {chars[b]: b + 3 for b in range(256)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>")
    fast.chat_template = TEMPLATE
    fast.save_pretrained(out)


def save_models(work: Path, seed: int) -> tuple[Path, Path]:
    """The bundled tiny configs with the executor's seeded random weights, saved as checkpoints."""
    from planner.executor.build import build_model
    from planner.inputs.load import load_model

    dirs = []
    for name, s in (("tiny-teacher", seed), ("tiny-student", seed + 1)):
        model = build_model(name, load_model(name), "fp32", s)
        model.save_pretrained(work / name)
        dirs.append(work / name)
    return dirs[0], dirs[1]


def write_data(path: Path, n: int, prompt_len: int, completion_len: int, seed: int) -> None:
    """n chats whose prompt renders to exactly prompt_len tokens and whose answer (+ eos) to completion_len."""
    rng = random.Random(seed)
    text = lambda k: "".join(rng.choice(string.ascii_letters + " .,") for _ in range(k))  # noqa: E731
    with path.open("w") as f:
        for _ in range(n):
            msgs = [{"role": "user", "content": text(prompt_len - PROMPT_OVERHEAD)},
                    {"role": "assistant", "content": text(completion_len - 1)}]
            f.write(json.dumps({"messages": msgs}) + "\n")


def check_tokenization(tok_dir: Path, data: Path, prompt_len: int, completion_len: int) -> None:
    from planner.executor.build import build_tokenizer as load_tok
    from planner.executor.data import read_jsonl

    for p, c in read_jsonl(data, load_tok(str(tok_dir)))[:4]:
        assert (len(p), len(c) + 1) == (prompt_len, completion_len), (len(p), len(c))


def sh(cmd: list[str], env: dict, log: Path) -> None:
    with log.open("a") as f:
        f.write("$ " + " ".join(map(str, cmd)) + "\n")
        f.flush()
        rc = subprocess.call([str(c) for c in cmd], env=env, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)
    if rc:
        sys.exit(f"failed (exit {rc}): {' '.join(map(str, cmd))}\n{''.join(log.read_text().splitlines(True)[-40:])}")


def torchrun(n: int) -> list:
    return [BIN / "torchrun", "--standalone", f"--nproc-per-node={n}"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1 round of 5 steps (2 warm-up): a smoke run")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tol", type=float, default=1e-4, help="max |loss difference| over the compared steps")
    ap.add_argument("--check-steps", type=int, default=3, help="steps whose losses must agree (lmbda 0 only)")
    ap.add_argument("--keep", type=Path, help="work folder to keep (default: a temp dir, removed)")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.steps, args.warmup = 1, 5, 2
    from planner.plan import Plan, load_plan, write_plan

    load_plan_dict = lambda p: Plan(**p.model_dump())  # noqa: E731  (re-validated)
    tmp = None if args.keep else tempfile.TemporaryDirectory(prefix="vs-trl-")
    work = args.keep or Path(tmp.name)
    work.mkdir(parents=True, exist_ok=True)
    log = work / "runs.log"
    env = os.environ | {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "TOKENIZERS_PARALLELISM": "false",
                        "HF_HUB_OFFLINE": "1", "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1"}
    plans = {}
    for topo in ("cpu-tight", "cpu-local"):
        plans[topo] = work / f"plan-{topo}.yaml"
        sh([BIN / "planner", "recommend", "-m", JOB, "-c", ROOT / "topologies" / f"{topo}.yaml", "-o", plans[topo], "--force"], env, log)
    w = load_plan(plans["cpu-tight"]).workload
    P, C = w.prompt_len, w.completion_len
    teacher, student = save_models(work, args.seed)
    build_tokenizer(work / "tokenizer")
    data = work / "chat.jsonl"
    write_data(data, max(64, args.steps * w.global_batch), P, C, args.seed)
    check_tokenization(work / "tokenizer", data, P, C)

    # Also TRL's own DDP layout run by `planner run` (same micro-batch): implementation vs layout.
    same = load_plan(plans["cpu-local"])
    same = same.model_copy(update={"teacher": same.teacher.model_copy(update={"strategy": "replicate", "shard": 1}),
                                   "student": same.student.model_copy(update={"strategy": "ddp", "shard": 1}),
                                   "predicted": None})
    plans["trl-layout"] = work / "plan-trl-layout.yaml"
    write_plan(load_plan_dict(same), plans["trl-layout"], force=True)
    pairs = [("cpu-tight", "zero3"), ("cpu-local", "ddp"), ("trl-layout", "ddp")]
    runs = {}  # name -> list of result dicts
    for r in range(args.rounds):
        for topo, mode in pairs:
            plan = load_plan(plans[topo])
            ours, trl = work / f"ours-{topo}-{r}.json", work / f"trl-{mode}-{r}.json"
            if trl.exists():  # this round's TRL run of that mode is done: only ours
                trl = None
            sh(torchrun(plan.world) + ["-m", "planner", "run", plans[topo], "--steps", args.steps, "--warmup-steps", args.warmup,
                                      "--seed", args.seed, "--teacher", teacher, "--student", student,
                                      "--tokenizer", work / "tokenizer", "--dataset", data, "--metrics-out", ours, "--force", "--no-progress"], env, log)
            if trl is not None:
                sh(torchrun(plan.world) + [ROOT / "bench" / "trl_gkd_worker.py", "--mode", mode, "--teacher", teacher, "--student", student,
                                      "--tokenizer", work / "tokenizer", "--data", data, "--out", trl,
                                      "--micro-batch", plan.micro_batch, "--grad-accum", trl_accum(plan), "--completion-len", C,
                                      "--steps", args.steps, "--warmup", args.warmup, "--seed", args.seed,
                                      "--lmbda", w.lmbda, "--beta", w.beta, "--temperature", w.temperature], env, log)
                runs.setdefault(f"trl-{mode}", []).append(json.loads(trl.read_text()))
            runs.setdefault(f"ours-{topo}", []).append(json.loads(ours.read_text()))
    report(args, plans, pairs, runs, w)
    if args.keep:
        print(f"work folder (plans, metrics, runs.log): {work}")


def trl_accum(plan) -> int:
    """TRL always trains on every rank: the accumulation that gives the plan's global batch there
    (a disaggregated plan trains its student on fewer ranks with more accumulation)."""
    per_step = plan.world * plan.micro_batch
    if plan.workload.global_batch % per_step:
        sys.exit(f"global batch {plan.workload.global_batch} is not a multiple of {plan.world} ranks x micro-batch {plan.micro_batch}")
    return plan.workload.global_batch // per_step


def report(args, plans, pairs, runs, w) -> None:
    from planner.plan import load_plan

    med = {k: statistics.median(x["samples_per_s"] for x in v) for k, v in runs.items()}
    print(f"\nGKD on tiny Llamas (tiny-teacher 8L/256 -> tiny-student 4L/128), 2 x gloo CPU processes, "
          f"lmbda {w.lmbda}, beta {w.beta}, T {w.temperature}, P+C {w.prompt_len}+{w.completion_len}, global batch {w.global_batch}")
    print(f"samples/s: median of {args.rounds} alternating round(s), {args.steps - args.warmup} steady steps per run "
          f"(first {args.warmup} left out)\n")
    print(f"{'budget':10} {'side':38} {'mb x ga':>8} {'samples/s':>10} {'runs':>22} {'ratio':>7}")
    failed, shown = False, set()
    for topo, mode in pairs:
        plan = load_plan(plans[topo])
        ours, trl = f"ours-{topo}", f"trl-{mode}"
        layout = f"planner run: T {plan.teacher.strategy}" + (f":{plan.teacher.shard}" if plan.teacher.shard > 1 else "") \
            + f" / S {plan.student.strategy}" + (" disagg" if plan.placement == "disaggregated" else "")
        trl_name = {"zero3": "TRL GKDTrainer + DeepSpeed ZeRO-3", "ddp": "TRL GKDTrainer + DDP (T replica)"}[mode]
        for name, label in ((trl, trl_name), (ours, layout)):
            if name in shown:
                continue
            shown.add(name)
            each = ", ".join(f"{x['samples_per_s']:.1f}" for x in runs[name])
            ratio = f"{med[ours] / med[trl]:.2f}x" if name == ours else "1.00x"
            ga = plan.grad_accum if name == ours else trl_accum(plan)
            print(f"{topo:10} {label:38} {plan.micro_batch:>3} x {ga:<2} {med[name]:>10.1f} {each:>22} {ratio:>7}")
        if w.lmbda == 0:
            a, b = runs[ours][0]["loss"][: args.check_steps], runs[trl][0]["loss"][: args.check_steps]
            diff = max(abs(x - y) for x, y in zip(a, b)) if None not in b else float("inf")
            ok = diff <= args.tol
            failed |= not ok
            print(f"{'':10} loss, first {len(a)} steps: ours {' '.join(f'{x:.6f}' for x in a)} | "
                  f"TRL {' '.join(f'{x:.6f}' if x is not None else '-' for x in b)} | max diff {diff:.1e} "
                  f"{'OK' if ok else 'MISMATCH'} (tol {args.tol:g})")
    trl_ds = runs["trl-zero3"][0]
    print(f"\nTRL zero3 run: accelerate distributed_type {trl_ds['distributed_type']}, deepspeed={trl_ds['deepspeed']}; "
          f"threads per process {trl_ds['threads']}")
    if failed:
        sys.exit("loss mismatch between TRL and planner run")


if __name__ == "__main__":
    main()

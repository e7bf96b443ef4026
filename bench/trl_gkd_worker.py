"""One TRL 1.16 `GKDTrainer` or `DistillationTrainer` run, one process of `torchrun --nproc-per-node N`
(launched by bench/vs_trl.py).

    torchrun --standalone --nproc-per-node 2 bench/trl_gkd_worker.py --trainer gkd|distill --mode ddp|zero3 \
        --teacher DIR --student DIR --tokenizer DIR --data data.jsonl --micro-batch 1 --grad-accum 4 \
        --steps 8 --out trl.json [--vllm colocate [--vllm-sleep]]   # --vllm: distill + ddp only

Set up as a TRL user would on CPU: `GKDConfig` + `GKDTrainer` (trl.experimental.gkd) or
`DistillationConfig` + `DistillationTrainer` (trl; always on-policy: it generates every completion
with `generate`, so it is compared with `planner run` at lmbda 1; `min_new_tokens` makes it sample
exactly --completion-len tokens, as `planner run` does, with its chunked, completion-only loss), the models
and the teacher given as local checkpoint paths, a chat `messages` JSONL dataset, AdamW lr 1e-4 with
a constant schedule and max grad norm 1.0 (what `planner run` hard-codes), fp32, no gradient
checkpointing. `ddp`: `use_cpu`, gloo DDP, the teacher replicated on every rank. `zero3`: DeepSpeed
ZeRO-3 for the student and (through TRL's `prepare_deepspeed`) for the teacher; accelerate never
picks DeepSpeed when `cpu=True`, so its backend choice is patched to multi-CPU gloo and `use_cpu`
left off; DeepSpeed's CPU accelerator then uses gloo too. `--vllm colocate` (DistillationTrainer,
`ddp`): `use_vllm=True, vllm_mode="colocate"`, a `vllm.LLM` per rank generating the completions
(`min_tokens` in vLLM's SamplingParams for exactly --completion-len tokens; see `vllm_config`).

Writes rank 0's per-step wall times (on_step_end to on_step_end, data loading included, as in
`planner run`), the logged per-step loss and samples/s over the steps after `--warmup`.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path


def zero3_config() -> dict:
    """ZeRO-3 set up for the least memory (it is run only under a budget), the `auto` values filled
    in by transformers from GKDConfig. DeepSpeed's defaults (`stage3_max_reuse_distance` and
    `stage3_max_live_parameters` 1e9 elements) keep every gathered parameter of these small models
    alive once the first step has traced them, so ZeRO-3 held more than a DDP replica (745 against
    396 MiB at 27m); 0 and no prefetch release each module's parameters after its use."""
    return {
        "train_micro_batch_size_per_gpu": "auto", "gradient_accumulation_steps": "auto",
        "train_batch_size": "auto", "gradient_clipping": "auto",
        "zero_optimization": {"stage": 3, "overlap_comm": False, "contiguous_gradients": True,
                              "reduce_bucket_size": "auto", "stage3_prefetch_bucket_size": 0,
                              "stage3_max_live_parameters": 0, "stage3_max_reuse_distance": 0,
                              "stage3_param_persistence_threshold": "auto",
                              "stage3_gather_16bit_weights_on_model_save": False},
        "zero_allow_untested_optimizer": True,  # the Trainer's torch AdamW (DeepSpeed's FusedAdam needs a GPU)
        "bf16": {"enabled": False}, "fp16": {"enabled": False},
        "wall_clock_breakdown": False,
    }


def vllm_config(args) -> dict:
    """DistillationConfig's vLLM fields for `--vllm colocate`, as a TRL user sets them (TRL 1.16
    trl/trainer/distillation_config.py): one engine per rank (tensor parallel 1), TRL's default
    memory share 0.3 (on a CPU vLLM sizes its KV cache from VLLM_CPU_KVCACHE_SPACE instead, set by
    bench/vs_trl_vllm.py), a model length of prompt + completion. TRL passes `generation_kwargs` to
    vLLM's SamplingParams as well as to transformers' GenerationConfig: `min_tokens` is vLLM's
    name for `min_new_tokens`."""
    return {"use_vllm": True, "vllm_mode": args.vllm, "vllm_enable_sleep_mode": args.vllm_sleep, "vllm_tensor_parallel_size": 1,
            "vllm_gpu_memory_utilization": 0.3, "vllm_max_model_length": args.prompt_len + args.completion_len,
            "generation_kwargs": {"min_tokens": args.completion_len}}


def refresh_weights_on_cpu(vllm_generation) -> None:
    """On a CPU, vLLM repacks fp32 linear weights for oneDNN when it loads them, so TRL's per-step
    refresh (`model.load_weights([(name, param)])` in trl/generation/vllm_generation.py
    `sync_weights`) fails in fp32 ("'Parameter' object has no attribute 'weight_loader'"). Without a
    refresh the engine would sample from the step-0 student, off policy. This `sync_weights` does
    what TRL's colocate branch does (wake the weights under sleep mode, load every parameter, reset
    the prefix cache) but loads through the worker's `reload_weights(weights_iterator=...,
    is_checkpoint_format=True)`, vLLM's checkpoint path, repacking included. TRL still calls it
    when it would (once per optimizer step, before the step's first generation)."""
    llm = vllm_generation.llm

    def sync_weights():
        if vllm_generation.enable_sleep_mode:
            llm.wake_up(tags=["weights"])
            vllm_generation._llm_weights_sleeping = False
        params = [(name, param.detach()) for name, param in vllm_generation._iter_named_params()]
        llm.collective_rpc("reload_weights", kwargs={"weights_iterator": params, "is_checkpoint_format": True})
        llm.reset_prefix_cache()
    vllm_generation.sync_weights = sync_weights


class Phases:
    """`--phases`: wall time per phase of each step, by wrapping the calls TRL makes (an instance
    attribute shadows the method): `teacher` (the teacher's forward), `generation` (`generate`, with
    every forward inside it), `student_forward`, `loss` (GKD: `generalized_jsd_loss`; Distillation:
    the chunked divergence, which also projects both models' hidden states through their heads),
    `backward`, `optimizer` (clip + step + zero_grad); `other` is the rest of the step (data
    collation, logging, metrics, DDP/DeepSpeed bookkeeping). Nested timed calls are charged to the
    inner phase, except inside `generation`."""

    def __init__(self):
        self.stack, self.now, self.steps = [], {}, []

    def wrap(self, obj, attr: str, name: str) -> None:
        fn = getattr(obj, attr)

        def timed(*a, **k):
            if self.stack and self.stack[-1][0] == "generation":
                return fn(*a, **k)
            self.push(name)
            try:
                return fn(*a, **k)
            finally:
                self.pop()
        setattr(obj, attr, timed)

    def push(self, name: str) -> None:
        t = time.perf_counter()
        if self.stack:
            top = self.stack[-1]
            self.now[top[0]] = self.now.get(top[0], 0.0) + t - top[1]
        self.stack.append([name, t])

    def pop(self) -> None:
        t = time.perf_counter()
        name, t0 = self.stack.pop()
        self.now[name] = self.now.get(name, 0.0) + t - t0
        if self.stack:
            self.stack[-1][1] = t

    def step(self, seconds: float) -> None:
        self.steps.append(self.now | {"other": seconds - sum(self.now.values())})
        self.now = {}


def instrument(trainer, phases: Phases) -> None:
    import trl.trainer.distillation_trainer as distill

    student = trainer.accelerator.unwrap_model(trainer.model)
    teacher = trainer.teacher_model.module if hasattr(trainer.teacher_model, "module") else trainer.teacher_model
    for model, name in ((teacher, "teacher"), (student, "student_forward")):
        phases.wrap(model, "forward", name)
        phases.wrap(model.model, "forward", name)  # DistillationTrainer calls the backbone, then the loss projects
    phases.wrap(student, "generate", "generation")
    if getattr(trainer, "use_vllm", False):
        phases.wrap(trainer.vllm_generation, "generate", "generation")
        phases.wrap(trainer.vllm_generation, "sync_weights", "weight_sync")
    if hasattr(trainer, "generalized_jsd_loss"):
        phases.wrap(trainer, "generalized_jsd_loss", "loss")
    phases.wrap(distill, "_chunked_divergence_loss", "loss")
    phases.wrap(trainer.accelerator, "backward", "backward")
    phases.wrap(trainer, "_clip_grad_norm", "optimizer")


def count_completions(trainer, lengths: list, refreshes: list) -> None:
    """Record every completion's token count (on policy: each exactly --completion-len) and every
    weight refresh of a vLLM engine, into the lists given."""
    if hasattr(trainer, "_generate_single_turn"):
        fn = trainer._generate_single_turn

        def counted(*a, **k):
            out = fn(*a, **k)
            lengths.extend(len(c) for c in out)
            return out
        trainer._generate_single_turn = counted
    if getattr(trainer, "use_vllm", False):
        sync = trainer.vllm_generation.sync_weights

        def synced(*a, **k):
            refreshes.append(trainer.state.global_step)
            return sync(*a, **k)
        trainer.vllm_generation.sync_weights = synced


def patch_accelerate_for_cpu_deepspeed() -> None:
    """accelerate chooses DeepSpeed only when `cpu` is False and gloo multi-CPU only when it is True;
    make the backend choice multi-CPU gloo without the flag, so the DeepSpeed branch is taken."""
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType

    PartialState._prepare_backend = lambda self, cpu=False, sagemaker_dp=False, backend=None: ("gloo", DistributedType.MULTI_CPU)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trainer", choices=("gkd", "distill"), default="gkd")
    ap.add_argument("--mode", choices=("ddp", "zero3"), required=True)
    for name in ("teacher", "student", "tokenizer", "data", "out"):
        ap.add_argument(f"--{name}", required=True)
    ap.add_argument("--micro-batch", type=int, required=True)
    ap.add_argument("--grad-accum", type=int, required=True)
    ap.add_argument("--completion-len", type=int, required=True)
    ap.add_argument("--prompt-len", type=int, default=64, help="--vllm: with --completion-len, the engine's max model length")
    ap.add_argument("--vllm", choices=("colocate",), help="DistillationTrainer with use_vllm=True in this vllm_mode (see vllm_config)")
    ap.add_argument("--vllm-sleep", action="store_true", help="--vllm: vllm_enable_sleep_mode=True")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--lmbda", type=float, default=0.0)
    ap.add_argument("--beta", type=float, default=0.5)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--phases", action="store_true", help="also time each phase of a step (see Phases)")
    args = ap.parse_args()
    if args.vllm and (args.trainer, args.mode) != ("distill", "ddp"):
        ap.error("--vllm goes with --trainer distill --mode ddp")

    if args.mode == "zero3":
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
        patch_accelerate_for_cpu_deepspeed()
    import torch
    from datasets import load_dataset
    from transformers import AutoTokenizer, TrainerCallback
    from trl import DistillationConfig, DistillationTrainer
    from trl.experimental.gkd import GKDConfig, GKDTrainer

    class Clock(TrainerCallback):
        def __init__(self):
            self.marks, self.loss = [], {}

        def on_train_begin(self, *a, **k):
            self.marks.append(time.perf_counter())

        def on_step_end(self, *a, **k):
            if args.phases and phases.stack:  # the optimizer's step and zero_grad are done
                phases.pop()
            self.marks.append(time.perf_counter())
            if args.phases:
                phases.step(self.marks[-1] - self.marks[-2])

        def on_pre_optimizer_step(self, *a, **k):
            if args.phases:
                phases.push("optimizer")

        def on_log(self, _args, state, _control, logs=None, **k):
            if logs and "loss" in logs:
                self.loss[state.global_step] = logs["loss"]

    common = dict(
        output_dir=str(Path(args.out).with_suffix(".trainer")),
        max_steps=args.steps, per_device_train_batch_size=args.micro_batch, gradient_accumulation_steps=args.grad_accum,
        learning_rate=1e-4, lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0,
        optim="adamw_torch", adam_beta1=0.9, adam_beta2=0.999, adam_epsilon=1e-8,
        beta=args.beta, temperature=args.temperature, seed=args.seed, data_seed=args.seed,
        use_cpu=args.mode == "ddp", ddp_backend="gloo", bf16=False, fp16=False, gradient_checkpointing=False,
        deepspeed=zero3_config() if args.mode == "zero3" else None,
        model_init_kwargs={"dtype": "float32"}, teacher_model_init_kwargs={"dtype": "float32"},
        logging_steps=1, logging_first_step=True, save_strategy="no", report_to=[], disable_tqdm=True,
        dataloader_num_workers=0, dataloader_drop_last=True,
    )
    if args.trainer == "distill":  # on-policy only; exactly completion_len sampled tokens, no top-k/top-p
        engine = vllm_config(args) if args.vllm else {"generation_kwargs": {"min_new_tokens": args.completion_len}}
        config = DistillationConfig(**common, max_completion_length=args.completion_len, top_k=0, top_p=1.0, disable_dropout=True, **engine)
    else:
        # average_tokens_across_devices default True: GKDTrainer.compute_loss then divides by the global
        # token count but, unlike Trainer.compute_loss, never multiplies by the process count, so loss and
        # gradients come out 1/world of the mean; False gives the true mean (one scalar all-gather less)
        config = GKDConfig(**common, lmbda=args.lmbda, max_new_tokens=args.completion_len, average_tokens_across_devices=False)
    tok = AutoTokenizer.from_pretrained(args.tokenizer, local_files_only=True)
    data = load_dataset("json", data_files=args.data, split="train")
    if args.trainer == "distill":  # a prompt column: the chat without its answer
        data = data.map(lambda row: {"prompt": row["messages"][:-1]}, remove_columns=["messages"])
    clock, phases = Clock(), Phases()
    trainer_cls = DistillationTrainer if args.trainer == "distill" else GKDTrainer
    trainer = trainer_cls(model=args.student, teacher_model=args.teacher, args=config, train_dataset=data,
                          processing_class=tok, callbacks=[clock])
    if args.vllm and not torch.cuda.is_available():
        refresh_weights_on_cpu(trainer.vllm_generation)
    if args.phases:
        instrument(trainer, phases)
    lengths, refreshes = [], []
    count_completions(trainer, lengths, refreshes)
    trainer.train()
    if int(os.environ.get("RANK", "0")) == 0:
        times = [b - a for a, b in zip(clock.marks, clock.marks[1:])]
        steady = times[args.warmup:]
        world = int(os.environ.get("WORLD_SIZE", "1"))
        global_batch = args.micro_batch * args.grad_accum * world
        Path(args.out).write_text(json.dumps({
            "trainer": args.trainer, "mode": args.mode, "vllm": args.vllm, "vllm_sleep": args.vllm_sleep, "world": world, "global_batch": global_batch, "step_times_s": times,
            "samples_per_s": global_batch * len(steady) / sum(steady) if steady else None,
            "loss": [clock.loss.get(s) for s in range(1, args.steps + 1)],
            "distributed_type": str(trainer.accelerator.distributed_type), "deepspeed": trainer.is_deepspeed_enabled,
            "threads": torch.get_num_threads(), "completion_lengths": sorted(set(lengths)), "completions": len(lengths),
            "weight_refreshes": refreshes, **({"phase_times_s": phases.steps} if args.phases else {}),
        }, indent=1) + "\n")
    # An explicit teardown: left to interpreter exit, gloo's threads sometimes abort a rank
    # ("terminate called without an active exception") after training finished.
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()

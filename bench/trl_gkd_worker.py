"""One TRL `GKDTrainer` run, one process of `torchrun --nproc-per-node N` (launched by bench/vs_trl.py).

    torchrun --standalone --nproc-per-node 2 bench/trl_gkd_worker.py --mode ddp|zero3 \
        --teacher DIR --student DIR --tokenizer DIR --data data.jsonl --micro-batch 1 --grad-accum 4 \
        --steps 8 --out trl.json

Set up as a TRL user would on CPU: `GKDConfig` + `GKDTrainer` (trl.experimental.gkd), the models
and the teacher given as local checkpoint paths, a chat `messages` JSONL dataset, AdamW lr 1e-4 with
a constant schedule and max grad norm 1.0 (what `planner run` hard-codes), fp32, no gradient
checkpointing. `ddp`: `use_cpu`, gloo DDP, the teacher replicated on every rank. `zero3`: DeepSpeed
ZeRO-3 for the student and (through TRL's `prepare_deepspeed`) for the teacher; accelerate never
picks DeepSpeed when `cpu=True`, so its backend choice is patched to multi-CPU gloo and `use_cpu`
left off; DeepSpeed's CPU accelerator then uses gloo too.

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
    """A plain ZeRO-3 config, the `auto` values filled in by transformers from GKDConfig."""
    return {
        "train_micro_batch_size_per_gpu": "auto", "gradient_accumulation_steps": "auto",
        "train_batch_size": "auto", "gradient_clipping": "auto",
        "zero_optimization": {"stage": 3, "overlap_comm": False, "contiguous_gradients": True,
                              "reduce_bucket_size": "auto", "stage3_prefetch_bucket_size": "auto",
                              "stage3_param_persistence_threshold": "auto",
                              "stage3_gather_16bit_weights_on_model_save": False},
        "zero_allow_untested_optimizer": True,  # the Trainer's torch AdamW (DeepSpeed's FusedAdam needs a GPU)
        "bf16": {"enabled": False}, "fp16": {"enabled": False},
        "wall_clock_breakdown": False,
    }


def patch_accelerate_for_cpu_deepspeed() -> None:
    """accelerate chooses DeepSpeed only when `cpu` is False and gloo multi-CPU only when it is True;
    make the backend choice multi-CPU gloo without the flag, so the DeepSpeed branch is taken."""
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType

    PartialState._prepare_backend = lambda self, cpu=False, sagemaker_dp=False, backend=None: ("gloo", DistributedType.MULTI_CPU)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mode", choices=("ddp", "zero3"), required=True)
    for name in ("teacher", "student", "tokenizer", "data", "out"):
        ap.add_argument(f"--{name}", required=True)
    ap.add_argument("--micro-batch", type=int, required=True)
    ap.add_argument("--grad-accum", type=int, required=True)
    ap.add_argument("--completion-len", type=int, required=True)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--lmbda", type=float, default=0.0)
    ap.add_argument("--beta", type=float, default=0.5)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    if args.mode == "zero3":
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
        patch_accelerate_for_cpu_deepspeed()
    import torch
    from datasets import load_dataset
    from transformers import AutoTokenizer, TrainerCallback
    from trl.experimental.gkd import GKDConfig, GKDTrainer

    class Clock(TrainerCallback):
        def __init__(self):
            self.marks, self.loss = [], {}

        def on_train_begin(self, *a, **k):
            self.marks.append(time.perf_counter())

        def on_step_end(self, *a, **k):
            self.marks.append(time.perf_counter())

        def on_log(self, _args, state, _control, logs=None, **k):
            if logs and "loss" in logs:
                self.loss[state.global_step] = logs["loss"]

    config = GKDConfig(
        output_dir=str(Path(args.out).with_suffix(".trainer")),
        max_steps=args.steps, per_device_train_batch_size=args.micro_batch, gradient_accumulation_steps=args.grad_accum,
        learning_rate=1e-4, lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0,
        optim="adamw_torch", adam_beta1=0.9, adam_beta2=0.999, adam_epsilon=1e-8,
        lmbda=args.lmbda, beta=args.beta, temperature=args.temperature, max_new_tokens=args.completion_len,
        seed=args.seed, data_seed=args.seed,
        use_cpu=args.mode == "ddp", ddp_backend="gloo", bf16=False, fp16=False, gradient_checkpointing=False,
        deepspeed=zero3_config() if args.mode == "zero3" else None,
        model_init_kwargs={"dtype": "float32"}, teacher_model_init_kwargs={"dtype": "float32"},
        logging_steps=1, logging_first_step=True, save_strategy="no", report_to=[], disable_tqdm=True,
        dataloader_num_workers=0, dataloader_drop_last=True,
        # default True: GKDTrainer.compute_loss then divides by the global token count but, unlike
        # Trainer.compute_loss, never multiplies by the process count, so loss and gradients come out
        # 1/world of the mean; False gives the true mean (one scalar all-gather per step less)
        average_tokens_across_devices=False,
    )
    tok = AutoTokenizer.from_pretrained(args.tokenizer, local_files_only=True)
    data = load_dataset("json", data_files=args.data, split="train")
    clock = Clock()
    trainer = GKDTrainer(model=args.student, teacher_model=args.teacher, args=config, train_dataset=data,
                         processing_class=tok, callbacks=[clock])
    trainer.train()
    if int(os.environ.get("RANK", "0")) == 0:
        times = [b - a for a, b in zip(clock.marks, clock.marks[1:])]
        steady = times[args.warmup:]
        world = int(os.environ.get("WORLD_SIZE", "1"))
        global_batch = args.micro_batch * args.grad_accum * world
        Path(args.out).write_text(json.dumps({
            "mode": args.mode, "world": world, "global_batch": global_batch, "step_times_s": times,
            "samples_per_s": global_batch * len(steady) / sum(steady) if steady else None,
            "loss": [clock.loss.get(s) for s in range(1, args.steps + 1)],
            "distributed_type": str(trainer.accelerator.distributed_type), "deepspeed": trainer.is_deepspeed_enabled,
            "threads": torch.get_num_threads(),
        }, indent=1) + "\n")
    # An explicit teardown: left to interpreter exit, gloo's threads sometimes abort a rank
    # ("terminate called without an active exception") after training finished.
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()

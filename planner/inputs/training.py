"""The training configuration: what the executor does with a plan beyond its split.

Learning rate and schedule, AdamW's knobs, clipping, how long, evaluation, checkpoints, the final
save and logging. None of it changes the cost of a step, so the cost model never reads it; the job
file's `training:` section is copied into the plan (`planner recommend`), and `planner run` and
`planner export` take it from there. The defaults are what the executor did before this section
existed (AdamW lr 1e-4, no decay, max norm 1.0, constant lr).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from planner.inputs.model import Strict

DEFAULT_STEPS = 10  # synthetic data has no size: without `steps` a run makes this many


class Training(Strict):
    """Optimizer, schedule, length, evaluation, checkpoints, final save and logs of a run."""

    lr: float = Field(1e-4, gt=0, description="Peak learning rate (after warmup).")
    schedule: Literal["constant", "linear", "cosine"] = Field("constant", description="Learning-rate schedule after warmup (torch.optim.lr_scheduler: ConstantLR, LinearLR, CosineAnnealingLR), down to min_lr at the last step.")
    warmup_steps: int = Field(0, ge=0, description="Steps of linear warmup (LinearLR from lr/(warmup_steps+1) to lr), before the schedule.")
    min_lr: float = Field(0.0, ge=0, description="Learning rate the linear and cosine schedules end at.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW decoupled weight decay.")
    betas: tuple[float, float] = Field((0.9, 0.999), description="AdamW betas (first and second moment decay), each in [0, 1).")
    eps: float = Field(1e-8, gt=0, description="AdamW epsilon.")
    max_grad_norm: float | None = Field(1.0, gt=0, description="Clip the global gradient norm to this (null: no clipping; the norm is still measured).")
    steps: int | None = Field(None, gt=0, description=f"Optimizer steps of the run; default workload.epochs passes over the training split of the dataset, or {DEFAULT_STEPS} on synthetic data. `planner run --steps` wins.")
    eval_fraction: float = Field(0.0, ge=0, lt=1, description="Fraction of the dataset's rows held out (seeded) for evaluation; 0: none.")
    eval_dataset: str | None = Field(None, description="Local dataset for evaluation instead of a held-out fraction (as the plan's `dataset`: .jsonl, .parquet, or a `Dataset.save_to_disk` folder).")
    eval_every: int = Field(0, ge=0, description="Evaluate (GKD loss on the eval split, no gradient) every N steps; with an eval split the run also evaluates after its last step; 0: only then.")
    checkpoint_dir: str | None = Field(None, description="Folder of student checkpoints (torch.distributed.checkpoint); a run resumes from the newest complete one. `planner run --checkpoint-dir` wins.")
    checkpoint_every: int = Field(0, ge=0, description="Save a checkpoint every N steps (0: never). `planner run --checkpoint-every` wins.")
    keep_checkpoints: int = Field(2, gt=0, description="Complete checkpoints kept (the newest N; incomplete folders are not counted).")
    output_dir: str | None = Field(None, description="Save the trained student here at the end in Hugging Face format (safetensors, config.json, the tokenizer if the plan names one); an existing non-empty folder needs --force.")
    log_jsonl: str | None = Field(None, description="Append one JSON line per logged step (step, loss, lr, grad_norm, samples_per_s, tokens_per_s, memory_bytes) and per evaluation (eval_loss).")
    tensorboard_dir: str | None = Field(None, description="Also write the logged values as TensorBoard scalars here (needs the `tensorboard` extra).")
    log_every: int = Field(1, gt=0, description="Log every N steps (and the last step).")
    pad_to_multiple_of: int = Field(8, gt=0, description="Pad each micro-batch to its longest sample rounded up to a multiple of this (8 as TRL's collators; 64 for some kernels; 1: no rounding), never past workload.prompt_len + completion_len, the lengths the cost model charges.")

    @model_validator(mode="after")
    def _rules(self) -> "Training":
        if not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas: each must be in [0, 1), got {list(self.betas)}")
        if self.min_lr > self.lr:
            raise ValueError(f"min_lr ({self.min_lr}) must not exceed lr ({self.lr})")
        if self.steps is not None and self.warmup_steps >= self.steps:
            raise ValueError(f"warmup_steps ({self.warmup_steps}) must be below steps ({self.steps})")
        if self.eval_fraction and self.eval_dataset:
            raise ValueError("eval_fraction and eval_dataset: give one eval split, not both")
        if self.eval_every and not (self.eval_fraction or self.eval_dataset):
            raise ValueError(f"eval_every ({self.eval_every}) needs an eval split: set eval_fraction or eval_dataset")
        if self.checkpoint_every and not self.checkpoint_dir:
            raise ValueError("checkpoint_every needs checkpoint_dir")
        return self

    @property
    def has_eval(self) -> bool:
        return bool(self.eval_fraction or self.eval_dataset)


def resolve_steps(override: int | None, training: Training, epochs: int, train_rows: int | None, global_batch: int) -> int:
    """Steps of a run: the flag, else `training.steps`, else `epochs` passes over `train_rows`
    samples (rounded up to whole global batches), else DEFAULT_STEPS (synthetic data)."""
    if override is not None:
        return override
    if training.steps is not None:
        return training.steps
    if train_rows:
        return max(1, -(-epochs * train_rows // global_batch))
    return DEFAULT_STEPS

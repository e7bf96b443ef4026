"""The distillation workload: batch, lengths, GKD knobs, dtypes and memory-saving switches."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from planner.inputs.model import BYTES_PER_DTYPE, Dtype, Size, Strict

# The search tries every micro-batch from micro_batch_min to micro_batch_max for every layout, so
# its time grows with the range: this bound only refuses absurd values (1e155 never ends). Within
# it a wide range is still slow (micro_batch_max 1024 on 16 x dgx-h100: 221 s, 8.6 GB); the cure is
# to enumerate only micro-batches that divide the global batch (planner/search/space.py).
MAX_MICRO_BATCH = 1024


class Workload(Strict):
    """A GKD training job (Agarwal et al. 2023, arXiv 2306.13649) as TRL's GKDTrainer runs it."""

    global_batch: Size = Field(64, gt=0, description="Samples per optimizer step, over all data-parallel ranks.")
    micro_batch_max: int = Field(8, gt=0, le=MAX_MICRO_BATCH, description=f"Largest micro-batch per rank the search may try (at most {MAX_MICRO_BATCH}).")
    micro_batch_min: Size = Field(1, gt=0, description="Smallest micro-batch per rank the search may try.")
    prompt_len: Size = Field(512, gt=0, description="Prompt tokens per sample.")
    completion_len: Size = Field(512, gt=0, description="Completion tokens per sample (max_new_tokens when generating).")
    lmbda: float = Field(0.5, ge=0, le=1, description="Probability that a micro-step uses student-generated completions (on-policy).")
    beta: float = Field(0.5, ge=0, le=1, description="Generalized JSD interpolation (0: forward KL, 1: reverse KL).")
    temperature: float = Field(0.9, gt=0, description="Softmax temperature of the loss and of generation.")
    student_dtype: Dtype = Field("bf16", description="Compute dtype of the student (see mixed_precision for the dtype its weights are held in).")
    mixed_precision: Literal["autocast", "master"] = Field("autocast", description="How a 16-bit student is trained (files without this key that set grad_dtype: bf16 read as master): 'autocast' holds fp32 weights, gradients and optimizer state and computes in student_dtype (torch.autocast, Hugging Face Trainer bf16=True, the bundled executor); 'master' holds weights and gradients in student_dtype and an fp32 master copy in the optimizer (Megatron, DeepSpeed, the ZeRO paper).")
    teacher_dtype: Dtype | None = Field(None, description="Dtype of the teacher weights; default the teacher's own dtype.")
    logits_dtype: Literal["fp32", "bf16"] = Field("fp32", description="Dtype logits are upcast to for the loss (TRL: fp32).")
    grad_dtype: Literal["fp32", "bf16"] | None = Field(None, description="Dtype of student gradients (master only); default: fp32 under autocast (they follow the weights), student_dtype under master.")
    optimizer: Literal["adamw", "sgd"] = Field("adamw", description="Student optimizer: AdamW (two fp32 moments; plus the fp32 master copy under master) or SGD with momentum.")
    grad_checkpointing: Literal["none", "selective", "full"] = Field("none", description="Student activation recomputation.")
    flash_attention: bool = Field(True, description="Attention kernel that never materialises the s x s score matrix.")
    loss: Literal["full", "chunked"] = Field("full", description="Full-vocabulary JSD over [B, S, V] at once (TRL) or in sequence chunks.")
    loss_chunk_tokens: Size = Field(1024, gt=0, description="Tokens per chunk for the chunked loss.")
    teacher_output: Literal["auto", "logits", "topk", "cached"] = Field("auto", description="What the loss gets from the teacher: its full logits, its top-k (values + int32 indices, sent instead of [b, C, V] from a remote teacher; the loss renormalises over them), top-k read from an offline cache written by one teacher pass (lmbda 0 only), or auto: the planner tries each one the runtime can run and picks per plan (a plan file always names one).")
    topk: Size = Field(64, gt=0, description="k for teacher_output: topk or cached (values + int32 indices).")
    epochs: Size = Field(1, gt=0, description="Passes the run makes over its data; a cached teacher pass is paid once and amortised over them.")
    generation_kv_cache: bool = Field(True, description="Student generation uses a KV cache (TRL disables it with gradient checkpointing).")
    rollout_engine: Literal["auto", "hf-eager", "hf-static", "vllm"] = Field("auto", description="What generates the student's on-policy completions (the rollout role): hf-eager (a Python decode loop over the model's forward, one launch per op), hf-static (a static KV cache and a compiled decode step), vllm (a vLLM engine: colocated in the trainer's process, asleep while it trains, or on GPUs of its own), or auto: the planner tries each one the runtime can run and picks per plan (a plan file always names one).")
    rollout_placement: Literal["auto", "colocated", "dedicated"] = Field("auto", description="Where the rollouts run: colocated (on the trainer's GPUs, time-shared) or dedicated (vLLM servers of the student on GPUs of their own, as many as the planner chooses, their weights pushed every step; a served model needs a checkpoint folder with a config.json to export), or auto: the planner tries both.")
    schedule: Literal["auto", "sync", "async"] = Field("auto", description="sync: each step generates, scores and trains in turn; async: the next step's rollouts are generated while this one trains (one step ahead, completions one update old; on dedicated rollout GPUs only); auto: the planner tries both.")
    teacher_serving: Literal["auto", "in-process", "vllm-server"] = Field("auto", description="How the teacher scores (the teacher role): in-process (the trainer's PyTorch world holds it: replicate, shard, pipeline, tp; colocated or on ranks of its own) or vllm-server (vLLM OpenAI servers of the teacher on GPUs of their own, replicas x TP, returning top-k prompt log-probs over the network; needs teacher_output topk), or auto: the planner tries both.")

    @model_validator(mode="before")
    @classmethod
    def _precision(cls, data):
        """Files written before mixed_precision existed say `grad_dtype: bf16` (the old default),
        which only the master layout has: read them as master rather than refuse them."""
        if isinstance(data, dict) and "mixed_precision" not in data and data.get("grad_dtype") == "bf16":
            return data | {"mixed_precision": "master"}
        return data

    @model_validator(mode="after")
    def _rules(self) -> "Workload":
        if self.micro_batch_min > self.micro_batch_max:
            raise ValueError(f"micro_batch_min ({self.micro_batch_min}) must not exceed micro_batch_max ({self.micro_batch_max})")
        if self.micro_batch_min > self.global_batch:
            raise ValueError(f"micro_batch_min ({self.micro_batch_min}) must not exceed global_batch ({self.global_batch})")
        if self.mixed_precision == "autocast" and self.grad_dtype == "bf16":
            raise ValueError("grad_dtype: bf16 gradients need mixed_precision: master (under autocast they follow the fp32 weights)")
        if self.teacher_serving == "vllm-server" and self.teacher_output in ("logits", "cached"):
            raise ValueError(f"teacher_serving: a vLLM-served teacher returns top-k log-probs only; set teacher_output: topk or auto (got {self.teacher_output})")
        if self.schedule == "async" and self.rollout_placement == "colocated":
            raise ValueError("schedule: async runs rollouts on GPUs of their own one step ahead; set rollout_placement: dedicated or auto (got colocated)")
        if self.teacher_output == "cached" and self.lmbda > 0:  # auto never picks cached on policy
            raise ValueError(f"teacher_output: cached teacher logits exist only for fixed completions; set lmbda: 0 (got {self.lmbda})")
        return self

    @property
    def weight_bytes(self) -> int:
        """Bytes per stored student weight: fp32 under autocast, the student dtype under master."""
        return 4 if self.mixed_precision == "autocast" else BYTES_PER_DTYPE[self.student_dtype]

    @property
    def grad_bytes(self) -> int:
        return BYTES_PER_DTYPE[self.grad_dtype] if self.grad_dtype else self.weight_bytes

    @property
    def optimizer_bytes(self) -> int:
        """Optimizer state per student parameter: AdamW's two fp32 moments (SGD: one momentum), plus
        an fp32 master copy where the weights themselves are 16-bit (master)."""
        return (8 if self.optimizer == "adamw" else 4) + (4 if self.weight_bytes < 4 else 0)

    @property
    def outputs(self) -> tuple[str, ...]:
        """The teacher outputs this job allows: the one it fixes, or under auto every one its lmbda
        allows (a cache holds fixed completions only: lmbda 0)."""
        if self.teacher_output != "auto":
            return (self.teacher_output,)
        return ("logits", "topk") + (("cached",) if self.lmbda == 0 else ())

    @property
    def seq_len(self) -> int:
        return self.prompt_len + self.completion_len

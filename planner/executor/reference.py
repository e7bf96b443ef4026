"""The same GKD training in one process, without torch.distributed: the tests' ground truth.

It walks the micro-batches of every student rank in the order the distributed run splits them,
with a full teacher and a plain student, and averages the loss and the gradients over all of them,
which is what DDP / FSDP averaging over the student ranks computes. The optimizer, schedule and
clipping are the plan's `training` section's; evaluation is one no-grad loss over the whole eval
split in one batch.
"""

from __future__ import annotations

import torch

from planner.executor import build, models, recompute, schedule
from planner.executor.data import load_samples, micro_batch_indices
from planner.executor.generate import generate
from planner.executor.loop import LOGITS_DTYPES, RunOptions, autocast, eval_points, on_policy, sample_seed
from planner.executor.loss import generalized_jsd, top_k
from planner.executor.teacher import completion_logits
from planner.inputs.training import resolve_steps
from planner.plan import Plan, tokenizer_folder


def reference_run(plan: Plan, opts: RunOptions) -> dict:
    """Per-step loss, gradient norm and lr, eval losses as [step, loss], and the trained student."""
    w, t, s, tr, seed = plan.workload, plan.teacher, plan.student, plan.training, opts.seed
    device = torch.device("cpu")
    models.folders(plan, opts.random_init)  # the same refusal as the distributed run
    t_attn, s_attn = recompute.attn_implementation(w.flash_attention), recompute.attn_implementation(w.flash_attention, w.grad_checkpointing)
    teacher = build.freeze(build.build_model(t.ref, t.shape, w.teacher_dtype or t.shape.dtype, seed, t_attn, opts.random_init))
    student = recompute.apply(build.build_model(s.ref, s.shape, "fp32", seed + 1, s_attn, opts.random_init), w.grad_checkpointing).train()
    opt = schedule.make_optimizer(student.parameters(), w.optimizer, tr)
    samples, held = load_samples(plan, build.build_tokenizer(tokenizer_folder(plan)), seed, plan.dataset)
    steps = resolve_steps(opts.steps, tr, w.epochs, len(samples.rows) if samples.rows else None, w.global_batch)
    sched = schedule.make_scheduler(opt, tr, steps)
    evals = eval_points(0, steps, tr.eval_every) if held else []
    n, ga, ldtype = len(s.ranks), plan.grad_accum, LOGITS_DTYPES[w.logits_dtype]
    chunk = w.loss_chunk_tokens if w.loss == "chunked" else None
    out = {"loss": [], "grad_norm": [], "lr": [], "eval_loss": [], "student": student}
    for step in range(steps):
        total = 0.0
        for micro in range(ga):
            for r in range(n):
                batch = samples.batch(micro_batch_indices(step, micro, r, n, plan.micro_batch, ga))
                with autocast(device, w.student_dtype):
                    if on_policy(seed, step, micro, w.lmbda):
                        batch = batch.pad(batch.prompt_len, w.completion_len)
                        batch = generate(student, batch, batch.prompt_len, w.temperature, sample_seed(seed, step, micro, r), w.generation_kv_cache)
                    with torch.no_grad():
                        t_logits = completion_logits(teacher, batch.input_ids, batch.attention_mask, batch.completion_len)
                    if w.teacher_output != "logits":  # topk, or cached (the same top-k, read back from disk)
                        t_logits = top_k(t_logits, w.topk)
                    s_logits = completion_logits(student, batch.input_ids, batch.attention_mask, batch.completion_len)
                    loss = generalized_jsd(s_logits, t_logits, batch.labels, w.beta, w.temperature, chunk, ldtype)
                    (loss / (ga * n)).backward()
                total += loss.item()
        out["grad_norm"].append(float(torch.nn.utils.clip_grad_norm_(student.parameters(), tr.max_grad_norm or float("inf"))))
        out["lr"].append(schedule.current_lr(opt))
        opt.step()
        schedule.step(sched)
        opt.zero_grad(set_to_none=True)
        out["loss"].append(total / (ga * n))
        if step + 1 in evals:
            batch = held.batch(list(range(len(held.rows))))
            with torch.no_grad(), autocast(device, w.student_dtype):
                t_logits = completion_logits(teacher, batch.input_ids, batch.attention_mask, batch.completion_len)
                if w.teacher_output != "logits":
                    t_logits = top_k(t_logits, w.topk)
                s_logits = completion_logits(student, batch.input_ids, batch.attention_mask, batch.completion_len)
                out["eval_loss"].append([step + 1, float(generalized_jsd(s_logits, t_logits, batch.labels, w.beta, w.temperature, chunk, ldtype))])
    return out


def reference_losses(plan: Plan, opts: RunOptions) -> tuple[list[float], list[float]]:
    """Per-step global-batch loss and gradient norm of the run, as the distributed run reports them."""
    out = reference_run(plan, opts)
    return out["loss"], out["grad_norm"]

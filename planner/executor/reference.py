"""The same GKD training in one process, without torch.distributed: the tests' ground truth.

It walks the micro-batches of every student rank in the order the distributed run splits them,
with a full teacher and a plain student, and averages the loss and the gradients over all of them,
which is what DDP / FSDP averaging over the student ranks computes.
"""

from __future__ import annotations

import torch

from planner.executor import build, models, recompute
from planner.executor.data import make_samples, micro_batch_indices
from planner.executor.generate import generate
from planner.executor.loop import LOGITS_DTYPES, RunOptions, autocast, on_policy, sample_seed
from planner.executor.loss import generalized_jsd
from planner.executor.teacher import completion_logits
from planner.plan import Plan


def reference_losses(plan: Plan, opts: RunOptions) -> tuple[list[float], list[float]]:
    """Per-step global-batch loss and gradient norm of `opts.steps` steps, as the distributed run reports them."""
    w, t, s, seed = plan.workload, plan.teacher, plan.student, opts.seed
    device = torch.device("cpu")
    models.folders(plan, opts.random_init)  # the same refusal as the distributed run
    t_attn, s_attn = recompute.attn_implementation(w.flash_attention), recompute.attn_implementation(w.flash_attention, w.grad_checkpointing)
    teacher = build.freeze(build.build_model(t.ref, t.shape, w.teacher_dtype or t.shape.dtype, seed, t_attn, opts.random_init))
    student = recompute.apply(build.build_model(s.ref, s.shape, "fp32", seed + 1, s_attn, opts.random_init), w.grad_checkpointing).train()
    kw = dict(lr=opts.lr, weight_decay=opts.weight_decay) if w.optimizer == "adamw" else dict(lr=opts.lr, momentum=0.9)
    opt = (torch.optim.AdamW if w.optimizer == "adamw" else torch.optim.SGD)(student.parameters(), **kw)
    samples = make_samples(plan, build.build_tokenizer(plan.tokenizer), seed, plan.dataset)
    n, ga, ldtype = len(s.ranks), plan.grad_accum, LOGITS_DTYPES[w.logits_dtype]
    chunk = w.loss_chunk_tokens if w.loss == "chunked" else None
    losses, norms = [], []
    for step in range(opts.steps):
        total = 0.0
        for micro in range(ga):
            for r in range(n):
                batch = samples.batch(micro_batch_indices(step, micro, r, n, plan.micro_batch, ga))
                with autocast(device, w.student_dtype):
                    if on_policy(seed, step, micro, w.lmbda):
                        batch = generate(student, batch, w.prompt_len, w.temperature, sample_seed(seed, step, micro, r), w.generation_kv_cache)
                    with torch.no_grad():
                        t_logits = completion_logits(teacher, batch.input_ids, batch.attention_mask, w.completion_len)
                    s_logits = completion_logits(student, batch.input_ids, batch.attention_mask, w.completion_len)
                    loss = generalized_jsd(s_logits, t_logits, batch.labels, w.beta, w.temperature, chunk, ldtype)
                    (loss / (ga * n)).backward()
                total += loss.item()
        norms.append(float(torch.nn.utils.clip_grad_norm_(student.parameters(), opts.max_grad_norm)))
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(total / (ga * n))
    return losses, norms

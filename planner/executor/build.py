"""Build the teacher, the student and the tokenizer the plan names; never touches the hub.

A model reference is resolved like `planner.inputs.load`: a checkpoint folder, a config.json (a
path, a folder, or a bundled name), or a YAML shape (a `LlamaConfig` built from the plan's
`shape`; a mixture-of-experts shape its family's config: `MixtralConfig` or `Qwen3MoeConfig`; another
MoE family is refused rather than built dense). `model_config` turns any of them into a `transformers` config; `build_model` gives the
whole model on the CPU: seeded random weights (seeding right before construction makes every rank
build identical weights), or a checkpoint folder's weights via `from_pretrained` (the single-process
reference). The executor itself loads checkpoints without materialising them (`weights`).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from planner.files import read_text
from planner.inputs.errors import InputError
from planner.inputs.load import bundled_dir
from planner.inputs.model import ModelShape
from planner.plan import TOKENIZER_FILES

TORCH_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


def resolve(ref: str) -> Path | None:
    """The checkpoint folder or config.json that `ref` names, or None (build from the shape)."""
    p = Path(ref).expanduser()
    if p.is_dir():
        if any((p / f).is_file() for f in WEIGHT_FILES):
            return p
        return p / "config.json" if (p / "config.json").is_file() else None
    if p.is_file():
        return p if p.suffix == ".json" else None
    bundled = bundled_dir("models") / f"{ref.lower()}.json"
    return bundled if bundled.is_file() else None


MOE_CONFIGS = {"mixtral": "MixtralConfig", "qwen3_moe": "Qwen3MoeConfig"}


def moe_config_from_shape(shape: ModelShape):
    """A written-out mixture-of-experts shape as its family's config (every expert built, as
    `from_hf_config` reads them); the dense layers of a Qwen3-MoE shape come first."""
    import transformers

    if shape.family not in MOE_CONFIGS:
        raise InputError(f"{shape.name}: family: a mixture-of-experts shape is built as {' or '.join(MOE_CONFIGS)}, "
                         f"not {shape.family!r}; give its config.json instead, or one of those families")
    common = dict(vocab_size=shape.vocab, hidden_size=shape.hidden, num_hidden_layers=shape.num_layers,
                  num_attention_heads=shape.num_heads, num_key_value_heads=shape.kv_heads, head_dim=shape.head_width,
                  max_position_embeddings=shape.max_positions, tie_word_embeddings=shape.tied_embeddings,
                  num_experts_per_tok=shape.experts_per_token)
    if shape.family == "mixtral":
        return transformers.MixtralConfig(**common, intermediate_size=shape.expert_ffn, num_local_experts=shape.num_experts,
                                          sliding_window=shape.sliding_window)
    return transformers.Qwen3MoeConfig(**common, intermediate_size=shape.ffn, moe_intermediate_size=shape.expert_ffn,
                                       num_experts=shape.num_experts, attention_bias=shape.qkv_bias, decoder_sparse_step=1,
                                       mlp_only_layers=list(range(shape.num_layers - shape.expert_layers)))


def config_from_shape(shape: ModelShape):
    from transformers import LlamaConfig

    if shape.num_experts:
        return moe_config_from_shape(shape)
    return LlamaConfig(
        vocab_size=shape.vocab, hidden_size=shape.hidden, intermediate_size=shape.ffn,
        num_hidden_layers=shape.num_layers, num_attention_heads=shape.num_heads,
        num_key_value_heads=shape.kv_heads, head_dim=shape.head_width,
        max_position_embeddings=shape.max_positions, tie_word_embeddings=shape.tied_embeddings,
        attention_bias=shape.qkv_bias, mlp_bias=shape.mlp_bias,
    )


def model_config(ref: str, shape: ModelShape, attn: str = "sdpa"):
    """The `transformers` config of `ref` (a checkpoint folder, a config.json, a bundled name or a
    shape), with attention implementation `attn` and no generation cache by default."""
    from transformers import AutoConfig

    path = resolve(ref)
    if path is not None:
        data = json.loads(read_text(path / "config.json" if path.is_dir() else path))
        data.pop("torch_dtype", None), data.pop("dtype", None)
        config = AutoConfig.for_model(**data)
    else:
        config = config_from_shape(shape)
    config._attn_implementation = attn
    config.use_cache = False
    return config


def build_model(ref: str, shape: ModelShape, dtype: str, seed: int, attn: str = "sdpa", random_init: bool = False) -> nn.Module:
    """A causal LM on the CPU, in `dtype`: a checkpoint folder's weights (unless `random_init`), else
    weights that depend only on (`ref`, `seed`)."""
    from transformers import AutoModelForCausalLM

    torch_dtype = TORCH_DTYPES.get(dtype, torch.float32)
    path = resolve(ref)
    if path is not None and path.is_dir() and not random_init:
        model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=torch_dtype, attn_implementation=attn)
    else:
        config = model_config(ref, shape, attn)
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config).to(torch_dtype)
    model.config.use_cache = False
    return model


def freeze(model: nn.Module) -> nn.Module:
    """The teacher: eval mode, no gradients, no wrapper."""
    return model.eval().requires_grad_(False)


class ByteTokenizer:
    """Bytes as tokens: pad 0, bos 1, eos 2, byte b -> b + 3 (needs a vocabulary of at least 259)."""

    pad_token_id, bos_token_id, eos_token_id = 0, 1, 2
    vocab_size = 259
    chat_template = None

    def encode(self, text: str) -> list[int]:
        return [b + 3 for b in text.encode("utf-8")]

    def decode(self, ids: list[int]) -> str:
        return bytes(i - 3 for i in ids if i >= 3).decode("utf-8", errors="replace")




def build_tokenizer(ref: str | None):
    """A local Hugging Face tokenizer folder, or the byte-level fallback. A folder that is missing,
    empty or unreadable is one `InputError` line (never a pointer to the hub: nothing is downloaded)."""
    if ref is None:
        return ByteTokenizer()
    path = Path(ref).expanduser()
    if not path.is_dir():
        raise InputError(f"{path}: tokenizer folder not found{' (a file, not a folder)' if path.exists() else ''}; "
                         f"give a local folder holding {' or '.join(TOKENIZER_FILES[:2])} (nothing is downloaded)")
    if not any((path / f).is_file() for f in TOKENIZER_FILES):
        raise InputError(f"{path}: no tokenizer files in this folder (looked for {', '.join(TOKENIZER_FILES)}); "
                         "save one with `tokenizer.save_pretrained(FOLDER)`")
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except Exception as e:  # noqa: BLE001 - transformers raises OSError, ValueError, KeyError, ... for a broken folder
        text = str(e).strip().splitlines()[0] if str(e).strip() else ""
        detail = type(e).__name__ + (f": {text}" if text and "huggingface" not in text.lower() else "")
        raise InputError(f"{path}: not a usable tokenizer folder ({detail})") from None
    if tok.pad_token_id is None:
        if tok.eos_token is None:
            raise InputError(f"{path}: the tokenizer has neither a pad nor an eos token; the executor pads with one of them")
        tok.pad_token = tok.eos_token
    return tok

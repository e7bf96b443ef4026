"""Model shapes: dense decoder-only transformers, written out or read from a Hugging Face config.

The parameter count itself is a formula and lives in `planner.cost.params`; this module only
describes and validates shapes.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from planner.inputs.errors import InputError

Dtype = Literal["fp32", "bf16", "fp16", "fp8", "int8"]

BYTES_PER_DTYPE: dict[str, int] = {"fp32": 4, "bf16": 2, "fp16": 2, "fp8": 1, "int8": 1}


class Strict(BaseModel):
    """Base for every input schema: unknown keys and NaN/inf are errors."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)


class ModelShape(Strict):
    """The shape of a dense decoder-only transformer (Llama, Mistral, Qwen2, Gemma 2, Phi-3)."""

    name: str = Field("model", description="Display name.")
    family: str = Field("llama", description="Hugging Face `model_type` the shape came from.")
    num_layers: int = Field(gt=0, description="Decoder layers (`num_hidden_layers`).")
    hidden: int = Field(gt=0, description="Residual width (`hidden_size`).")
    num_heads: int = Field(gt=0, description="Attention (query) heads.")
    num_kv_heads: int | None = Field(None, gt=0, description="Key/value heads (GQA/MQA); default num_heads.")
    head_dim: int | None = Field(None, gt=0, description="Per-head width; default hidden / num_heads.")
    ffn: int = Field(gt=0, description="MLP inner width (`intermediate_size`).")
    gated_mlp: bool = Field(True, description="SwiGLU/GeGLU MLP with gate, up and down projections (3 matrices) instead of 2.")
    vocab: int = Field(gt=0, description="Vocabulary size (rows of the embedding).")
    tied_embeddings: bool = Field(False, description="LM head shares the input embedding matrix.")
    qkv_bias: bool = Field(False, description="Biases on the query, key and value projections (Qwen2).")
    o_bias: bool = Field(False, description="Bias on the attention output projection.")
    mlp_bias: bool = Field(False, description="Biases on the MLP projections.")
    norms_per_layer: int = Field(2, ge=0, description="Norm weight vectors of width `hidden` per layer (2 Llama, 4 Gemma 2).")
    norm_bias: bool = Field(False, description="Norms carry a bias (LayerNorm) as well as a weight (RMSNorm: no).")
    dtype: Dtype = Field("bf16", description="Dtype the weights are stored and run in.")
    max_positions: int = Field(4096, gt=0, description="Maximum sequence length (`max_position_embeddings`).")

    @model_validator(mode="after")
    def _heads(self) -> "ModelShape":
        if self.head_dim is None and self.hidden % self.num_heads:
            raise ValueError(f"num_heads ({self.num_heads}) must divide hidden ({self.hidden}) unless head_dim is given")
        if self.kv_heads > self.num_heads or self.num_heads % self.kv_heads:
            raise ValueError(f"num_kv_heads ({self.kv_heads}) must divide num_heads ({self.num_heads})")
        return self

    @property
    def kv_heads(self) -> int:
        return self.num_kv_heads or self.num_heads

    @property
    def head_width(self) -> int:
        return self.head_dim or self.hidden // self.num_heads


# --- Hugging Face config.json -------------------------------------------------------------

SUPPORTED_FAMILIES = ("llama", "mistral", "qwen2", "gemma", "gemma2", "phi3")
_MOE_HINTS = ("moe", "mixtral", "deepseek", "dbrx", "jamba", "arctic", "granitemoe", "olmoe")
_HF_DTYPES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}


def from_hf_config(cfg: dict[str, Any], source: str, name: str | None = None) -> ModelShape:
    """Build a `ModelShape` from a Hugging Face `config.json` mapping.

    Family quirks (checked against `transformers` in tests/inputs/test_hf_parity.py):
    - llama: `attention_bias` puts biases on q, k, v and o; `mlp_bias` on the MLP.
    - mistral: no biases.
    - qwen2: biases on q, k, v only.
    - gemma / gemma2: embeddings always tied; gemma2 has four norms per layer; explicit head_dim.
    - phi3: fused qkv and gate_up projections (same parameter count as separate ones).
    """
    family = cfg.get("model_type")
    if not isinstance(family, str):
        raise InputError(f"{source}: model_type: missing; expected one of {', '.join(SUPPORTED_FAMILIES)}")
    if family not in SUPPORTED_FAMILIES:
        why = "mixture-of-experts models are not supported yet" if any(h in family for h in _MOE_HINTS) or "num_local_experts" in cfg or "num_experts" in cfg else "not a supported dense decoder family"
        raise InputError(f"{source}: model_type: '{family}': {why}; supported: {', '.join(SUPPORTED_FAMILIES)}")
    get = cfg.get
    attn_bias = bool(get("attention_bias", False))
    fields: dict[str, Any] = {
        "name": name or cfg.get("_name_or_path") or family,
        "family": family,
        "num_layers": get("num_hidden_layers"),
        "hidden": get("hidden_size"),
        "num_heads": get("num_attention_heads"),
        "num_kv_heads": get("num_key_value_heads"),
        "head_dim": get("head_dim"),
        "ffn": get("intermediate_size"),
        "vocab": get("vocab_size"),
        "tied_embeddings": bool(get("tie_word_embeddings", family.startswith("gemma"))),
        "max_positions": get("max_position_embeddings", 4096),
        "gated_mlp": True,
    }
    if family == "llama":
        fields.update(qkv_bias=attn_bias, o_bias=attn_bias, mlp_bias=bool(get("mlp_bias", False)))
    elif family == "qwen2":
        fields.update(qkv_bias=True)
    elif family == "gemma2":
        fields.update(norms_per_layer=4, qkv_bias=attn_bias, o_bias=attn_bias)
    elif family == "gemma":
        fields.update(qkv_bias=attn_bias, o_bias=attn_bias)
    dtype = get("torch_dtype") or get("dtype")
    if dtype is not None:
        if dtype not in _HF_DTYPES:
            raise InputError(f"{source}: torch_dtype: '{dtype}' is not one of {', '.join(_HF_DTYPES)}")
        fields["dtype"] = _HF_DTYPES[dtype]
    missing = [k for k, hf in (("num_layers", "num_hidden_layers"), ("hidden", "hidden_size"),
                               ("num_heads", "num_attention_heads"), ("ffn", "intermediate_size"),
                               ("vocab", "vocab_size")) if fields[k] is None]
    if missing:
        raise InputError([f"{source}: {hf}: missing" for k, hf in (("num_layers", "num_hidden_layers"), ("hidden", "hidden_size"),
                          ("num_heads", "num_attention_heads"), ("ffn", "intermediate_size"), ("vocab", "vocab_size")) if k in missing])
    from pydantic import ValidationError

    from planner.inputs.errors import from_validation

    try:
        return ModelShape(**fields)
    except ValidationError as e:
        raise from_validation(e, source) from None

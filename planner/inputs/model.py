"""Model shapes: dense decoder-only transformers, written out or read from a Hugging Face config.

The parameter count itself is a formula and lives in `planner.cost.params`; this module only
describes and validates shapes.
"""

from __future__ import annotations

import types
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from planner.inputs.errors import InputError

Dtype = Literal["fp32", "bf16", "fp16", "fp8", "int8"]

BYTES_PER_DTYPE: dict[str, int] = {"fp32": 4, "bf16": 2, "fp16": 2, "fp8": 1, "int8": 1}

# Every width, count and length of a model or a workload is at most 2^24 (16,777,216): ten times the
# largest real one (Llama 4's 10M-token context), small enough that no product of them overflows a
# float and no input makes the planner loop for minutes.
MAX_SIZE = 2**24


def _numeric(annotation) -> bool:
    """An int or float field (or optional, or a list of them)."""
    if get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    if annotation in (int, float):
        return True
    return get_origin(annotation) in (Union, types.UnionType, list) and any(_numeric(a) for a in get_args(annotation))


def shown(value: Any) -> str:
    """A number as an error message shows it (a 400-digit integer is too long and too large for a float)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"a {int(value.bit_length() * 0.30103) + 1}-digit number"
    return f"{value:.4g}" if isinstance(value, float) else repr(value)


def _bounded(value: Any) -> Any:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > MAX_SIZE:
        raise ValueError(f"{shown(value)} is over the planner's bound of {MAX_SIZE:,} (2^24) for a size")
    return value


Size = Annotated[int, BeforeValidator(_bounded)]  # a whole number of at most MAX_SIZE


class Strict(BaseModel):
    """Base for every input schema: unknown keys, NaN/inf and booleans given as numbers are errors."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_booleans(cls, value: Any, info: ValidationInfo) -> Any:
        """pydantic reads `true` as 1 in an int field (YAML `num_layers: true` was one layer)."""
        if isinstance(value, bool) or (isinstance(value, list) and any(isinstance(v, bool) for v in value)):
            field = cls.model_fields.get(info.field_name or "")
            if field is not None and _numeric(field.annotation):
                raise ValueError("expected a number, got true/false")
        return value


class ModelShape(Strict):
    """The shape of a decoder-only transformer: dense (Llama, Mistral, Qwen2/3, Gemma 1-3, Phi-3) or
    mixture-of-experts (Mixtral, Qwen2-MoE, Qwen3-MoE)."""

    name: str = Field("model", description="Display name.")
    family: str = Field("llama", description="Hugging Face `model_type` the shape came from.")
    num_layers: Size = Field(gt=0, description="Decoder layers (`num_hidden_layers`).")
    hidden: Size = Field(gt=0, description="Residual width (`hidden_size`).")
    num_heads: Size = Field(gt=0, description="Attention (query) heads.")
    num_kv_heads: Size | None = Field(None, gt=0, description="Key/value heads (GQA/MQA); default num_heads.")
    head_dim: Size | None = Field(None, gt=0, description="Per-head width; default hidden / num_heads.")
    ffn: Size = Field(gt=0, description="Inner width of the dense MLP (`intermediate_size`); in a mixture-of-experts model, of its dense layers.")
    gated_mlp: bool = Field(True, description="SwiGLU/GeGLU MLP with gate, up and down projections (3 matrices) instead of 2.")
    vocab: Size = Field(gt=0, description="Vocabulary size (rows of the embedding).")
    tied_embeddings: bool = Field(False, description="LM head shares the input embedding matrix.")
    qkv_bias: bool = Field(False, description="Biases on the query, key and value projections (Qwen2).")
    o_bias: bool = Field(False, description="Bias on the attention output projection.")
    mlp_bias: bool = Field(False, description="Biases on the MLP projections.")
    norms_per_layer: Size = Field(2, ge=0, description="Norm weight vectors of width `hidden` per layer (2 Llama, 4 Gemma 2/3).")
    norm_bias: bool = Field(False, description="Norms carry a bias (LayerNorm) as well as a weight (RMSNorm: no).")
    fused_proj: bool = Field(False, description="q, k, v stored as one matrix and gate, up as another (Phi-3): the same parameters in fewer tensors.")
    qk_norm: bool = Field(False, description="RMSNorm of width head_dim on every query and key head (Qwen3, Gemma 3): 2 vectors per layer.")
    sliding_window: Size | None = Field(None, gt=0, description="Tokens a sliding-window layer attends to (itself included); None = no sliding layers.")
    sliding_layers: Size = Field(0, ge=0, description="Layers that attend through the sliding window; the others attend to the whole context.")
    num_experts: Size = Field(0, ge=0, description="Routed experts per mixture-of-experts layer (`num_experts` / `num_local_experts`); 0 = dense.")
    experts_per_token: Size = Field(0, ge=0, description="Routed experts each token runs through (`num_experts_per_tok`).")
    expert_ffn: Size | None = Field(None, gt=0, description="Inner width of one routed expert (`moe_intermediate_size`; Mixtral: `intermediate_size`).")
    moe_layers: Size | None = Field(None, ge=0, description="Layers with experts (`decoder_sparse_step`, `mlp_only_layers`); default all when num_experts > 0.")
    shared_expert_ffn: Size = Field(0, ge=0, description="Inner width of the always-active shared expert of each MoE layer (Qwen2-MoE); 0 = none.")
    shared_expert_gate: bool = Field(False, description="The shared expert's output is scaled by a sigmoid gate of width 1 (Qwen2-MoE).")
    dtype: Dtype = Field("bf16", description="Dtype the weights are stored and run in.")
    max_positions: Size = Field(4096, gt=0, description="Maximum sequence length (`max_position_embeddings`).")

    @model_validator(mode="after")
    def _heads(self) -> "ModelShape":
        if self.head_dim is None and self.hidden % self.num_heads:
            raise ValueError(f"num_heads ({self.num_heads}) must divide hidden ({self.hidden}) unless head_dim is given")
        if self.kv_heads > self.num_heads or self.num_heads % self.kv_heads:
            raise ValueError(f"num_kv_heads ({self.kv_heads}) must divide num_heads ({self.num_heads})")
        if self.sliding_layers > self.num_layers:
            raise ValueError(f"sliding_layers ({self.sliding_layers}) exceeds num_layers ({self.num_layers})")
        if self.sliding_layers and self.sliding_window is None:
            raise ValueError(f"sliding_layers ({self.sliding_layers}) needs a sliding_window")
        return self

    @model_validator(mode="after")
    def _experts(self) -> "ModelShape":
        if not self.num_experts:
            if self.experts_per_token or self.moe_layers or self.shared_expert_ffn:
                raise ValueError("experts_per_token, moe_layers and shared_expert_ffn need num_experts > 0")
            return self
        if not 1 <= self.experts_per_token <= self.num_experts:
            raise ValueError(f"experts_per_token ({self.experts_per_token}) must be between 1 and num_experts ({self.num_experts})")
        if self.expert_ffn is None:
            raise ValueError("expert_ffn: missing (the inner width of one expert) for a model with num_experts > 0")
        if self.moe_layers is not None and self.moe_layers > self.num_layers:
            raise ValueError(f"moe_layers ({self.moe_layers}) exceeds num_layers ({self.num_layers})")
        if self.shared_expert_gate and not self.shared_expert_ffn:
            raise ValueError("shared_expert_gate needs a shared_expert_ffn")
        return self

    @property
    def kv_heads(self) -> int:
        return self.num_kv_heads or self.num_heads

    @property
    def head_width(self) -> int:
        return self.head_dim or self.hidden // self.num_heads

    @property
    def expert_layers(self) -> int:
        """Layers whose MLP is a mixture of experts (0 for a dense model)."""
        if not self.num_experts:
            return 0
        return self.num_layers if self.moe_layers is None else self.moe_layers


# --- Hugging Face config.json -------------------------------------------------------------

DENSE_FAMILIES = ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3", "gemma3_text", "phi3")
MOE_FAMILIES = ("mixtral", "qwen2_moe", "qwen3_moe")
SUPPORTED_FAMILIES = DENSE_FAMILIES + MOE_FAMILIES
_MOE_HINTS = ("moe", "mixtral", "deepseek", "dbrx", "jamba", "arctic", "olmoe")
_HF_DTYPES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}
_REQUIRED = (("num_layers", "num_hidden_layers"), ("hidden", "hidden_size"), ("num_heads", "num_attention_heads"),
             ("ffn", "intermediate_size"), ("vocab", "vocab_size"))

# Defaults of transformers' config classes that published config.json files rely on (the Gemma 3
# `text_config`s name neither heads nor vocabulary): Gemma3TextConfig, Gemma2Config, GemmaConfig,
# Qwen3Config (head_dim 128, not hidden / heads).
_FAMILY_DEFAULTS: dict[str, dict[str, Any]] = {
    "gemma": {"head_dim": 256},
    "gemma2": {"head_dim": 256, "sliding_window": 4096},
    "gemma3_text": {"vocab_size": 262208, "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 256,
                    "max_position_embeddings": 131072, "sliding_window": 4096, "sliding_window_pattern": 6},
    "qwen3": {"head_dim": 128},
}


def _sliding(cfg: dict[str, Any], family: str, layers: int) -> tuple[int | None, int]:
    """(window, layers that use it), as transformers builds the attention masks of each family."""
    window = cfg.get("sliding_window")
    if family.startswith("qwen") and not cfg.get("use_sliding_window", False):
        window = None  # Qwen configs carry a window they do not use
    if not window or family in ("llama", "gemma"):
        return None, 0
    types = cfg.get("layer_types")
    if types and family in ("qwen2", "qwen3", "qwen2_moe", "gemma2", "gemma3_text"):
        return window, sum(t == "sliding_attention" for t in types)
    if family in ("qwen2", "qwen3"):  # the layers from max_window_layers on
        return window, max(0, layers - cfg.get("max_window_layers", 28))
    if family == "qwen2_moe":  # every other layer below max_window_layers
        return window, sum(1 for i in range(min(layers, cfg.get("max_window_layers", 28))) if i % 2 == 0)
    if family == "gemma2":  # even layers local, odd layers global
        return window, (layers + 1) // 2
    if family == "gemma3_text":  # every `sliding_window_pattern`-th layer global
        return window, layers - layers // cfg.get("sliding_window_pattern", 6)
    return window, layers  # mistral, mixtral, phi3, qwen3_moe: every layer


def _experts(cfg: dict[str, Any], family: str, source: str, layers: int) -> dict[str, Any]:
    """Mixture-of-experts fields; missing sizes are errors rather than transformers' defaults."""
    experts = cfg.get("num_local_experts", cfg.get("num_experts"))
    width_key = "intermediate_size" if family == "mixtral" else "moe_intermediate_size"
    keys = [("num_local_experts" if family == "mixtral" else "num_experts", experts),
            ("num_experts_per_tok", cfg.get("num_experts_per_tok")), (width_key, cfg.get(width_key))]
    if family == "qwen2_moe":
        keys.append(("shared_expert_intermediate_size", cfg.get("shared_expert_intermediate_size")))
    missing = [f"{source}: {k}: missing (a {family} config needs it)" for k, v in keys if v is None]
    if missing:
        raise InputError(missing)
    per_token = cfg["num_experts_per_tok"]
    if experts and not 1 <= per_token <= experts:
        raise InputError(f"{source}: num_experts_per_tok: {per_token} must be between 1 and the {experts} experts")
    if not experts:
        return {}
    if family == "mixtral":
        moe_layers = layers
    else:  # Qwen2MoeDecoderLayer / Qwen3MoeDecoderLayer: experts unless listed in mlp_only_layers, every step-th layer
        step, dense = cfg.get("decoder_sparse_step", 1), set(cfg.get("mlp_only_layers") or ())
        moe_layers = sum(1 for i in range(layers) if i not in dense and (i + 1) % step == 0)
    shared = cfg.get("shared_expert_intermediate_size", 0) if family == "qwen2_moe" else 0
    return {"num_experts": experts, "experts_per_token": per_token, "expert_ffn": cfg[width_key],
            "moe_layers": moe_layers, "shared_expert_ffn": shared, "shared_expert_gate": bool(shared)}


def from_hf_config(cfg: dict[str, Any], source: str, name: str | None = None) -> ModelShape:
    """Build a `ModelShape` from a Hugging Face `config.json` mapping.

    Family quirks (checked against `transformers` in tests/inputs/test_hf_parity.py):
    - llama: `attention_bias` puts biases on q, k, v and o; `mlp_bias` on the MLP.
    - mistral, mixtral: no biases; a `sliding_window` applies to every layer.
    - qwen2 / qwen2_moe: biases on q, k, v only; qwen3 / qwen3_moe: none, q/k norms, explicit head_dim.
    - gemma / gemma2 / gemma3: embeddings always tied; gemma2/3 have four norms per layer and
      local (sliding) layers; gemma3 adds q/k norms. A `gemma3` (image-text) config is read through
      its `text_config`: the language model only, not the vision tower.
    - phi3: fused qkv and gate_up projections (same parameter count as separate ones).
    - MoE: experts as `Qwen3MoeSparseMoeBlock` / `MixtralSparseMoeBlock` build them (router without
      bias, gated experts); Qwen2-MoE adds a gated shared expert.
    """
    family = cfg.get("model_type")
    if not isinstance(family, str):
        raise InputError(f"{source}: model_type: missing; expected one of {', '.join(SUPPORTED_FAMILIES)}")
    if family not in SUPPORTED_FAMILIES:
        moe = any(h in family for h in _MOE_HINTS) or "num_local_experts" in cfg or "num_experts" in cfg
        why = "this mixture-of-experts family is not supported yet" if moe else "not a supported decoder family"
        raise InputError(f"{source}: model_type: '{family}': {why}; supported: {', '.join(SUPPORTED_FAMILIES)}")
    top = cfg
    if family == "gemma3":  # Gemma3ForConditionalGeneration: the language model's config
        if not isinstance(cfg.get("text_config"), dict):
            raise InputError(f"{source}: text_config: missing (a gemma3 config describes its language model there)")
        cfg, family, source = {"model_type": "gemma3_text"} | cfg["text_config"], "gemma3_text", f"{source}: text_config"
    cfg = _FAMILY_DEFAULTS.get(family, {}) | cfg
    get = cfg.get
    attn_bias = bool(get("attention_bias", False))
    fields: dict[str, Any] = {
        "name": name or top.get("_name_or_path") or family,
        "family": family,
        "num_layers": get("num_hidden_layers"),
        "hidden": get("hidden_size"),
        "num_heads": get("num_attention_heads"),
        "num_kv_heads": get("num_key_value_heads"),
        "head_dim": get("head_dim"),
        "ffn": get("intermediate_size"),
        "vocab": get("vocab_size"),
        "tied_embeddings": bool(top.get("tie_word_embeddings", family.startswith("gemma"))),
        "max_positions": get("max_position_embeddings", 4096),
        "gated_mlp": True,
    }
    missing = [f"{source}: {hf}: missing" for k, hf in _REQUIRED if fields[k] is None]
    if missing:
        raise InputError(missing)
    if family in ("llama", "gemma", "gemma2", "gemma3_text", "qwen3", "qwen3_moe"):
        fields.update(qkv_bias=attn_bias, o_bias=attn_bias)
    if family == "llama":
        fields.update(mlp_bias=bool(get("mlp_bias", False)))
    elif family == "qwen2":
        fields.update(qkv_bias=True)
    elif family == "qwen2_moe":
        fields.update(qkv_bias=bool(get("qkv_bias", True)))
    if family in ("gemma2", "gemma3_text"):
        fields.update(norms_per_layer=4)
    if family in ("qwen3", "qwen3_moe", "gemma3_text"):
        fields.update(qk_norm=True)
    if family == "phi3":
        fields.update(fused_proj=True)
    layers = fields["num_layers"]  # counted over below: a whole number within the bound first
    if isinstance(layers, bool) or not isinstance(layers, int) or not 0 < layers <= MAX_SIZE:
        raise InputError(f"{source}: num_hidden_layers: {shown(layers)} is not a whole number between 1 and {MAX_SIZE:,}")
    try:
        window, sliding = _sliding(cfg, family, layers)
        fields.update(sliding_window=window if sliding else None, sliding_layers=sliding)
        if family in MOE_FAMILIES:
            fields.update(_experts(cfg, family, source, layers))
    except (TypeError, ValueError, ZeroDivisionError) as e:  # e.g. `decoder_sparse_step: 0`, `mlp_only_layers: 3`
        raise InputError(f"{source}: the {family} layer layout (sliding_window, layer_types, max_window_layers, "
                         f"sliding_window_pattern, decoder_sparse_step, mlp_only_layers, experts) is not usable: {e}") from None
    dtype = get("torch_dtype") or get("dtype") or top.get("torch_dtype") or top.get("dtype")
    if dtype is not None:
        if not isinstance(dtype, str) or dtype not in _HF_DTYPES:
            raise InputError(f"{source}: torch_dtype: {dtype!r} is not one of {', '.join(_HF_DTYPES)}")
        fields["dtype"] = _HF_DTYPES[dtype]
    from pydantic import ValidationError

    from planner.inputs.errors import from_validation

    try:
        return ModelShape(**fields)
    except ValidationError as e:
        raise from_validation(e, source) from None

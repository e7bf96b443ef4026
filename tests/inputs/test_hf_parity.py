"""Golden test: our parameter count equals what `transformers` builds from the same config.json.

Source of truth: the model `transformers` instantiates from each bundled config (on the meta
device, no memory, no weights), summed over `parameters()`. Tolerance: exact (0 parameters), and
exact in the number of parameter tensors. The sliding-window layers we read must be the ones
transformers masks (`config.layer_types`, or every layer where the family has no per-layer list).
Published totals are checked in tests/cost/test_golden.py.
"""

import json

import pytest
import sympy as sp

from planner.cli.info import model_summary
from planner.cost import params
from planner.cost.symbols import S
from planner.inputs.load import bundled_dir, bundled_names
from planner.inputs.model import from_hf_config

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


def hf_config(config: dict):
    cfg = transformers.AutoConfig.for_model(**config)
    return cfg.text_config if config["model_type"] == "gemma3" else cfg  # the language model of an image-text Gemma 3


def hf_model(config: dict):
    with torch.device("meta"):
        return transformers.AutoModelForCausalLM.from_config(hf_config(config))


def hf_count(config: dict) -> int:
    return sum(p.numel() for p in hf_model(config).parameters())


def ours(config: dict, expr) -> int:
    return params.evaluate(expr, S, from_hf_config(config, "x"))


def bundled(name: str) -> dict:
    return json.loads((bundled_dir("models") / f"{name}.json").read_text())


# Same families, other switches: the config.json keys that change the module list or the masks.
_TINY = {"num_hidden_layers": 6, "hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2,
         "intermediate_size": 96, "vocab_size": 300}
VARIANTS = {
    "qwen3-bias-window": _TINY | {"model_type": "qwen3", "head_dim": 32, "attention_bias": True, "tie_word_embeddings": True,
                                  "use_sliding_window": True, "sliding_window": 16, "max_window_layers": 4},
    "qwen3-moe-sparse": _TINY | {"model_type": "qwen3_moe", "num_experts": 8, "num_experts_per_tok": 2, "moe_intermediate_size": 24,
                                 "decoder_sparse_step": 2, "mlp_only_layers": [3], "attention_bias": True},
    "qwen3-moe-window": _TINY | {"model_type": "qwen3_moe", "num_experts": 4, "num_experts_per_tok": 4, "moe_intermediate_size": 8,
                                 "use_sliding_window": True, "sliding_window": 8},
    "qwen2-moe-shared": _TINY | {"model_type": "qwen2_moe", "num_experts": 6, "num_experts_per_tok": 2, "moe_intermediate_size": 24,
                                 "shared_expert_intermediate_size": 48, "mlp_only_layers": [0], "use_sliding_window": True,
                                 "sliding_window": 8, "max_window_layers": 5},
    "mixtral-window": _TINY | {"model_type": "mixtral", "num_local_experts": 4, "num_experts_per_tok": 2, "sliding_window": 32},
    "mistral-window": _TINY | {"model_type": "mistral", "sliding_window": 32},
    "gemma3-pattern": _TINY | {"model_type": "gemma3_text", "head_dim": 16, "sliding_window": 8, "sliding_window_pattern": 3},
    # google/gemma-3-4b-pt: the text_config as published (the rest are Gemma3TextConfig defaults).
    "gemma3-image-text": {"model_type": "gemma3", "text_config": {"hidden_size": 2560, "intermediate_size": 10240,
                                                                   "model_type": "gemma3_text", "num_hidden_layers": 34,
                                                                   "rope_scaling": {"factor": 8.0, "rope_type": "linear"},
                                                                   "sliding_window": 1024},
                          "vision_config": {"model_type": "siglip_vision_model"}},
}
CONFIGS = {name: bundled(name) for name in bundled_names("models")} | VARIANTS


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_count_and_tensors_match_transformers(name):
    """Bundled models through `planner show`'s own path; the variants through `from_hf_config`."""
    config = CONFIGS[name]
    tensors = list(hf_model(config).parameters())
    count = model_summary(name, 2048)["params"] if name not in VARIANTS else ours(config, params.total_params(S))
    assert count == sum(p.numel() for p in tensors)
    assert ours(config, params.param_tensors(S)) == len(tensors)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_sliding_layers_match_transformers(name):
    config = CONFIGS[name]
    cfg, shape = hf_config(config), from_hf_config(config, "x")
    types = getattr(cfg, "layer_types", None)
    window = getattr(cfg, "sliding_window", None) or None  # Qwen2-MoE stores 0 for "none"
    expected = sum(t == "sliding_attention" for t in types) if types else (cfg.num_hidden_layers if window else 0)
    assert shape.sliding_layers == expected
    assert shape.sliding_window == (window if expected else None)


def test_llama_biases_match_transformers():
    config = bundled("tiny-student") | {"attention_bias": True, "mlp_bias": True}
    assert ours(config, params.total_params(S)) == hf_count(config)


@pytest.mark.parametrize("s,window", [(2048, 512), (1024, 1024), (512, 4096), (4096, 1000)])
def test_attended_keys_match_transformers_masks(s, window):
    """Keys per query that transformers' causal and sliding-window masks let through, against the
    flash-kernel count (causal = 1/2) of one full and one sliding layer. Tolerance 0.2%: we count
    s/2 and w - w^2/(2s) where the masks give (s+1)/2 and w - w(w-1)/(2s)."""
    from transformers.masking_utils import causal_mask_function, sliding_window_causal_mask_function

    q, kv = torch.arange(s)[:, None], torch.arange(s)[None, :]
    full = causal_mask_function(0, 0, q, kv).sum().item() / s
    slid = sliding_window_causal_mask_function(window)(0, 0, q, kv).sum().item() / s
    layer = _TINY | {"model_type": "mistral", "num_hidden_layers": 2}
    dense, windowed = (params.attended_keys(S, s, sp.Rational(1, 2)).subs(S.values(from_hf_config(c, "x")))
                       for c in (layer, layer | {"sliding_window": window}))
    assert float(dense) == pytest.approx(2 * full, rel=2e-3)
    assert float(windowed) == pytest.approx(2 * slid, rel=2e-3)
    eager = params.attended_keys(S, s, 1).subs(S.values(from_hf_config(layer | {"sliding_window": window}, "x")))
    assert float(eager) == 2 * s  # an eager kernel scores every key and masks afterwards



@pytest.mark.parametrize("name,s", [("gemma3-pattern", 5), ("gemma3-pattern", 20), ("mistral-window", 40), ("qwen3-bias-window", 12)])
def test_kv_cache_matches_transformers(name, s):
    """Elements of the cache transformers keeps after a prefill of s tokens (b = 2), real weights on CPU."""
    config = CONFIGS[name]
    cfg = hf_config(config)
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(cfg).eval()
    with torch.no_grad():
        cache = model(torch.randint(0, cfg.vocab_size, (2, s)), use_cache=True).past_key_values
    held = sum(layer.keys.numel() + layer.values.numel() for layer in cache.layers)
    assert ours(config, params.kv_cache_elements(S, 2, s)) == held

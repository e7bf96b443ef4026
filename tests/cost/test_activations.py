"""Activation-memory terms (planner/cost/activations.py).

Golden: Korthikanti et al. 2022, "Reducing Activation Recomputation in Large Transformer
Models" (arXiv:2205.05198), eq. 1, for GPT-3 175B.  Validation: a tiny random-init
`transformers` LlamaForCausalLM; the bytes of the distinct storages a training forward hands to
`torch.autograd.graph.saved_tensors_hooks` (parameters excluded) must match `model_saved_bytes`
within 5 %.
"""

import warnings

import pytest
import sympy as sp

from planner.cost.activations import gpt_block_bytes_korthikanti, layer_saved_bytes, model_saved_bytes


def test_korthikanti_gpt3_175b_golden():
    # GPT-3 175B: s=2048, b=1, h=12288, a=96.  By hand: s*b*h = 2048*12288 = 25_165_824;
    # 5*a*s/h = 5*96*2048/12288 = 80; 25_165_824 * (34 + 80) = 2_868_903_936 bytes per layer.
    assert gpt_block_bytes_korthikanti(2048, 1, 12288, 96) == 2_868_903_936


def test_symbolic_and_ckpt_modes():
    b, s, h, a, g, d, f, q, fl = sp.symbols("b s h a g d f q flash", positive=True)
    none = layer_saved_bytes(b, s, h, a, g, d, f, q, fl, "none")
    sel = layer_saved_bytes(b, s, h, a, g, d, f, q, fl, "selective")
    assert sp.degree(sp.expand(none.subs({q: 2, fl: 0})), s) == 2
    assert sp.degree(sp.expand(sel.subs({q: 2, fl: 0})), s) == 1
    assert layer_saved_bytes(b, s, h, a, g, d, f, q, fl, "full") == q * b * s * h
    fn = sp.lambdify((b, s, fl), none.subs({h: 4096, a: 32, g: 8, d: 128, f: 14336, q: 2}))
    assert fn(1, 4096, 0) > fn(1, 4096, 1) > 0
    with pytest.raises(ValueError):
        layer_saved_bytes(b, s, h, a, g, d, f, q, fl, "bogus")


H, A, G, F, V = 128, 4, 2, 352, 512
D = H // A


def _measure(impl, L, b, s, dtype, ckpt):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(
        hidden_size=H, num_attention_heads=A, num_key_value_heads=G, intermediate_size=F,
        num_hidden_layers=L, vocab_size=V, max_position_embeddings=256, attention_dropout=0.0,
        attn_implementation=impl)
    model = transformers.LlamaForCausalLM(cfg).to(dtype).train()
    if ckpt:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    kept: dict[int, int] = {}

    def keep(t):
        st = t.untyped_storage()
        if st.data_ptr() not in params:
            kept.setdefault(st.data_ptr(), st.nbytes())
        return t

    # Under non-reentrant checkpointing the rotary cos/sin reach the layers through the recompute
    # closure, not through saved tensors; they stay alive until backward, so count them too
    # (without checkpointing they are saved tensors anyway and deduplicate).
    model.model.rotary_emb.register_forward_hook(lambda m, i, out: [keep(t) for t in out])
    ids = torch.randint(0, V, (b, s))
    with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
        out = model(input_ids=ids, use_cache=False)  # no labels: the loss/logits term is elsewhere
    assert out.logits.requires_grad
    return sum(kept.values())


CASES = [  # (impl, L, b, s)
    ("eager", 2, 1, 24), ("eager", 3, 3, 40), ("sdpa", 2, 1, 24), ("sdpa", 3, 3, 40), ("sdpa", 2, 2, 64),
]
TOL = 0.05  # relative


@pytest.mark.parametrize("dtype_name,q", [("float32", 4), ("bfloat16", 2)])
@pytest.mark.parametrize("ckpt", ["none", "full"])
@pytest.mark.parametrize("impl,L,b,s", CASES)
def test_matches_hf_llama_saved_tensors(impl, L, b, s, ckpt, dtype_name, q):
    torch = pytest.importorskip("torch")
    measured = _measure(impl, L, b, s, getattr(torch, dtype_name), ckpt == "full")
    flash = 1 if impl == "sdpa" else 0
    predicted = int(model_saved_bytes(L, b, s, H, A, G, D, F, V, q, flash, ckpt))
    print(f"{impl} {dtype_name} ckpt={ckpt} L={L} b={b} s={s}: measured {measured} predicted {predicted}")
    assert abs(measured - predicted) <= TOL * measured, (measured, predicted)

"""hf-static rollouts (static KV cache) draw the same tokens as the eager loop for the same seed."""

from __future__ import annotations

import pytest
import torch

from planner.executor.data import Batch
from planner.executor.generate import generate
from planner.executor.rollout.static import generate_static


def _model():
    from transformers import AutoModelForCausalLM, LlamaConfig

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=64)
    return AutoModelForCausalLM.from_config(cfg, attn_implementation="sdpa").float().eval()


def _batch(P: int, C: int) -> Batch:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, 300, (3, P + C), generator=g)
    mask = torch.ones_like(ids)
    mask[0, :3] = 0  # a left-padded prompt
    ids[0, :3] = 0
    return Batch(ids, mask, ids[:, P:].clone())


@pytest.mark.parametrize("temperature", [1e-4, 1.0])  # near-greedy and sampled
def test_static_cache_draws_the_eager_tokens(temperature):
    model, P, C = _model(), 8, 12
    batch = _batch(P, C)
    want = generate(model, batch, P, temperature, seed=7, use_cache=True)
    got = generate_static(model, batch, P, temperature, seed=7, compile_step=False)
    assert torch.equal(got.input_ids, want.input_ids)
    assert torch.equal(got.attention_mask, want.attention_mask)
    assert not torch.equal(got.input_ids[:, P:], batch.input_ids[:, P:])  # it did generate


def test_planner_run_with_hf_static_matches_hf_eager(tmp_path):
    """`planner run` with rollout.engine hf-static: the run's losses are the eager loop's (same tokens)."""
    import yaml
    from executor_helpers import run_plan, tiny_plan

    got = {}
    for engine in ("hf-eager", "hf-static"):
        path = tiny_plan(tmp_path, "replicate-ddp", engine, lmbda=1.0)
        data = yaml.safe_load(path.read_text())
        data["rollout"]["engine"] = engine
        path.write_text(yaml.safe_dump(data))
        got[engine] = run_plan(path, tmp_path / f"{engine}.json", 2)
    assert got["hf-static"]["engines"]["rollout"] == "hf-static"
    assert all(got["hf-static"]["on_policy"])
    assert got["hf-static"]["loss"] == pytest.approx(got["hf-eager"]["loss"], rel=1e-5)

"""A written-out mixture-of-experts shape (a plan's `shape` whose ref is no config.json) is built
with its own family, every expert included, or refused: never as a dense Llama."""

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from planner.cost.params import evaluate, total_params  # noqa: E402
from planner.cost.symbols import T  # noqa: E402
from planner.executor.build import config_from_shape  # noqa: E402
from planner.inputs.errors import InputError  # noqa: E402
from planner.inputs.load import load_model  # noqa: E402
from planner.inputs.model import ModelShape  # noqa: E402

TINY_QWEN = ModelShape(name="tiny-qwen3-moe", family="qwen3_moe", num_layers=3, hidden=64, num_heads=4, num_kv_heads=2,
                       head_dim=32, ffn=96, vocab=300, num_experts=8, experts_per_token=2, expert_ffn=24, moe_layers=2, qk_norm=True)


@pytest.mark.parametrize("shape", [TINY_QWEN, load_model("qwen3-30b-a3b"), load_model("mixtral-8x7b")], ids=lambda s: s.name)
def test_an_moe_shape_is_built_with_its_family_and_every_expert(shape):
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config_from_shape(shape))
    assert type(model).__name__.lower().startswith(shape.family.replace("_", ""))
    assert sum(p.numel() for p in model.parameters()) == evaluate(total_params(T), T, shape)


def test_an_moe_shape_of_another_family_is_refused_in_one_line():
    shape = TINY_QWEN.model_copy(update={"family": "llama"})
    with pytest.raises(InputError, match="tiny-qwen3-moe: family: a mixture-of-experts shape is built as mixtral or qwen3_moe"):
        config_from_shape(shape)

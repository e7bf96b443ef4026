"""Golden test: our parameter count equals what `transformers` builds from the same config.json.

Source of truth: the model `transformers` instantiates from each bundled config (on the meta
device, no memory, no weights), summed over `parameters()`. Tolerance: exact (0 parameters).
Published totals quoted for reference: Llama-3.1-8B 8,030,261,248; Qwen2.5-7B 7,615,616,512;
Gemma-2-2B 2,614,341,888 (model cards / safetensors index metadata).
"""

import json

import pytest

from planner.cli.info import model_summary
from planner.inputs.load import bundled_dir, bundled_names

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


def hf_count(config: dict) -> int:
    cfg = transformers.AutoConfig.for_model(**config)
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(cfg)
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", bundled_names("models"))
def test_count_matches_transformers(name):
    config = json.loads((bundled_dir("models") / f"{name}.json").read_text())
    assert model_summary(name, 2048)["params"] == hf_count(config)


@pytest.mark.parametrize("name,published", [
    ("llama-3.1-8b", 8_030_261_248), ("qwen2.5-7b", 7_615_616_512), ("gemma-2-2b", 2_614_341_888),
    ("llama-3.1-70b", 70_553_706_496), ("mistral-7b-v0.3", 7_248_023_552),
])
def test_published_totals(name, published):
    assert model_summary(name, 2048)["params"] == published


def test_llama_biases_match_transformers():
    config = json.loads((bundled_dir("models") / "tiny-student.json").read_text())
    config.update(attention_bias=True, mlp_bias=True)
    from planner.cost import params
    from planner.cost.symbols import S
    from planner.inputs.model import from_hf_config

    shape = from_hf_config(config, "x")
    assert params.evaluate(params.total_params(S), S, shape) == hf_count(config)

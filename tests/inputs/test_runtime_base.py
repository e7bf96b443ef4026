"""A runtime file may name a `base` runtime and write only what differs (runtimes/trl-distillation-vllm.yaml)."""

import pytest

from planner.inputs.errors import InputError
from planner.inputs.load import load_runtime


def test_a_runtime_over_a_base_merges_key_by_key(tmp_path):
    (tmp_path / "mine.yaml").write_text("base: trl-distillation\nname: mine\ngeneration:\n  engine: vllm\n  layer_overhead_us: 0\n"
                                        "  memory_utilization: 0.5\n")
    rt, base = load_runtime(str(tmp_path / "mine.yaml")), load_runtime("trl-distillation")
    assert rt.name == "mine" and rt.generation.engine == "vllm" and rt.generation.memory_utilization == 0.5
    assert rt.generation.sharded_gather == base.generation.sharded_gather and rt.generation.batch == base.generation.batch
    assert rt.overheads == base.overheads and rt.loss == base.loss  # untouched keys come from the base
    (tmp_path / "over-mine.yaml").write_text("base: mine.yaml\nname: over\ngeneration: {sleep: true}\n")  # relative to the file
    over = load_runtime(str(tmp_path / "over-mine.yaml"))
    assert over.generation.sleep and over.generation.memory_utilization == 0.5 and over.name == "over"


def test_a_base_that_loops_or_a_bad_key_is_one_line(tmp_path):
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(InputError, match="leads back to itself"):
        load_runtime(str(tmp_path / "a.yaml"))
    (tmp_path / "bad.yaml").write_text("base: trl-distillation\ngeneration: {sleeep: true}\n")
    with pytest.raises(InputError) as e:
        load_runtime(str(tmp_path / "bad.yaml"))
    assert "bad.yaml" in str(e.value) and "sleeep" in str(e.value)
    (tmp_path / "nobase.yaml").write_text("base: no-such-runtime\n")
    with pytest.raises(InputError, match="no-such-runtime"):
        load_runtime(str(tmp_path / "nobase.yaml"))

"""Every schema rule and every error path of the inputs, each as a one-line `file: key: message`."""

import json
import time

import pytest

from planner.inputs import load
from planner.inputs.errors import InputError
from planner.inputs.yamlio import parse_yaml

GOOD_SHAPE = "num_layers: 2\nhidden: 64\nnum_heads: 4\nnum_kv_heads: 2\nffn: 128\nvocab: 100\n"


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


def error_of(fn, *args) -> str:
    with pytest.raises(InputError) as e:
        fn(*args)
    return "\n".join(e.value.lines)


def test_inline_shape_loads(tmp_path):
    m = load.load_model(str(write(tmp_path, "m.yaml", GOOD_SHAPE)))
    assert (m.kv_heads, m.head_width, m.name) == (2, 16, "m")


@pytest.mark.parametrize("extra,expect", [
    ("colour: red\n", "colour: unknown key"),
    ("dtype: float64\n", "dtype: Input should be"),
    ("max_positions: many\n", "max_positions: Input should be a valid integer"),
    ("tied_embeddings: [1]\n", "tied_embeddings: Input should be a valid boolean"),
])
def test_shape_field_errors(tmp_path, extra, expect):
    p = write(tmp_path, "m.yaml", GOOD_SHAPE + extra)
    msg = error_of(load.load_model, str(p))
    assert msg.startswith(f"{p}: ") and expect in msg


@pytest.mark.parametrize("change,expect", [
    (("num_heads: 4", "num_heads: 5"), "num_heads (5) must divide hidden (64)"),
    (("num_kv_heads: 2", "num_kv_heads: 3"), "num_kv_heads (3) must divide num_heads (4)"),
    (("hidden: 64", "hidden: 0"), "hidden: Input should be greater than 0"),
    (("vocab: 100", "vocab: -5"), "vocab: Input should be greater than 0"),
])
def test_shape_rules(tmp_path, change, expect):
    p = write(tmp_path, "m.yaml", GOOD_SHAPE.replace(*change))
    assert expect in error_of(load.load_model, str(p))


def test_head_dim_may_differ_from_hidden_over_heads(tmp_path):
    p = write(tmp_path, "m.yaml", GOOD_SHAPE.replace("num_heads: 4", "num_heads: 5\nnum_kv_heads: 5\nhead_dim: 32").replace("num_kv_heads: 2\n", ""))
    assert load.load_model(str(p)).head_width == 32


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf"])
def test_nan_and_inf_rejected(tmp_path, value):
    p = write(tmp_path, "c.yaml", (load.bundled_dir("topologies") / "dgx-h100.yaml").read_text().replace("hbm_bw_gb_per_s: 3350", f"hbm_bw_gb_per_s: {value}"))
    assert "gpu.hbm_bw_gb_per_s: Input should be a finite number" in error_of(load.load_cluster, str(p))


def test_empty_and_non_mapping_and_bad_yaml(tmp_path):
    assert "file is empty" in error_of(load.load_model, str(write(tmp_path, "e.yaml", "")))
    assert "expected a mapping" in error_of(load.load_model, str(write(tmp_path, "l.yaml", "- 1\n- 2\n")))
    assert "not valid YAML: line 2" in error_of(load.load_model, str(write(tmp_path, "b.yaml", "a: [1, 2\n")))
    assert "not valid JSON" in error_of(load.load_model, str(write(tmp_path, "b.json", "{nope")))


def test_missing_file_lists_tried_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    msg = error_of(load.load_model, "no-such-model")
    assert "not found (tried" in msg and str(tmp_path / "no-such-model") in msg and "planner list" in msg


def test_alias_bomb_fails_fast():
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
        for i in range(20))
    start = time.perf_counter()
    with pytest.raises(InputError, match="aliases"):
        parse_yaml(bomb, "bomb.yaml")
    assert time.perf_counter() - start < 1.0


def test_deep_nesting_fails_fast():
    with pytest.raises(InputError, match="nesting"):
        parse_yaml("[" * 10000 + "]" * 10000, "deep.yaml")


def test_python_tags_refused():
    with pytest.raises(InputError, match="not valid YAML"):
        parse_yaml("a: !!python/object/apply:os.system ['true']", "evil.yaml")


def test_hf_config_dir_and_families(tmp_path):
    cfg = json.loads((load.bundled_dir("models") / "qwen2.5-7b.json").read_text())
    (tmp_path / "qwen").mkdir()
    (tmp_path / "qwen" / "config.json").write_text(json.dumps(cfg))
    m = load.load_model(str(tmp_path / "qwen"))
    assert m.qkv_bias and not m.o_bias and m.name == "qwen"
    g = load.load_model("gemma-2-2b")
    assert g.tied_embeddings and g.norms_per_layer == 4 and g.head_width == 256


@pytest.mark.parametrize("model_type,why", [("deepseek_v3", "mixture-of-experts"), ("olmoe", "mixture-of-experts"), ("bert", "not a supported")])
def test_unsupported_model_type(tmp_path, model_type, why):
    p = write(tmp_path, "config.json", json.dumps({"model_type": model_type, "hidden_size": 8}))
    msg = error_of(load.load_model, str(p))
    assert f"model_type: '{model_type}'" in msg and why in msg and "supported: llama" in msg and "qwen3_moe" in msg


def test_new_families_read():
    q = load.load_model("qwen3-0.6b")
    assert q.qk_norm and q.tied_embeddings and q.head_width == 128 != q.hidden // q.num_heads and not q.qkv_bias
    g = load.load_model("gemma-3-27b")
    assert (g.norms_per_layer, g.qk_norm, g.sliding_window, g.sliding_layers, g.num_layers) == (4, True, 1024, 52, 62)
    m = load.load_model("qwen3-235b-a22b")
    assert (m.num_experts, m.experts_per_token, m.expert_ffn, m.expert_layers) == (128, 8, 1536, 94)
    x = load.load_model("mixtral-8x7b")
    assert (x.num_experts, x.experts_per_token, x.expert_ffn, x.ffn) == (8, 2, 14336, 14336)


def test_gemma3_image_text_config_reads_its_language_model(tmp_path):
    text = json.loads((load.bundled_dir("models") / "gemma-3-4b.json").read_text())
    published = {k: text[k] for k in ("hidden_size", "intermediate_size", "model_type", "num_hidden_layers", "sliding_window")}
    cfg = {"model_type": "gemma3", "architectures": ["Gemma3ForConditionalGeneration"], "torch_dtype": "bfloat16",
           "text_config": published, "vision_config": {"model_type": "siglip_vision_model"}}
    (tmp_path / "g").mkdir()
    write(tmp_path / "g", "config.json", json.dumps(cfg))
    assert load.load_model(str(tmp_path / "g")).model_dump(exclude={"name"}) == load.load_model("gemma-3-4b").model_dump(exclude={"name"})
    bad = write(tmp_path, "config.json", json.dumps({"model_type": "gemma3"}))
    assert "text_config: missing" in error_of(load.load_model, str(bad))


MOE = {"model_type": "qwen3_moe", "num_hidden_layers": 4, "hidden_size": 64, "num_attention_heads": 4, "intermediate_size": 128,
       "vocab_size": 100, "num_experts": 8, "num_experts_per_tok": 2, "moe_intermediate_size": 32}


@pytest.mark.parametrize("change,expect", [
    ({"num_experts_per_tok": 9}, "num_experts_per_tok: 9 must be between 1 and the 8 experts"),
    ({"num_experts_per_tok": 0}, "num_experts_per_tok: 0 must be between 1 and the 8 experts"),
    ({"moe_intermediate_size": None}, "moe_intermediate_size: missing (a qwen3_moe config needs it)"),
    ({"num_experts": None}, "num_experts: missing"),
    ({"model_type": "mixtral", "num_local_experts": None, "num_experts": None}, "num_local_experts: missing (a mixtral config needs it)"),
    ({"model_type": "qwen2_moe"}, "shared_expert_intermediate_size: missing"),
])
def test_bad_moe_configs(tmp_path, change, expect):
    cfg = {k: v for k, v in (MOE | change).items() if v is not None}
    msg = error_of(load.load_model, str(write(tmp_path, "config.json", json.dumps(cfg))))
    assert expect in msg and "config.json: " in msg


def test_moe_layers_follow_sparse_step_and_dense_layers(tmp_path):
    cfg = MOE | {"num_hidden_layers": 6, "decoder_sparse_step": 2, "mlp_only_layers": [3]}
    m = load.load_model(str(write(tmp_path, "config.json", json.dumps(cfg))))
    assert m.expert_layers == 2  # layers 1 and 5 (3 is listed dense; 0, 2, 4 fall between steps)


@pytest.mark.parametrize("extra,expect", [
    ("num_experts: 8\nexperts_per_token: 9\nexpert_ffn: 32\n", "experts_per_token (9) must be between 1 and num_experts (8)"),
    ("num_experts: 8\nexperts_per_token: 2\n", "expert_ffn: missing"),
    ("experts_per_token: 2\n", "need num_experts > 0"),
    ("num_experts: 8\nexperts_per_token: 2\nexpert_ffn: 32\nmoe_layers: 3\n", "moe_layers (3) exceeds num_layers (2)"),
    ("sliding_layers: 1\n", "sliding_layers (1) needs a sliding_window"),
    ("sliding_window: 8\nsliding_layers: 3\n", "sliding_layers (3) exceeds num_layers (2)"),
])
def test_shape_moe_and_window_rules(tmp_path, extra, expect):
    msg = error_of(load.load_model, str(write(tmp_path, "m.yaml", GOOD_SHAPE + extra)))
    assert expect in msg


def test_hf_config_missing_fields(tmp_path):
    p = write(tmp_path, "config.json", json.dumps({"model_type": "llama", "hidden_size": 8}))
    msg = error_of(load.load_model, str(p))
    assert "num_hidden_layers: missing" in msg and "vocab_size: missing" in msg


def test_workload_rules(tmp_path):
    job = "teacher: tiny-teacher\nstudent: tiny-student\nworkload:\n  micro_batch_min: 8\n  micro_batch_max: 4\n  lmbda: 1.5\n"
    msg = error_of(load.load_job, str(write(tmp_path, "j.yaml", job)))
    assert "workload.lmbda: Input should be less than or equal to 1" in msg
    job2 = "teacher: tiny-teacher\nstudent: tiny-student\nworkload:\n  micro_batch_min: 8\n  micro_batch_max: 4\n"
    assert "micro_batch_min (8) must not exceed micro_batch_max (4)" in error_of(load.load_job, str(write(tmp_path, "j2.yaml", job2)))


def test_job_inline_models_and_errors(tmp_path):
    inline = "teacher:\n" + "".join(f"  {line}\n" for line in GOOD_SHAPE.splitlines()) + "student: tiny-student\n"
    job = load.load_job(str(write(tmp_path, "j.yaml", inline)))
    assert job.teacher.hidden == 64 and job.student_ref == "tiny-student"
    bad = inline.replace("hidden: 64", "hidden: 64\n  wings: 2")
    assert "teacher.wings: unknown key" in error_of(load.load_job, str(write(tmp_path, "k.yaml", bad)))
    assert "student: missing" in error_of(load.load_job, str(write(tmp_path, "m.yaml", "teacher: tiny-teacher\n")))


def test_job_relative_model_path(tmp_path):
    (tmp_path / "shapes").mkdir()
    write(tmp_path / "shapes", "t.yaml", GOOD_SHAPE)
    job = load.load_job(str(write(tmp_path, "j.yaml", "teacher: shapes/t.yaml\nstudent: tiny-student\n")))
    assert job.teacher.name == "t"


@pytest.mark.parametrize("name", load.bundled_names("topologies"))
def test_bundled_topologies_load(name):
    c = load.load_cluster(name)
    assert c.world >= 1 and c.gpu.mem_gib > c.gpu.reserved_mem_gib


@pytest.mark.parametrize("name", load.bundled_names("jobs"))
def test_bundled_jobs_load(name):
    assert load.load_job(name).teacher.num_layers > 0


def test_cluster_rules(tmp_path):
    text = (load.bundled_dir("topologies") / "dgx-h100.yaml").read_text()
    p = write(tmp_path, "c.yaml", text.replace("reserved_mem_gib: 4 ", "reserved_mem_gib: 90 ").replace("backend: nccl", "backend: mpi"))
    msg = error_of(load.load_cluster, str(p))
    assert "reserved_mem_gib (90.0) must be below mem_gib" in msg and "backend: String should match" in msg
    assert load.load_cluster("dgx-h100", nodes=4).world == 32
    assert "--nodes: must be at least 1" in error_of(load.load_cluster, "dgx-h100", 0)


def test_mixed_precision_of_older_files_and_conflicts():
    from pydantic import ValidationError

    from planner.inputs.workload import Workload
    old = Workload(student_dtype="bf16", grad_dtype="bf16")  # written before mixed_precision existed
    assert old.mixed_precision == "master" and (old.weight_bytes, old.grad_bytes, old.optimizer_bytes) == (2, 2, 12)
    new = Workload(student_dtype="bf16")
    assert new.mixed_precision == "autocast" and (new.weight_bytes, new.grad_bytes, new.optimizer_bytes) == (4, 4, 8)
    with pytest.raises(ValidationError, match="grad_dtype"):
        Workload(student_dtype="bf16", grad_dtype="bf16", mixed_precision="autocast")

"""The real `planner show / list / schema` commands, driven through typer's CliRunner."""

import json

import pytest
import yaml

from planner.cli import app


def test_show_model_json(runner):
    r = runner.invoke(app, ["show", "llama-3.1-8b", "--format", "json"])
    assert r.exit_code == 0
    data = json.loads(r.stdout)
    assert data["params"] == 8_030_261_248 and isinstance(data["params"], int)
    assert sum(data["breakdown"].values()) == data["params"]
    assert data["flops_per_token"]["train"] == 3 * data["flops_per_token"]["forward"]


def test_show_model_table(runner):
    r = runner.invoke(app, ["show", "qwen2.5-7b"])
    assert r.exit_code == 0 and "7,615,616,512" in r.stdout and "lm_head" in r.stdout


def test_show_cluster(runner):
    r = runner.invoke(app, ["show", "--cluster", "dgx-h100", "--nodes", "4", "-f", "json"])
    assert r.exit_code == 0 and json.loads(r.stdout)["world"] == 32
    assert json.loads(r.stdout)["description"].startswith("4 x NVIDIA DGX H100 (8x H100")


def test_a_resized_cluster_describes_its_node_count(runner):
    from planner.inputs.load import load_cluster
    assert load_cluster("l40s-pcie", 2).description.startswith("2 nodes x 8x L40S")
    assert load_cluster("l40s-pcie", 1).description.startswith("1 node x 8x L40S")
    assert load_cluster("dgx-h100", 2).description == load_cluster("dgx-h100").description
    one = load_cluster("cpu-local", 3).description  # no count to replace: say so at the end
    assert one.startswith("one 2-core CPU machine") and one.endswith("(resized to 3 nodes)")
    r = runner.invoke(app, ["show", "--cluster", "dgx-h100", "--nodes", "4"], env={"COLUMNS": "200"})
    assert r.exit_code == 0 and "4 x NVIDIA DGX H100" in r.stdout and "2 x NVIDIA" not in r.stdout


def test_list(runner):
    r = runner.invoke(app, ["list", "-f", "json"])
    data = json.loads(r.stdout)
    assert len([m for m in data["models"] if not m.startswith("tiny")]) >= 12
    assert len(data["topologies"]) >= 7 and "cpu-local" in data["topologies"]


def test_schema(runner):
    for kind in ("model", "cluster", "workload", "job", "plan"):
        r = runner.invoke(app, ["schema", kind])
        assert r.exit_code == 0 and "properties" in json.loads(r.stdout)
    r = runner.invoke(app, ["schema", "nope"])
    assert r.exit_code == 1 and "unknown kind 'nope'" in r.stderr


def test_bad_input_exits_1_without_traceback(runner, tmp_path):
    p = tmp_path / "m.yaml"
    p.write_text("num_layers: 2\nhidden: 64\nnum_heads: 4\nffn: 128\nvocab: 100\nfoo: 1\n")
    r = runner.invoke(app, ["show", str(p)])
    assert r.exit_code == 1
    assert f"{p}: foo: unknown key" in r.stderr and "Traceback" not in r.stderr + r.stdout


def test_missing_model_exits_1(runner):
    r = runner.invoke(app, ["show", "gpt-17"])
    assert r.exit_code == 1 and "gpt-17: not found" in r.stderr


def test_usage_error_exits_2(runner):
    assert runner.invoke(app, ["show", "--no-such-flag"]).exit_code == 2
    assert runner.invoke(app, ["show", "llama-3.1-8b", "--seq-len", "0"]).exit_code == 2
    assert runner.invoke(app, ["show"]).exit_code == 1


def test_show_moe_and_sliding_window(runner):
    r = runner.invoke(app, ["show", "mixtral-8x7b", "--format", "json"])
    data = json.loads(r.stdout)
    assert data["params"] == 46_702_792_704 and data["active_params"] == 12_879_925_248
    r = runner.invoke(app, ["show", "qwen3-235b-a22b"])
    assert r.exit_code == 0 and "128 experts" in r.stdout and "8 per token" in r.stdout and "│ mlp " not in r.stdout
    r = runner.invoke(app, ["show", "gemma-3-27b"])
    assert "52 of 62 layers attend to the last 1024 tokens" in r.stdout and "experts" not in r.stdout


@pytest.mark.parametrize("kind, folder", [("job", "jobs"), ("plan", "examples"), ("cluster", "topologies"), ("runtime", "runtimes")])
def test_bundled_files_validate_against_the_emitted_schema(runner, root, kind, folder):
    """What `planner schema KIND` prints accepts every bundled file of that kind (editors use it)."""
    jsonschema = pytest.importorskip("jsonschema")
    r = runner.invoke(app, ["schema", kind])
    assert r.exit_code == 0, r.stderr
    schema = json.loads(r.stdout)
    files = sorted((root / folder).glob("*.yaml"))
    assert files
    for path in files:
        jsonschema.validate(yaml.safe_load(path.read_text()), schema)
    if kind == "job":  # a model may also be written out, as a shape or as a config.json
        shape = {"num_layers": 2, "hidden": 64, "num_heads": 4, "ffn": 128, "vocab": 100}
        jsonschema.validate({"teacher": shape, "student": {"model_type": "llama", "hidden_size": 64}}, schema)
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({"teacher": shape | {"colour": 1}, "student": "tiny-student"}, schema)


def test_a_misspelled_name_gets_a_suggestion(runner):
    r = runner.invoke(app, ["show", "lama-3.1-8b"])
    assert r.exit_code == 1 and "did you mean llama-3.1-8b, " in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = runner.invoke(app, ["show", "--cluster", "dgx-h10"])
    assert r.exit_code == 1 and "did you mean dgx-h100" in r.stderr
    r = runner.invoke(app, ["estimate", "-m", "llama70b-to-8", "-f", "json"])
    assert r.exit_code == 1 and "did you mean llama70b-to-8b" in r.stderr
    r = runner.invoke(app, ["show", "gpt-17"])
    assert r.exit_code == 1 and "did you mean" not in r.stderr  # nothing close: no guess

"""Loading without materialising (planner/executor/weights.py): refs without weights are refused
unless --random-init; the loaded shards and stages equal the checkpoint's tensors; a shard or a
stage adds well under a full copy to each rank's peak RSS; `planner run` from checkpoint folders
trains like the single-process reference that loads them with `from_pretrained`."""

import json
from pathlib import Path

import pytest

from executor_helpers import ROOT, tiny_plan, torchrun

from planner.cli import app
from planner.executor.weights import checkpoint_folder
from planner.inputs.errors import InputError
from planner.inputs.yamlio import dump_yaml, read_mapping

WORKER = ROOT / "tests" / "executor" / "load_worker.py"


def save_llama(folder: Path, *, hidden: int, layers: int, ffn: int, vocab: int, tied: bool, shard: str) -> int:
    """A random Llama saved as a sharded safetensors checkpoint; returns its weight bytes (fp32)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=ffn, num_hidden_layers=layers,
                         num_attention_heads=hidden // 64, num_key_value_heads=max(1, hidden // 256), tie_word_embeddings=tied)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.save_pretrained(folder, max_shard_size=shard)
    assert (folder / "model.safetensors.index.json").is_file() and len(list(folder.glob("model-*.safetensors"))) > 1
    return sum(p.numel() * p.element_size() for p in model.parameters())


def load(folder: Path, modes: list[str], tmp: Path) -> dict[str, list[dict]]:
    """Each mode's report per rank, from one launch (peak RSS is meaningful for the first mode only)."""
    torchrun([str(WORKER), str(folder), ",".join(modes), str(tmp / "load")], timeout=300)
    return {mode: [json.loads((tmp / f"load.{mode}.{r}.json").read_text()) for r in range(2)] for mode in modes}


def test_refs_without_weights_are_refused_unless_random_init(tmp_path):
    config_only = tmp_path / "config-only"
    config_only.mkdir()
    (config_only / "config.json").write_text("{}")
    pickles = tmp_path / "bin"
    pickles.mkdir()
    (pickles / "config.json").write_text("{}")
    (pickles / "pytorch_model.bin").write_bytes(b"")
    for ref, words in [("tiny-teacher", "is a model shape"), (str(config_only), "no weights in this folder"),
                       (str(pickles), "only safetensors weights are loaded"), (str(config_only / "config.json"), "is a config file")]:
        with pytest.raises(InputError, match=words) as e:
            checkpoint_folder(ref, "teacher.ref", random_init=False)
        assert len(e.value.lines) == 1 and "teacher.ref" in e.value.lines[0]
        assert checkpoint_folder(ref, "teacher.ref", random_init=True) is None
    (config_only / "model.safetensors").write_bytes(b"")
    assert checkpoint_folder(str(config_only), "teacher.ref", random_init=False) == config_only


def test_a_checkpoint_of_another_model_is_one_line(tmp_path):
    """Weights that do not fit the config: a missing layer, or tensors of another size."""
    import torch

    from planner.executor.build import model_config
    from planner.executor.weights import empty_model, fill

    folder = tmp_path / "ckpt"
    save_llama(folder, hidden=128, layers=2, ffn=256, vocab=512, tied=False, shard="200KB")
    config = model_config(str(folder), None)
    for change, words in (({"num_hidden_layers": 3}, "the checkpoint has no tensor 'model.layers.2."),
                          ({"intermediate_size": 128}, "could not read the weights")):
        model = empty_model(type(config)(**(config.to_dict() | change)), torch.float32)
        with pytest.raises(InputError, match=words) as e:
            fill(model, folder, torch.device("cpu"))
        assert len(e.value.lines) == 1 and e.value.lines[0].startswith(str(folder)), e.value.lines


def test_planner_run_says_how_to_point_at_a_checkpoint(runner):
    plan = ROOT / "examples" / "tiny-replicate-ddp.yaml"
    r = runner.invoke(app, ["run", str(plan)])
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert r.exit_code == 1 and "Traceback" not in r.output and len(lines) == 2, r.output
    assert lines[0].startswith(f"error: {plan}: teacher.ref: 'tiny-teacher' is a model shape") and "student.ref" in lines[1]
    assert all("config.json + model.safetensors" in ln and "--random-init" in ln for ln in lines)


def test_loaded_shards_and_stages_equal_the_checkpoint(tmp_path):
    """Tied embeddings (the last stage reads its head from `model.embed_tokens.weight`), 3 layers
    split 2 + 1, a checkpoint in several files: every tensor a rank holds equals the saved one."""
    folder = tmp_path / "ckpt"
    save_llama(folder, hidden=128, layers=3, ffn=256, vocab=512, tied=True, shard="200KB")
    loaded = load(folder, ["shard", "pipeline", "tp"], tmp_path)  # one launch: no RSS judged here
    shard, stages = loaded["shard"], loaded["pipeline"]
    assert all(r["wrong"] == [] and r["checked"] > 0 for r in shard), shard
    tp = loaded["tp"]  # the tied head re-tied to the vocabulary-split embedding
    assert all(r["wrong"] == [] and r["checked"] == shard[0]["checked"] for r in tp), tp
    assert all(r["wrong"] == [] for r in stages), stages
    # stage 0: embed + 2 layers (9 tensors each); stage 1: 1 layer, the final norm and the (tied) head
    assert [r["checked"] for r in stages] == [1 + 2 * 9, 9 + 2]


@pytest.mark.slow
def test_a_rank_never_holds_a_full_copy(tmp_path):
    """A ~250 MB checkpoint in 20 MB files: the load adds under 0.7x the model to each rank's peak
    RSS (VmHWM, reset before the load) for a 2-way FSDP2 shard, a tp:2 split and a 2-stage pipeline, while a
    replica (the control: the measurement sees a full copy) adds at least 1x."""
    folder = tmp_path / "ckpt"
    full = save_llama(folder, hidden=768, layers=6, ffn=2048, vocab=16000, tied=False, shard="20MB")
    for mode in ("shard", "tp", "pipeline"):
        for rank, r in enumerate(load(folder, [mode], tmp_path)[mode]):  # a launch per mode: each measures its own peak
            assert r["wrong"] == [] and abs(r["held_bytes"] / full - 0.5) < 0.01
            assert r["added_rss"] < 0.7 * full, f"{mode} rank {rank}: the load added {r['added_rss'] / full:.2f}x the model"
    for r in load(folder, ["replicate"], tmp_path)["replicate"]:
        assert r["added_rss"] >= full


def test_run_from_checkpoint_folders_matches_the_reference(tmp_path):
    """The tiny models saved as sharded checkpoints and named by the plan give the per-step losses
    of the single-process reference, which loads the folders with `from_pretrained`: a sharded
    teacher with a ZeRO-3 student, a pipelined teacher with a DDP student, a replicated teacher with
    an HSDP student (2 replicas of 1 shard: a 2-D mesh), a disaggregated teacher, and a tp:2 teacher."""
    from planner.executor.build import build_model
    from planner.executor.loop import RunOptions
    from planner.executor.reference import reference_losses
    from planner.inputs.load import load_model
    from planner.plan import load_plan

    refs = {}
    for who, name, seed in (("teacher", "tiny-teacher", 3), ("student", "tiny-student", 4)):
        build_model(name, load_model(name), "fp32", seed).save_pretrained(tmp_path / name, max_shard_size="300KB")
        refs[who] = str(tmp_path / name)
    jobs = []
    for example, student, teacher in (("shard-zero3", None, None), ("pipeline-ddp", None, None), ("replicate-ddp", "hsdp", None),
                                      ("disaggregated", None, None), ("replicate-ddp", None, "tp")):
        plan = tiny_plan(tmp_path, example, teacher or example, student=student, teacher=teacher)
        data = read_mapping(plan)
        if student == "hsdp":
            data["student"]["shard"] = 1
        for who, ref in refs.items():
            data[who] |= {"ref": ref, "shape": load_model(ref).model_dump(mode="json")}
        plan.write_text(dump_yaml(data))
        jobs.append({"plan": str(plan), "metrics_out": str(tmp_path / f"{plan.stem}.json"), "steps": 2, "random_init": False})
    (tmp_path / "jobs.json").write_text(json.dumps(jobs))
    torchrun([str(ROOT / "tests" / "executor" / "run_many.py"), str(tmp_path / "jobs.json")], timeout=300)
    for job in jobs:
        got = json.loads(Path(job["metrics_out"]).read_text())["loss"]
        want, _ = reference_losses(load_plan(job["plan"]), RunOptions(steps=2))
        assert all(abs(a - b) < 1e-5 for a, b in zip(got, want)) and len(got) == 2, (job["plan"], got, want)

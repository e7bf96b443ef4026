"""The offline teacher cache: written by one teacher pass on 2 gloo processes (a shard per rank and
a manifest), read back by a run that builds no teacher and gives the live teacher's top-k losses;
refused when it does not match the plan, and when a shard is truncated or corrupt (one line, no
training)."""

import json

import pytest
import torch
from executor_helpers import ROOT, tiny_plan, torchrun
from typer.testing import CliRunner

from planner.cli import app
from planner.executor import build, cache
from planner.executor.data import make_samples
from planner.executor.loop import RunOptions
from planner.executor.reference import reference_losses
from planner.inputs.errors import InputError
from planner.plan import load_plan

STEPS, K = 3, 16


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """A cache of the tiny replicate/ddp plan (teacher_output: cached, k = 16) for 3 steps of 8 samples."""
    tmp = tmp_path_factory.mktemp("cache")
    plan = tiny_plan(tmp, "replicate-ddp", "cached", teacher_output="cached", topk=K, lmbda=0.0)
    out = torchrun(["-m", "planner", "run", str(plan), "--cache-teacher", str(tmp / "dir"), "--steps", str(STEPS), "--no-progress", "--random-init"], timeout=240)
    assert "teacher cache of 24 samples in 2 shard(s)" in out.stderr
    return tmp, plan, tmp / "dir"


def _open(plan, folder, steps=STEPS, seed=0):
    p = load_plan(plan)
    tok = build.build_tokenizer(None)
    return cache.open_cache(folder, p, seed, steps, tok, make_samples(p, tok, seed, None), torch.device("cpu"))


def test_manifest_and_shards(written):
    _, _, folder = written
    m = json.loads((folder / cache.MANIFEST).read_text())
    assert m["samples"] == 24 and m["topk"] == K and m["data"] == {"synthetic": True, "seed": 0}
    assert [s["file"] for s in m["shards"]] == ["shard-00000.safetensors", "shard-00001.safetensors"]
    assert [s["samples"] for s in m["shards"]] == [12, 12]
    from safetensors.torch import load_file

    shard = load_file(folder / "shard-00001.safetensors")
    assert shard["indices"].dtype == torch.int32 and shard["values"].shape == (12, 8, K)
    assert shard["keys"].tolist() == list(range(1, 24, 2))  # teacher rank 1 of 2 took samples 1, 3, 5, ...
    assert (shard["values"][..., :-1] >= shard["values"][..., 1:]).all()  # sorted top-k logits


def test_training_from_cache_equals_live_topk(written, tmp_path):
    _, plan, folder = written
    live = tiny_plan(tmp_path, "replicate-ddp", "live", teacher_output="topk", topk=K, lmbda=0.0)
    jobs = [{"plan": str(plan), "metrics_out": str(tmp_path / "cached.json"), "steps": STEPS, "teacher_cache": str(folder)},
            {"plan": str(live), "metrics_out": str(tmp_path / "live.json"), "steps": STEPS}]
    (tmp_path / "jobs.json").write_text(json.dumps(jobs))
    torchrun([str(ROOT / "tests" / "executor" / "run_many.py"), str(tmp_path / "jobs.json")], timeout=240)
    got = json.loads((tmp_path / "cached.json").read_text())
    live_m = json.loads((tmp_path / "live.json").read_text())
    want, _ = reference_losses(load_plan(plan), RunOptions(steps=STEPS, random_init=True))  # the reference runs the live teacher's top-k
    assert all(got["peak_memory_bytes"][r]["teacher_params"] == 0 for r in ("0", "1"))  # no teacher built
    assert live_m["peak_memory_bytes"]["0"]["teacher_params"] > 0
    for step in range(STEPS):
        assert abs(got["loss"][step] - live_m["loss"][step]) < 1e-6, (got["loss"], live_m["loss"])
        assert abs(got["loss"][step] - want[step]) < 1e-5
        assert abs(got["grad_norm"][step] - live_m["grad_norm"][step]) <= 1e-5 * live_m["grad_norm"][step]


@pytest.mark.parametrize("workload, steps, seed, field", [
    ({"topk": 8}, STEPS, 0, "topk is 16 in the cache, 8 for this run"),
    ({"completion_len": 12}, STEPS, 0, "completion_len is 8 in the cache, 12"),
    ({"teacher_dtype": "bf16"}, STEPS, 0, "teacher.dtype is"),
    ({}, STEPS, 1, "data.seed is 0 in the cache, 1"),
    ({}, STEPS + 1, 0, "samples: the cache holds 24 samples, this run needs 32"),
])
def test_refuses_a_cache_of_another_plan(written, tmp_path, workload, steps, seed, field):
    _, _, folder = written
    other = tiny_plan(tmp_path, "replicate-ddp", "other", **({"teacher_output": "cached", "topk": K, "lmbda": 0.0} | workload))
    with pytest.raises(InputError, match=field.replace("(", r"\(")) as e:
        _open(other, folder, steps, seed)
    assert len(e.value.lines) == 1 and str(folder / cache.MANIFEST) in e.value.lines[0]


def test_refuses_a_truncated_or_corrupt_shard(written, tmp_path):
    import shutil

    _, plan, folder = written
    bad = tmp_path / "bad"
    shutil.copytree(folder, bad)
    shard = bad / "shard-00001.safetensors"
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="shard-00001.safetensors: sha256 differs from manifest.json"):
        _open(plan, bad)
    # a shard whose bytes are not safetensors at all, with the manifest's sha256 made to agree
    shard.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00not json")
    m = json.loads((bad / cache.MANIFEST).read_text())
    m["shards"][1]["sha256"] = cache.sha256(shard.read_bytes())
    (bad / cache.MANIFEST).write_text(json.dumps(m))
    with pytest.raises(InputError, match="shard-00001.safetensors: not a readable cache shard"):
        _open(plan, bad)
    # end to end: one line on stderr, exit 1, no traceback, nothing trained or written
    shard.write_bytes(data[:-1])
    out = torchrun(["-m", "planner", "run", str(plan), "--teacher-cache", str(bad), "--steps", str(STEPS), "--no-progress", "--random-init",
                    "--metrics-out", str(tmp_path / "m.json")], check=False, timeout=240)
    errors = [ln for ln in out.stderr.splitlines() if "error:" in ln]
    assert out.returncode != 0 and len(errors) == 1 and "shard-00001.safetensors: sha256 differs" in errors[0], out.stderr[-3000:]
    assert "planner/executor" not in out.stderr, out.stderr[-3000:]  # no worker traceback (torchrun's own report is its own)
    assert not (tmp_path / "m.json").exists()


def test_cli_refuses_overwrite_and_missing_cache(written):
    tmp, plan, folder = written
    before = (folder / cache.MANIFEST).read_bytes()
    res = CliRunner().invoke(app, ["run", str(plan), "--cache-teacher", str(folder)])
    assert res.exit_code == 1 and "already holds a teacher cache; pass --force" in res.output
    assert (folder / cache.MANIFEST).read_bytes() == before
    res = CliRunner().invoke(app, ["run", str(plan)])
    assert res.exit_code == 1 and "cached needs --teacher-cache DIR" in res.output
    live = tiny_plan(tmp, "replicate-ddp", "live-cli", teacher_output="topk", topk=K)
    res = CliRunner().invoke(app, ["run", str(live), "--teacher-cache", str(folder)])
    assert res.exit_code == 1 and "a cache is read only with teacher_output: cached" in res.output
    onpolicy = tiny_plan(tmp, "replicate-ddp", "onpolicy", lmbda=0.5)
    res = CliRunner().invoke(app, ["run", str(onpolicy), "--cache-teacher", str(tmp / "new")])
    assert res.exit_code == 1 and "fixed completions only (lmbda 0)" in res.output and not (tmp / "new").exists()


def test_dataset_cache_is_row_by_row_and_serves_every_epoch(tmp_path):
    """A 5-row JSONL dataset: the cache holds the 5 rows once; 3 steps of 8 samples (almost 5 epochs,
    each a different permutation) trained from it give the live teacher's top-k losses."""
    data = tmp_path / "data.jsonl"
    rows = [{"prompt": "why is the sky " * (i + 1), "completion": "blue" + " indeed" * i} for i in range(5)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    plan = tiny_plan(tmp_path, "replicate-ddp", "cached-data", teacher_output="cached", topk=K, lmbda=0.0)
    live = tiny_plan(tmp_path, "replicate-ddp", "live-data", teacher_output="topk", topk=K, lmbda=0.0)
    for p in (plan, live):  # the dataset is part of the plan
        p.write_text(p.read_text().replace("\ndataset: null", f"\ndataset: {data}"))  # not training.eval_dataset
    # one launch: write the cache (as `planner run --cache-teacher`, steps from the plan), then train from it and live
    jobs = [{"plan": str(plan), "cache_teacher": str(tmp_path / "dir")},
            {"plan": str(plan), "metrics_out": str(tmp_path / "cached.json"), "steps": STEPS, "teacher_cache": str(tmp_path / "dir")},
            {"plan": str(live), "metrics_out": str(tmp_path / "live.json"), "steps": STEPS}]
    (tmp_path / "jobs.json").write_text(json.dumps(jobs))
    torchrun([str(ROOT / "tests" / "executor" / "run_many.py"), str(tmp_path / "jobs.json")], timeout=300)
    m = json.loads((tmp_path / "dir" / cache.MANIFEST).read_text())
    assert m["samples"] == 5 and m["data"]["path"] == str(data) and len(m["data"]["sha256"]) == 16
    got, want = (json.loads((tmp_path / f"{n}.json").read_text())["loss"] for n in ("cached", "live"))
    assert len(got) == STEPS and all(abs(a - b) < 1e-6 for a, b in zip(got, want)), (got, want)
    data.write_text(data.read_text() + json.dumps({"prompt": "p", "completion": "c"}) + "\n")  # the data changed
    with pytest.raises(InputError, match=r"manifest.json: data.sha256 is"):
        p = load_plan(plan)
        tok = build.build_tokenizer(None)
        cache.open_cache(tmp_path / "dir", p, 0, STEPS, tok, make_samples(p, tok, 0, p.dataset), torch.device("cpu"))

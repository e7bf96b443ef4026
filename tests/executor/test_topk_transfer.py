"""Top-k from a disaggregated teacher on 2 gloo processes: the values (logits dtype) and int32
indices arrive exactly as the teacher computed them, in far fewer bytes than [b, C, V] logits, and
training on them gives the colocated top-k loss and the single-process reference's."""

import json

import pytest
from executor_helpers import ROOT, tiny_plan, torchrun

from planner.executor.loop import RunOptions
from planner.executor.reference import reference_losses
from planner.plan import load_plan

STEPS, K = 3, 16


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One torchrun launch (the workers start once): the transfer, then every plan below; the folder
    holds transfer.json and each plan's metrics as <plan stem>.json."""
    tmp = tmp_path_factory.mktemp("topk")
    dis = tiny_plan(tmp, "disaggregated", "dis-topk", teacher_output="topk", topk=K)
    plans = [(dis, STEPS), (tiny_plan(tmp, "replicate-ddp", "col-topk", teacher_output="topk", topk=K), STEPS),
             (tiny_plan(tmp, "replicate-ddp", "col-logits"), STEPS)]
    plans += [(tiny_plan(tmp, example, f"{example}-topk", teacher_output="topk", topk=K), 2) for example in ("shard-zero3", "pipeline-ddp")]
    jobs = [{"plan": str(p), "metrics_out": str(tmp / f"{p.stem}.json"), "steps": steps} for p, steps in plans]
    (tmp / "jobs.json").write_text(json.dumps(jobs))
    torchrun([str(ROOT / "tests" / "executor" / "topk_transfer.py"), str(dis), str(tmp / "transfer.json"), str(tmp / "jobs.json")],
             timeout=600)
    return tmp


def test_topk_transfer_and_loss(runs):
    rows = json.loads((runs / "transfer.json").read_text())
    assert len(rows) == 3
    for r in rows:
        assert r["values_equal"] and r["indices_equal"]
        assert r["values_dtype"] == "torch.float32" and r["indices_dtype"] == "torch.int32" and r["shape"] == [2, 8, K]
        assert r["bytes"] * 16 == r["logits_bytes"]  # 2 x k x 4 bytes per token instead of V x 4 (V = 512, k = 16)
    got = {name: json.loads((runs / f"{name}.json").read_text()) for name in ("dis-topk", "col-topk", "col-logits")}
    want_loss, want_norm = reference_losses(load_plan(runs / "col-topk.yaml"), RunOptions(steps=STEPS, random_init=True))
    for step in range(STEPS):
        for name in ("dis-topk", "col-topk"):
            assert abs(got[name]["loss"][step] - want_loss[step]) < 1e-5, (name, step, got[name]["loss"], want_loss)
            assert abs(got[name]["grad_norm"][step] - want_norm[step]) <= 1e-5 * want_norm[step], (name, step)
        assert abs(got["dis-topk"]["loss"][step] - got["col-topk"]["loss"][step]) < 1e-6
    # the top-k loss is not the full-logits loss (k = 16 of 512): the switch took effect
    assert abs(got["col-topk"]["loss"][0] - got["col-logits"]["loss"][0]) > 1e-3


def test_sharded_and_pipelined_teachers_give_the_topk_reference(runs):
    """teacher_output: topk over an FSDP2 and a pipelined teacher (top-k taken on the owning rank)."""
    for stem in ("shard-zero3-topk", "pipeline-ddp-topk"):
        got = json.loads((runs / f"{stem}.json").read_text())
        want, _ = reference_losses(load_plan(runs / f"{stem}.yaml"), RunOptions(steps=2, random_init=True))
        assert all(abs(a - b) < 1e-5 for a, b in zip(got["loss"], want)) and len(got["loss"]) == 2, (stem, got["loss"], want)
        assert got["peak_memory_bytes"]["0"]["teacher_params"] > 0

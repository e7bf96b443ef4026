"""Top-k from a disaggregated teacher on 2 gloo processes: the values (logits dtype) and int32
indices arrive exactly as the teacher computed them, in far fewer bytes than [b, C, V] logits, and
training on them gives the colocated top-k loss and the single-process reference's."""

import json

from executor_helpers import ROOT, tiny_plan, torchrun

from planner.executor.loop import RunOptions
from planner.executor.reference import reference_losses
from planner.plan import load_plan

STEPS, K = 3, 16


def test_topk_transfer_and_loss(tmp_path):
    dis = tiny_plan(tmp_path, "disaggregated", "dis-topk", teacher_output="topk", topk=K)
    col = tiny_plan(tmp_path, "replicate-ddp", "col-topk", teacher_output="topk", topk=K)
    full = tiny_plan(tmp_path, "replicate-ddp", "col-logits")
    jobs = [{"plan": str(p), "metrics_out": str(tmp_path / f"{p.stem}.json"), "steps": STEPS} for p in (dis, col, full)]
    (tmp_path / "jobs.json").write_text(json.dumps(jobs))
    torchrun([str(ROOT / "tests" / "executor" / "topk_transfer.py"), str(dis), str(tmp_path / "transfer.json"), str(tmp_path / "jobs.json")],
             timeout=300)
    rows = json.loads((tmp_path / "transfer.json").read_text())
    assert len(rows) == 3
    for r in rows:
        assert r["values_equal"] and r["indices_equal"]
        assert r["values_dtype"] == "torch.float32" and r["indices_dtype"] == "torch.int32" and r["shape"] == [2, 8, K]
        assert r["bytes"] * 16 == r["logits_bytes"]  # 2 x k x 4 bytes per token instead of V x 4 (V = 512, k = 16)
    got = {p.stem: json.loads((tmp_path / f"{p.stem}.json").read_text()) for p in (dis, col, full)}
    want_loss, want_norm = reference_losses(load_plan(col), RunOptions(steps=STEPS, random_init=True))
    for step in range(STEPS):
        for name in ("dis-topk", "col-topk"):
            assert abs(got[name]["loss"][step] - want_loss[step]) < 1e-5, (name, step, got[name]["loss"], want_loss)
            assert abs(got[name]["grad_norm"][step] - want_norm[step]) <= 1e-5 * want_norm[step], (name, step)
        assert abs(got["dis-topk"]["loss"][step] - got["col-topk"]["loss"][step]) < 1e-6
    # the top-k loss is not the full-logits loss (k = 16 of 512): the switch took effect
    assert abs(got["col-topk"]["loss"][0] - got["col-logits"]["loss"][0]) > 1e-3


def test_sharded_and_pipelined_teachers_give_the_topk_reference(tmp_path):
    """teacher_output: topk over an FSDP2 and a pipelined teacher (top-k taken on the owning rank)."""
    plans = [tiny_plan(tmp_path, example, f"{example}-topk", teacher_output="topk", topk=K) for example in ("shard-zero3", "pipeline-ddp")]
    jobs = [{"plan": str(p), "metrics_out": str(tmp_path / f"{p.stem}.json"), "steps": 2} for p in plans]
    (tmp_path / "jobs.json").write_text(json.dumps(jobs))
    torchrun([str(ROOT / "tests" / "executor" / "run_many.py"), str(tmp_path / "jobs.json")], timeout=300)
    for p in plans:
        got = json.loads((tmp_path / f"{p.stem}.json").read_text())
        want, _ = reference_losses(load_plan(p), RunOptions(steps=2, random_init=True))
        assert all(abs(a - b) < 1e-5 for a, b in zip(got["loss"], want)) and len(got["loss"]) == 2, (p.stem, got["loss"], want)
        assert got["peak_memory_bytes"]["0"]["teacher_params"] > 0

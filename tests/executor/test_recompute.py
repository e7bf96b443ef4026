"""The three workload switches the executor honours: the attention kernel (flash_attention: sdpa vs
eager), the student's recomputation (grad_checkpointing: none / selective / full) and the
generation KV cache. Each changes what is kept or recomputed, never the numbers: checked with the
bytes autograd saves (`saved_tensors_hooks`, by storage), the gradients, and the decode inputs."""

from types import SimpleNamespace

import pytest
import torch

from executor_helpers import ROOT, tiny_plan, torchrun

from planner.executor import models
from planner.executor.data import Batch
from planner.executor.generate import generate
from planner.plan import load_plan


def student(tmp_path, **workload):
    return models.student_model(load_plan(tiny_plan(tmp_path, "replicate-ddp", **workload)), seed=0, folder=None).train()


def saved_bytes_and_grads(model, ids) -> tuple[int, dict]:
    """Bytes autograd keeps for backward outside recomputed regions (distinct storages), and the gradients."""
    seen: dict[int, int] = {}

    def pack(t):
        s = t.untyped_storage()
        seen[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model(input_ids=ids).logits.float().logsumexp(-1).mean()
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    return sum(seen.values()), grads


def test_recomputation_and_kernel_change_what_is_saved_not_the_gradients(tmp_path):
    ids = torch.randint(3, 200, (2, 96), generator=torch.Generator().manual_seed(0))
    got = {}
    for flash in (True, False):
        for ckpt in ("none", "selective", "full"):
            model = student(tmp_path, flash_attention=flash, grad_checkpointing=ckpt)
            kernel = "sdpa" if flash else "eager"
            assert model.config._attn_implementation == (f"kd-selective-{kernel}" if ckpt == "selective" else kernel)
            assert model.model.layers[0].gradient_checkpointing == (ckpt == "full")
            got[flash, ckpt] = saved_bytes_and_grads(model, ids)
    for flash in (True, False):
        none, sel, full = (got[flash, c][0] for c in ("none", "selective", "full"))
        assert none > sel > full, (flash, none, sel, full)
    assert got[False, "none"][0] > got[True, "none"][0]  # eager keeps the s x s probabilities
    ref = got[True, "none"][1]
    for key, (_, grads) in got.items():
        for name, g in grads.items():
            assert torch.allclose(g, ref[name], rtol=1e-4, atol=1e-6), (key, name)


def test_the_teacher_runs_the_workloads_kernel(tmp_path):
    for flash, kernel in ((True, "sdpa"), (False, "eager")):
        plan = load_plan(tiny_plan(tmp_path, "replicate-ddp", flash_attention=flash, grad_checkpointing="selective"))
        teacher = models.teacher(plan, SimpleNamespace(device=torch.device("cpu")), 0, None)
        assert teacher.model.config._attn_implementation == kernel  # the teacher has no backward: nothing to recompute


@pytest.mark.parametrize("use_cache", [True, False])
def test_generation_with_and_without_kv_cache_samples_the_same(tmp_path, use_cache):
    model = student(tmp_path).eval()
    P, C = 6, 5
    ids = torch.randint(3, 200, (2, P + C), generator=torch.Generator().manual_seed(1))
    batch = Batch(ids, torch.ones_like(ids), ids[:, P:])
    lengths = []
    hook = model.register_forward_pre_hook(lambda m, a, kw: lengths.append(kw["input_ids"].shape[1]), with_kwargs=True)
    out = generate(model, batch, P, 1.0, seed=7, use_cache=use_cache)
    hook.remove()
    assert lengths == ([P] + [1] * (C - 1) if use_cache else list(range(P, P + C)))
    want = generate(model, batch, P, 1.0, seed=7, use_cache=True)
    assert torch.equal(out.input_ids, want.input_ids) and out.input_ids.shape == ids.shape


def test_runs_with_every_switch_match_the_reference(tmp_path):
    """2 processes: a ZeRO-3 student under full recomputation generating without a KV cache, and a
    DDP student under selective recomputation with eager attention, each against the reference."""
    import json

    from planner.executor.loop import RunOptions
    from planner.executor.reference import reference_losses

    variants = {"shard-zero3": dict(grad_checkpointing="full", generation_kv_cache=False, flash_attention=True, lmbda=0.5),
                "replicate-ddp": dict(grad_checkpointing="selective", flash_attention=False)}
    jobs = [{"plan": str(tiny_plan(tmp_path, ex, **w)), "metrics_out": str(tmp_path / f"{ex}.json"), "steps": 2} for ex, w in variants.items()]
    (tmp_path / "jobs.json").write_text(json.dumps(jobs))
    torchrun([str(ROOT / "tests" / "executor" / "run_many.py"), str(tmp_path / "jobs.json")], timeout=300)
    for job in jobs:
        got = json.loads(open(job["metrics_out"]).read())
        want, norms = reference_losses(load_plan(job["plan"]), RunOptions(steps=2, random_init=True))
        assert all(abs(a - b) < 1e-5 for a, b in zip(got["loss"], want)), (job["plan"], got["loss"], want)
        assert all(abs(a - b) <= 1e-5 * b for a, b in zip(got["grad_norm"], norms)), (job["plan"], got["grad_norm"], norms)

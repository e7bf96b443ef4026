"""The plan's training section in a real run (2 gloo processes): the schedule, AdamW's knobs and
clipping give the single-process reference's losses, lrs and gradient norms; the eval loss at its
interval is the no-grad loss over the eval split; retention keeps exactly N checkpoints; the JSONL
log and TensorBoard get every step; the final save reloads with `from_pretrained` and gives the
logits of the trained weights (those of the last DCP checkpoint), for a DDP and a ZeRO-3 student and
a disaggregated teacher (its ranks serve the eval forwards; the student's first rank is not rank 0)."""

import json

import pytest
import torch

from executor_helpers import ROOT, tiny_plan, torchrun

from planner.executor.build import ByteTokenizer
from planner.executor.data import load_samples
from planner.executor.loop import RunOptions
from planner.executor.reference import reference_run
from planner.inputs.yamlio import dump_yaml
from planner.plan import load_plan

STEPS = 5


def _dataset(path, rows=40, seed=3):
    g = torch.Generator().manual_seed(seed)
    with open(path, "w") as f:
        for _ in range(rows):
            p = torch.randint(3, 512, (int(torch.randint(3, 9, (1,), generator=g)),), generator=g).tolist()
            c = torch.randint(3, 512, (int(torch.randint(2, 8, (1,), generator=g)),), generator=g).tolist()
            f.write(json.dumps({"prompt": p, "completion": c}) + "\n")
    return path


def _trained_weights(folder):
    """The student's weights in a DCP checkpoint, read in this (non-distributed) process."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import FileSystemReader

    meta = FileSystemReader(str(folder)).read_metadata()
    sd = {k: torch.empty(m.size, dtype=m.properties.dtype) for k, m in meta.state_dict_metadata.items()
          if k.startswith("model.") and hasattr(m, "size")}
    dcp.load(sd, checkpoint_id=folder, no_dist=True)
    return {k[len("model."):]: v for k, v in sd.items()}


EXAMPLES = ["replicate-ddp", "shard-zero3", "disaggregated"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    """Each example's plan (with a training section), its folders and metrics, all run in one torchrun
    launch (run_many.py: the workers start once)."""
    tmp = tmp_path_factory.mktemp("training")
    dataset = str(_dataset(tmp / "data.jsonl"))
    out, jobs = {}, []
    for example in EXAMPLES:
        d = tmp / example
        d.mkdir()
        plan = tiny_plan(d, example)
        data = load_plan(plan).model_dump(mode="json")
        data["dataset"] = dataset
        data["training"] = {"lr": 2e-3, "schedule": "cosine", "warmup_steps": 2, "min_lr": 1e-4, "weight_decay": 0.1,
                            "betas": [0.8, 0.99], "max_grad_norm": 0.01, "steps": STEPS, "eval_fraction": 0.25, "eval_every": 2,
                            "checkpoint_dir": str(d / "ckpt"), "checkpoint_every": 1, "keep_checkpoints": 3, "output_dir": str(d / "student"),
                            "log_jsonl": str(d / "log.jsonl"), "tensorboard_dir": str(d / "tb")}
        plan.write_text(dump_yaml(data))
        jobs.append({"plan": str(plan), "metrics_out": str(d / "m.json"), "steps": STEPS})  # steps 5 as well: the option and the plan agree
        out[example] = d
    (tmp / "jobs.json").write_text(json.dumps(jobs))
    torchrun([str(ROOT / "tests" / "executor" / "run_many.py"), str(tmp / "jobs.json")], timeout=900)
    return out


@pytest.mark.parametrize("example", EXAMPLES)
def test_training_section(runs, example):
    from transformers import AutoModelForCausalLM

    d = runs[example]
    plan, ckpt, out, log, tb = d / f"{example}.yaml", d / "ckpt", d / "student", d / "log.jsonl", d / "tb"
    got = json.loads((d / "m.json").read_text())
    want = reference_run(load_plan(plan), RunOptions(random_init=True))

    # schedule, betas, decay and clipping: the reference's numbers; clipping was active
    assert got["lr"] == pytest.approx(want["lr"], rel=1e-12) and got["lr"][0] < got["lr"][2] > got["lr"][-1]
    assert got["loss"] == pytest.approx(want["loss"], abs=1e-5)
    assert got["grad_norm"] == pytest.approx(want["grad_norm"], rel=1e-5)
    assert min(got["grad_norm"]) > 0.01
    # eval at steps 2 and 4 and after the last; 10 held-out rows over 2 ranks x micro-batch 2: a partial last micro-step
    assert [s for s, _ in got["eval_loss"]] == [2, 4, 5]
    assert [v for _, v in got["eval_loss"]] == pytest.approx([v for _, v in want["eval_loss"]], abs=1e-5)
    # retention: exactly the 3 newest complete checkpoints
    assert sorted(p.name for p in ckpt.iterdir() if p.name != ".kd-planner.lock") == ["step-00000003", "step-00000004", "step-00000005"]
    # logs: one start line, a line per step with every field, the evals; TensorBoard event files
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    steps = [x for x in lines if "loss" in x]
    assert [x["step"] for x in steps] == [1, 2, 3, 4, 5] and lines[0]["event"] == "start"
    # tokens_per_s counts each step's prompt + completion tokens (cut to 8 + 8), not the padding (lmbda 0)
    samples, _ = load_samples(load_plan(plan), ByteTokenizer(), 0, load_plan(plan).dataset)
    for k, x in enumerate(steps):
        assert {"step", "loss", "lr", "grad_norm", "samples_per_s", "tokens_per_s", "memory_bytes"} <= x.keys()
        real = sum(min(len(p), 8) + min(len(c), 8) for p, c in map(samples.sample, range(8 * k, 8 * (k + 1))))
        assert real < 8 * 16 and x["samples_per_s"] > 0 and x["memory_bytes"] > 0
        assert x["tokens_per_s"] == pytest.approx(x["samples_per_s"] * real / 8)
    assert [x["loss"] for x in steps] == got["loss"] and [x["lr"] for x in steps] == got["lr"]
    assert [[x["step"], x["eval_loss"]] for x in lines if "eval_loss" in x] == got["eval_loss"]
    assert list(tb.glob("events.out.tfevents.*"))
    # the final save: from_pretrained gives the logits of the trained weights
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()
    saved = AutoModelForCausalLM.from_pretrained(out, local_files_only=True).eval()
    trained = AutoModelForCausalLM.from_pretrained(out, local_files_only=True).eval()
    trained.load_state_dict(_trained_weights(ckpt / "step-00000005"))
    ids = torch.randint(3, 512, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = saved(input_ids=ids).logits, trained(input_ids=ids).logits
        c = want["student"](input_ids=ids).logits
    assert torch.equal(a, b)
    assert torch.allclose(a, c, atol=1e-4), (a - c).abs().max()
    assert not torch.allclose(a, AutoModelForCausalLM.from_config(saved.config)(input_ids=ids).logits, atol=1e-3)

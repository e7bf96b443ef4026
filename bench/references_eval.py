"""How each published row (bench/references/published.yaml) maps onto the cost model.

No formula lives here: every figure comes from the compiled cost model (`planner.cost.compile`)
or, for bus bandwidth, from `planner.cost.comm` on the link `planner.cost.bind.link_fit` picks.
What this file decides is how a row's setting becomes the model's inputs:

- training rows: the student side of one optimizer step (forward, backward, loss, FSDP
  exposure, gradient sync, optimizer; lmbda 0, no teacher) of the row's model, micro-batch,
  accumulation and sequence, under a pre-training runtime (logits and a cross-entropy over every
  position: the fp32 upcast and its gradient, two buffers). FSDP rows without tensor, pipeline
  or context parallelism go through the whole student path (ZeRO-3 over dp ranks). Rows with
  tp x pp x cp > 1 (Megatron, 2-D FSDP) are "compute-only": each GPU does 1/(tp*pp*cp) of the
  FLOPs, a pipeline adds the interleaved bubble (pp-1)/(vp*m) (Narayanan et al. 2021), and their
  collectives are taken as hidden (Megatron overlaps them); say so in the note. fp8 rows compute
  at the fp8 peak and keep 16-bit activations and weights (Transformer Engine, torchao float8).
- MFU rows: predicted tokens/s x model FLOPs per token (forward x 3, attention not halved, as
  torchtitan and Megatron count) / the dtype's peak.
- decode / prefill rows: `generation.decode_step` / `generation.prefill` of a student engine on
  one GPU or a tensor-parallel group in a node (the rollout role's vLLM replicas; its two
  all-reduces per layer on the topology's intra-node link), with the row's batch and lengths,
  under the row's engine: eager PyTorch/HF with the bundled runtime's fitted host time per layer;
  compiled (gpt-fast) and serving engines (vLLM, TensorRT-LLM) without (CUDA graphs). fp8 rows
  read 1-byte weights and cache. Inter-token latency under `batch` concurrent clients (a unit that
  says ITL: the NIM rows) is a closed loop: every step c/N requests finish and as many new ones
  are prefilled between the steps (continuous batching); a request waits for the others' (its own
  is its time to first token), so ITL = decode step at batch c + (c-1)/N of one prompt's prefill
  (mapped on 2026-12-08, after the batch-25 row's -53% was known; no knob).
- bus bandwidth rows: the ring model's time for the row's message (or the large-message limit when
  the size is not stated) on the row's topology, as nccl-tests' busbw.
- weight refresh rows: `time.weight_sync` of a plan with rollout GPUs of their own (`timeline.weight_refresh`:
  a sharded trainer's gather, the 16-bit weights pushed over the link from the trainer to the rollout
  GPUs with one call per tensor, and the engine's in-place copy) for the row's model, trainer split,
  trainer and rollout GPU counts and server TP, under the bundled runtime's vllm engine costs, on the
  row's topology sized to hold both (8 GPUs a node where the source does not say).
- memory rows: training: the student side's memory terms; inference: the teacher side's weights
  and activations (a frozen model, as the planner holds a teacher). Units as the row says (GiB or GB).
- recomputation and loss, training rows: `recompute: op` is torchtitan's selective op policy (the cost
  model's `rc_op`: every other matmul's output kept, and recomputed in backward); `loss` picks the
  vocabulary buffers of the row's loss (`LOSSES`); rows without it keep PRETRAIN's two fp32 buffers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from planner.cost import bind, comm
from planner.cost.compile import evaluate
from planner.cost.names import STUDENT_TERMS, TEACHER_TERMS
from planner.inputs.cluster import MAX_RANKS
from planner.inputs.load import Job, load_cluster, load_model, load_runtime
from planner.inputs.model import ModelShape
from planner.inputs.runtime import Generation, Runtime
from planner.inputs.workload import Workload
from planner.search import space
from planner.strategy import Strategy

ROWS = Path(__file__).resolve().parent / "references" / "published.yaml"
STUDENT_TIME = ("generation", "student_forward", "student_backward", "loss", "student_fsdp_exposed", "grad_sync", "optimizer")
EAGER_ENGINES = ("pytorch-eager", "hf-eager")
# Training rows have no teacher: a one-unit stand-in keeps the teacher's terms (which are not summed) and
# its logits inside the shared `logits` term at a few bytes.
NO_TEACHER = ModelShape(name="no-teacher", num_layers=1, hidden=1, num_heads=1, ffn=1, vocab=1)
PRETRAIN = Runtime(name="pretrain", description="next-token cross-entropy over every position", logits="sequence",
                   loss="full", loss_buffers=2, generation=Generation(engine="hf-eager", layer_overhead_us=0, sharded_gather="once"))
# The loss a row names (`workload.loss`), as the runtime's vocabulary buffers and the logits dtype they are in:
# - cross-entropy: torchtitan's eager `cross_entropy(pred.flatten(0, 1).float(), labels)` after `del pred`
#   (train.py at 9dec370). Its backward peaks in the log-softmax backward with three fp32 [tokens, V]
#   tensors (the saved log-softmax output, the gradient nll_loss hands it, the gradient it returns); the
#   16-bit logits are deleted by then, but their block (half the size) cannot hold the third fp32
#   tensor, so at the allocator's reserved level (what these rows report) it stays: logits + 3 fp32.
# - cross-entropy-compiled: torchtitan's loss under `training.compile` (components/loss.py since 2025):
#   one fused kernel keeps the 16-bit logits it was given and writes their 16-bit gradient: logits + 1 in bf16.
LOSSES = {"cross-entropy": (3, "fp32"), "cross-entropy-compiled": (1, "bf16")}


def loss_runtime(w: dict) -> tuple[Runtime, str]:
    """The runtime and logits dtype of a training row's loss (`workload.loss`; unset: PRETRAIN's two fp32 buffers)."""
    if not w.get("loss"):
        return PRETRAIN, "fp32"
    buffers, dtype = LOSSES[w["loss"]]
    return PRETRAIN.model_copy(update={"name": w["loss"], "loss_buffers": buffers}), dtype


def recompute(w: dict) -> tuple[str, dict]:
    """A training row's recomputation as the workload's value and symbol overrides: torchtitan's
    selective op policy (`op`) is a cost-model mode that no bundled runtime runs, so the workload
    has no word for it and the row sets its switch directly."""
    mode = w.get("recompute") or "none"
    return ("none", {"rc_op": 1.0}) if mode == "op" else (mode, {})


def load_rows(path: Path = ROWS) -> list[dict]:
    """The rows, after checking that each row's split is what the file's rule gives."""
    rows = yaml.safe_load(path.read_text())["rows"]
    for kind in {r["kind"] for r in rows}:
        ids = sorted((r["id"] for r in rows if r["kind"] == kind), key=lambda s: s.encode())
        for i, rid in enumerate(ids):
            want = "fit" if i % 2 == 0 else "holdout"
            got = next(r["split"] for r in rows if r["id"] == rid)
            if got != want:
                raise SystemExit(f"{path}: {rid}: split is '{got}' but the split rule gives '{want}'")
    return rows


def shape_of(model) -> ModelShape:
    if isinstance(model, str):
        return load_model(model)
    return ModelShape(name=model["name"], num_layers=model["layers"], hidden=model["hidden"], num_heads=model["heads"],
                      num_kv_heads=model.get("kv_heads"), ffn=model["ffn"], vocab=model["vocab"],
                      gated_mlp=bool(model.get("gated_mlp", True)), max_positions=1 << 20)


def cluster_of(row: dict, knobs: dict | None = None):
    hw = row["hardware"]
    # the planner plans at most MAX_RANKS; the rows beyond it (Megatron's 768-node runs) are compute-only
    cl = load_cluster(row["topology_hint"], min(hw.get("nodes") or 1, MAX_RANKS // (hw.get("gpus_per_node") or 8)))
    for key, value in (row.get("topology_overrides") or {}).items():
        tier, field = key.split(".")
        cl = cl.model_copy(update={tier: getattr(cl, tier).model_copy(update={field: value})})
    if knobs and "compute_efficiency" in knobs:
        eff = knobs["compute_efficiency"].get(row["topology_hint"])
        if eff:
            old = cl.gpu.compute_efficiency
            merged = (dict(old) if isinstance(old, dict) else {d: old for d in cl.gpu.peak_tflops}) | eff
            cl = cl.model_copy(update={"gpu": cl.gpu.model_copy(update={"compute_efficiency": merged})})
    return cl


def _figures(job: Job, cl, st: Strategy, runtime: Runtime, overrides: dict | None = None) -> dict[str, float]:
    values = bind.job_values(job, cl, runtime) | space.columns([st], cl) | (overrides or {})
    return {k: float(np.asarray(v).ravel()[0]) for k, v in evaluate(values).items()}


def _peak(cl, dtype: str) -> float:
    return cl.gpu.peak_tflops[dtype] * 1e12


def train_tokens_per_s(row: dict, knobs: dict | None = None) -> tuple[float, str]:
    """Predicted training tokens/s per GPU and how it was evaluated."""
    w, cl = row["workload"], cluster_of(row, knobs)
    par = w["parallelism"]
    dp, tp, pp, cp, vp = (par.get(k) or 1 for k in ("dp", "tp", "pp", "cp", "vp"))
    b, seq = w.get("micro_batch") or 1, w["seq_len"]
    ga = w.get("grad_accum") or max(1, (w.get("global_batch") or b * dp) // (b * dp))
    dtype = w.get("dtype") or "bf16"
    activ = "bf16" if dtype == "fp8" else dtype
    shape = shape_of(w["model"])
    ckpt, over = recompute(w)
    runtime, logits_dtype = loss_runtime(w)
    work = Workload(global_batch=b * ga * dp, micro_batch_min=b, micro_batch_max=b, prompt_len=seq // 2, completion_len=seq - seq // 2,
                    lmbda=0, student_dtype=activ, grad_checkpointing=ckpt, logits_dtype=logits_dtype)
    job = Job(name=row["id"], teacher=NO_TEACHER, student=shape, workload=work)
    split = tp * pp * cp
    fsdp = par["strategy"] in ("fsdp", "zero3", "hsdp") and dp > 1
    st = Strategy("replicate", "zero3" if fsdp else "ddp", "colocated", dp, dp, s_sh=dp, b=b)
    F = _peak(cl, dtype) * cl.gpu.efficiency(dtype) * split  # a replica's split GPUs share each sample's FLOPs
    f = _figures(job, cl, st, runtime, {"F_S": F} | over)
    if split == 1 and par["strategy"] != "megatron":
        step, how = sum(f[f"time.{k}"] for k in STUDENT_TIME), "whole student path"
    else:
        bubble = (pp - 1) / (vp * ga)
        step = (f["time.student_forward"] + f["time.student_backward"]) * (1 + bubble) + (f["time.loss"] + f["time.optimizer"]) / split
        how = f"compute-only (tp*pp*cp={split}{f', bubble {bubble:.1%}' if pp > 1 else ''}; collectives taken as hidden)"
    return b * ga * seq / split / step, how


def model_flops_per_token(shape: ModelShape, seq: int) -> float:
    """Forward x 3 with full (not causal-halved) attention: how torchtitan and Megatron count MFU."""
    from planner.cost import params
    from planner.cost.symbols import S

    return 3 * float(params.forward_flops_per_token(S, seq, 1).subs(S.values(shape)))


def _single_gpu_job(row: dict, batch: int, prompt: int, new: int, dtype: str) -> tuple[Job, Strategy]:
    shape = shape_of(row["workload"]["model"])
    work = Workload(global_batch=batch, micro_batch_min=batch, micro_batch_max=batch, prompt_len=max(1, prompt),
                    completion_len=max(1, new), lmbda=1, student_dtype=dtype)
    return Job(name=row["id"], teacher=shape, student=shape, workload=work), Strategy("replicate", "ddp", "colocated", 1, 1, b=batch)


def engine_runtime(engine: str, knobs: dict | None = None) -> Runtime:
    """Eager engines take the bundled runtime's host time per layer (or a refit's); compiled and
    serving engines launch a decode step as one graph."""
    eager = any(engine.startswith(e) for e in EAGER_ENGINES)
    us = (knobs or {}).get("decode_layer_overhead_us", load_runtime("kd-planner").generation.layer_overhead_us) if eager else 0.0
    return PRETRAIN.model_copy(update={"generation": Generation(engine="hf-eager" if eager else "vllm", layer_overhead_us=us, sharded_gather="once")})


def generation_ms(row: dict, knobs: dict | None = None) -> tuple[float | None, str]:
    """A generation engine's prefill or decode step on one GPU or a tensor-parallel group of `tp` in a
    node: the rollout role's `generation.*` terms with g_tp = tp, each GPU holding batch / tp of the
    sequences' work (`timeline.decode_step`); fp8 weights and cache are read as 1 byte each."""
    w = row["workload"]
    cl = cluster_of(row, knobs)
    dtype = w.get("dtype") or "bf16"
    tp = w.get("tp") or 1
    batch, prompt, new = w.get("batch") or 1, w.get("prompt_len") or 8, w.get("new_tokens") or 200
    job, st = _single_gpu_job(row, batch, prompt, new, "bf16" if dtype == "fp8" else dtype)
    rt = engine_runtime(w.get("engine") or "", knobs)
    over = {"F_S": _peak(cl, dtype) * cl.gpu.efficiency(dtype), "g_tp": tp, "b": batch / tp} | ({"q_S": 1} if dtype == "fp8" else {})
    f = _figures(job, cl, st, rt, over)
    on = f"{rt.generation.engine}{f', tp {tp}' if tp > 1 else ''}"
    if row["kind"] == "prefill_ms":
        return f["generation.prefill"] * 1e3, f"prefill of {batch} x {prompt} tokens, {on}"
    if "end-to-end" in row["unit"]:
        return (f["generation.prefill"] + new * f["generation.decode_step"]) / new * 1e3, f"(prefill + {new} steps) / {new}, {on}"
    if "ITL" in row["unit"]:  # a server under `batch` closed-loop clients: the arrivals' prefills interleave with the steps
        job1, _ = _single_gpu_job(row, 1, prompt, new, "bf16" if dtype == "fp8" else dtype)
        one = _figures(job1, cl, st, rt, over | {"b": 1 / tp})["generation.prefill"]
        itl = f["generation.decode_step"] + (batch - 1) / new * one  # the others' prefills: a request's own is its TTFT
        return itl * 1e3, f"decode step at batch {batch} + {batch - 1}/{new} of one {prompt}-token prefill per step (closed loop), {on}"
    return f["generation.decode_step"] * 1e3, f"decode step at batch {batch}, {on} ({rt.generation.layer_overhead_us:g} us/layer)"


def weight_refresh(row: dict) -> tuple[float, str]:
    """Predicted seconds of one step's weight refresh into rollout servers of their own."""
    w, hw = row["workload"], row["hardware"]
    n_S, n_R, tp = w["trainer_gpus"], w["rollout_gpus"], w.get("rollout_tp") or 1
    G = hw.get("gpus_per_node") or 8
    nodes = hw.get("nodes") or -(-(n_S + n_R) // G)
    cl = load_cluster(row["topology_hint"], nodes)
    for key, value in (row.get("topology_overrides") or {}).items():
        tier, field = key.split(".")
        cl = cl.model_copy(update={tier: getattr(cl, tier).model_copy(update={field: value})})
    shape = shape_of(w["model"])
    rt = load_runtime("kd-planner")
    work = Workload(global_batch=n_S, micro_batch_min=1, micro_batch_max=1, prompt_len=8, completion_len=8, lmbda=1,
                    student_dtype=w.get("dtype") or "bf16")
    job = Job(name=row["id"], teacher=shape, student=shape, workload=work)
    st = Strategy("replicate", w["trainer"], "colocated", n_S, n_S, s_sh=n_S, rollout="vllm", n_R=n_R, g_tp=tp)
    values = bind.job_values(job, cl, rt) | space.columns([st], cl) | space.engine_columns([st], rt, cl)
    f = {k: float(np.asarray(v).ravel()[0]) for k, v in evaluate(values).items()}
    link = st.links(cl)["W"]
    return f["time.weight_sync"], f"{w['trainer']} trainer on {n_S} -> {n_R // tp} server(s) of tp {tp}, push over {link}"


def busbw(row: dict) -> tuple[float, str]:
    w, cl = row["workload"], cluster_of(row)
    n, op = w["ranks"], w["op"]
    where = "intra_node" if w["nodes"] == 1 else "inter_node"
    bw, alpha = bind.link_fit(where, op, cl)
    if not w.get("size_bytes"):
        return bw / 1e9, f"{where}, large-message limit"
    size = w["size_bytes"]
    t = (comm.all_reduce if op == "all_reduce" else comm.all_gather)(n, size, (bw, alpha))
    factor = 2 * (n - 1) / n if op == "all_reduce" else (n - 1) / n
    return factor * size / t / 1e9, f"{where}, ring, {size / 2**30:g} GiB"


def memory(row: dict, knobs: dict | None = None) -> tuple[float | None, str]:
    w, cl = row["workload"], cluster_of(row, knobs)
    unit = 2**30 if "GiB" in row["unit"] else 1e9
    if "parallelism" not in w:  # inference: a frozen model's weights and its forward's transients
        dtype = w.get("dtype") or "bf16"
        job, st = _single_gpu_job(row, w.get("batch") or 1, w.get("prompt_len") or 8, w.get("new_tokens") or 200, dtype)
        f = _figures(job, cl, st, PRETRAIN)
        return sum(f[f"mem.{k}"] for k in TEACHER_TERMS if k != "teacher_logits") / unit, "teacher-side weights + activations"
    par = w["parallelism"]
    if (par.get("tp") or 1) * (par.get("pp") or 1) * (par.get("cp") or 1) > 1:
        return None, "out of scope: student memory under tensor/pipeline/context parallelism"
    dp, b, seq = par["dp"], w.get("micro_batch") or 1, w["seq_len"]
    dtype = w.get("dtype") or "bf16"
    shape = shape_of(w["model"])
    ckpt, over = recompute(w)
    runtime, logits_dtype = loss_runtime(w)
    work = Workload(global_batch=b * dp, micro_batch_min=b, micro_batch_max=b, prompt_len=seq // 2, completion_len=seq - seq // 2,
                    lmbda=0, student_dtype="bf16" if dtype == "fp8" else dtype, grad_checkpointing=ckpt, logits_dtype=logits_dtype)
    job = Job(name=row["id"], teacher=NO_TEACHER, student=shape, workload=work)
    st = Strategy("replicate", "zero3", "colocated", dp, dp, s_sh=dp, b=b)
    f = _figures(job, cl, st, runtime, over)
    how = f"student side: FSDP states + gathered + activations ({w.get('recompute') or 'none'}) + logits and loss ({runtime.name})"
    return sum(f[f"mem.{k}"] for k in STUDENT_TERMS) / unit, how


def predict(row: dict, knobs: dict | None = None) -> tuple[float | None, str]:
    kind = row["kind"]
    if kind == "train_tokens_per_s_per_gpu":
        return train_tokens_per_s(row, knobs)
    if kind == "train_mfu":
        tps, how = train_tokens_per_s(row, knobs)
        w, cl = row["workload"], cluster_of(row, knobs)
        mfu = tps * model_flops_per_token(shape_of(w["model"]), w["seq_len"]) / _peak(cl, w.get("dtype") or "bf16") * 100
        return mfu, how
    if kind in ("decode_ms_per_token", "prefill_ms"):
        return generation_ms(row, knobs)
    if kind == "busbw_gb_per_s":
        return busbw(row)
    if kind == "weight_refresh_s":
        return weight_refresh(row)
    if kind == "memory_gib":
        return memory(row, knobs)
    raise SystemExit(f"{ROWS}: {row['id']}: unknown kind '{kind}'")


def evaluate_row(row: dict, knobs: dict | None = None) -> dict:
    pred, note = predict(row, knobs)
    published = float(row["value"])
    err = None if pred is None else (pred - published) / published
    return {"id": row["id"], "kind": row["kind"], "split": row["split"], "published": published, "predicted": pred,
            "error": err, "unit": row["unit"], "note": note, "source": row["source"]}

"""The GKD training loop under torch.distributed, applied in this order: groups, inputs, models,
strategies, optimizer, resume, schedule, steps (with evaluation, logs and checkpoints), final save,
metrics. The plan's `training` section says how (lr, schedule, clipping, length, ...).

Per micro-step and student rank: [student generation, with probability lmbda] -> teacher logits
(no grad) -> student forward -> chunked generalized JSD -> backward; then clip and step.
"""

from __future__ import annotations

import os
import random
import time
from collections import deque
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from planner.executor import build, cache, checkpoint, groups, manifest, metrics, models, save, schedule, student as stu, teacher as tea
from planner.executor.data import load_samples, micro_batch_indices
from planner.executor.evaluate import evaluate, micro_steps
from planner.executor.generate import generate
from planner.executor.rollout.ahead import Ahead
from planner.executor.rollout.static import generate_static
from planner.executor.logs import RunLog
from planner.executor.stop import StopRequest
from planner.executor.loss import generalized_jsd
from planner.executor.topk import TopKTeacher
from planner.inputs.errors import InputError
from planner.inputs.training import resolve_steps
from planner.plan import Plan, tokenizer_folder

LOGITS_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


@dataclass
class RunOptions:
    """What `planner run` adds to the plan; None means: the plan's `training` section says."""

    steps: int | None = None  # else training.steps, else workload.epochs over the data, else 10
    seed: int = 0
    metrics_out: Path | None = None
    force: bool = False  # overwrite metrics_out and a non-empty output_dir
    checkpoint_dir: Path | None = None
    checkpoint_every: int | None = None
    output_dir: Path | None = None  # final Hugging Face save
    stop_file: Path | None = None  # stop cleanly (checkpoint, exit 0) once it exists, as on SIGUSR1
    warmup_steps: int = 2  # left out of samples/s (not the lr warmup: training.warmup_steps)
    progress: bool = True
    phases: bool = False  # also time each phase of a step (on a GPU this synchronizes at every boundary)
    teacher_cache: Path | None = None  # teacher_output: cached reads the teacher's top-k from here (planner/executor/cache.py)
    cache_teacher: Path | None = None  # write that cache instead of training (planner/executor/cache_pass.py)
    random_init: bool = False  # seeded random weights instead of the refs' checkpoints (refs without weights need it)
    allow_changed_settings: bool = False  # resume a checkpoint written under other settings (lr, schedule, loss, ...), saying so


def on_policy(seed: int, step: int, micro: int, lmbda: float) -> bool:
    """The same coin on every rank: does this micro-step train on student-generated completions?"""
    return lmbda > 0 and random.Random(f"{seed}/{step}/{micro}").random() < lmbda


def sample_seed(seed: int, step: int, micro: int, dp_rank: int) -> int:
    return (seed * 1_000_003 + step * 10_007 + micro * 101 + dp_rank) % (2**63)


def autocast(device: torch.device, dtype: str):
    if dtype in ("bf16", "fp16"):
        return torch.autocast(device.type, dtype=build.TORCH_DTYPES[dtype])
    return nullcontext()


def _maybe_fail(rank: int, steps_done: int) -> None:
    """Test hook: PLANNER_EXECUTOR_FAIL_AT_STEP=k kills PLANNER_EXECUTOR_FAIL_RANK (default 1) once,
    before step k, leaving PLANNER_EXECUTOR_FAIL_MARKER behind so the restarted run goes on."""
    at, marker = os.environ.get("PLANNER_EXECUTOR_FAIL_AT_STEP"), os.environ.get("PLANNER_EXECUTOR_FAIL_MARKER")
    if at is None or marker is None or int(at) != steps_done or rank != int(os.environ.get("PLANNER_EXECUTOR_FAIL_RANK", "1")):
        return
    if not Path(marker).exists():
        Path(marker).write_text(f"rank {rank} exited before step {steps_done}\n")
        os._exit(17)


def build_teacher(plan: Plan, lay: groups.Layout, seed: int, folder):
    """This rank's part of the teacher (`models.teacher`), keeping only its top-k when the plan says so."""
    teacher = models.teacher(plan, lay, seed, folder)
    return TopKTeacher(teacher, plan.workload.topk) if plan.workload.teacher_output == "topk" else teacher


def _progress(enabled: bool, total: int, done: int):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(TextColumn("[bold]GKD[/bold]"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                   TextColumn("{task.fields[info]}"), disable=not enabled, transient=False)
    return bar, bar.add_task("train", total=total, completed=done, info="")


def stop_on_input_error(problem: list[str] | None, lay: groups.Layout) -> None:
    """Every rank learns whether any rank found its inputs unusable; if one did, all stop with the
    same `InputError` (`planner run` prints it on rank 0 only), before any model is built."""
    found: list = [None] * lay.world
    dist.all_gather_object(found, problem)
    first = next((p for p in found if p), None)
    if first:
        e = InputError(first)
        e.all_ranks = True  # every rank has it: `planner run` prints it once, on rank 0
        raise e


def eval_points(start: int, steps: int, every: int) -> list[int]:
    """The step counts after which a run from `start` to `steps` evaluates: every `every`, and the last."""
    return sorted({k for k in range(start + 1, steps + 1) if every and k % every == 0} | ({steps} if steps > start else set()))


def serve_steps(teacher, lay: groups.Layout, plan: Plan, start: int, steps: int, evals: list[int], eval_micro: int,
                stop: StopRequest, record: dict, anon: metrics.AnonPeak) -> None:
    """A disaggregated teacher rank, step by step as its students train: their micro-batches (and
    the eval forwards after an eval step), then the stop agreement every rank makes after a step."""
    w = plan.workload
    mine = [r for i, r in enumerate(lay.student_ranks) if tea.teacher_rank_of(i, lay.teacher_ranks) == lay.rank]
    t0 = time.perf_counter()
    for step in range(start, steps):
        anon.mark("first_step" if step == start else "steps")
        if teacher is not None:  # a cached run has nothing to serve
            requests = plan.grad_accum + (eval_micro if step + 1 in evals else 0)
            tea.serve(teacher, mine, requests, plan.micro_batch, LOGITS_DTYPES[w.logits_dtype], lay.device)
        if step + 1 < steps and stop.agreed():
            record["stopped_at"] = step + 1
            break
    record["serve_time_s"] = time.perf_counter() - t0


def train(plan: Plan, lay: groups.Layout, opts: RunOptions, backend: str) -> dict | None:
    w, tr, seed = plan.workload, plan.training, opts.seed
    anon = metrics.AnonPeak()  # the peak anonymous memory, by phase (load, first_step, steps)
    ldtype = LOGITS_DTYPES[w.logits_dtype]
    ckpt_dir = opts.checkpoint_dir or (Path(tr.checkpoint_dir) if tr.checkpoint_dir else None)
    ckpt_every = tr.checkpoint_every if opts.checkpoint_every is None else opts.checkpoint_every
    out_dir = opts.output_dir or (Path(tr.output_dir) if tr.output_dir else None)
    # The student's inputs first, before any model is built: a bad tokenizer or dataset line stops
    # every rank here, reported once by rank 0. The checkpoint fingerprint covers them too.
    tokenizer = samples = held = fp = cached = None
    problem = None
    if lay.is_student:
        try:
            tokenizer = build.build_tokenizer(tokenizer_folder(plan))
            samples, held = load_samples(plan, tokenizer, seed, plan.dataset)
            if out_dir and lay.rank == lay.coordinator:  # the rank that saves keeps a second run out of the output folder
                out = Path(out_dir).expanduser()
                manifest.lock(out.parent, "--output-dir", f".{out.name}{manifest.LOCK}")
        except InputError as e:
            problem = e.lines
    stop_on_input_error(problem, lay)
    # The run's length and the eval split's size are known where the data was read; every rank needs them.
    sizes = [resolve_steps(opts.steps, tr, w.epochs, len(samples.rows) if samples and samples.rows else None, w.global_batch),
             len(held.rows) if held else 0] if lay.is_student else [0, 0]
    dist.broadcast_object_list(sizes, src=lay.coordinator)
    steps, n_eval = sizes
    if w.teacher_output == "cached":  # the cache is checked (manifest, shard sha256s) before any model is built
        problem = None
        if lay.is_student:
            try:
                if held is not None:
                    raise InputError("training: a cached teacher (teacher_output: cached) holds the training rows only; "
                                     "evaluation needs the live teacher: drop eval_fraction/eval_dataset or use teacher_output: topk")
                cached = cache.open_cache(opts.teacher_cache, plan, seed, steps, tokenizer, samples, lay.device, lay.dp_rank, lay.dp_size)
            except InputError as e:
                problem = e.lines
        stop_on_input_error(problem, lay)
    if lay.is_student and ckpt_dir:
        fp = checkpoint.fingerprint(plan, seed, tokenizer)
    # Models: each rank builds and loads only what it holds (random weights: seeds make every copy identical).
    t_folder, s_folder = models.folders(plan, opts.random_init)
    teacher = build_teacher(plan, lay, seed, t_folder) if lay.is_teacher and w.teacher_output != "cached" else None
    model = opt = None
    if lay.is_student:
        model = models.student(plan, lay, seed, s_folder)
        opt = stu.optimizer(model, plan.student.strategy, lay, tr, w.optimizer)
    # Room on disk for what the run will write (`save.disk_needs`), before the first step.
    problem = None
    if lay.is_student and lay.rank == lay.coordinator and (out_dir or ckpt_dir):
        try:
            save.check_free_space(save.disk_needs(model, w.optimizer, out_dir, ckpt_dir))
        except InputError as e:
            problem = e.lines
    stop_on_input_error(problem, lay)
    # Resume from the newest complete checkpoint of this run that loads; every rank learns the step.
    start = checkpoint.resume(ckpt_dir, fp, model, opt, lay, opts.allow_changed_settings)
    evals = eval_points(start, steps, tr.eval_every) if n_eval else []
    eval_micro = micro_steps(n_eval, plan.micro_batch, len(lay.student_ranks)) if n_eval else 0
    record = {"rank": lay.rank, "device": str(lay.device), "loss": [], "tokens": [], "grad_norm": [], "on_policy": [], "step_times_s": [],
              "lr": [], "eval_loss": [], "rollout_version": [],
              "role": "student" if not lay.is_teacher else ("teacher" if not lay.is_student else "both")}
    # SIGUSR1 or the stop file: every rank (a disaggregated teacher's too) stops after the same step
    stop = StopRequest(opts.stop_file, lay)
    if lay.is_teacher and not lay.is_student:  # disaggregated teacher: answer the student ranks
        serve_steps(teacher, lay, plan, start, steps, evals, eval_micro, stop, record, anon)
        stop.close()
        record["memory"] = metrics.memory(lay.device, {}, _teacher_module(teacher), anon)
        record["peak_anon_phase"] = anon.peak_phase
        return _finish(plan, lay, opts, record, start, backend)
    if cached is not None:
        teacher = cached
    elif plan.teacher.served:  # vLLM servers of the teacher, outside this world: top-k log-probs over HTTP
        from planner.executor.teacher_server import Served, endpoint_of

        teacher = Served(endpoint_of(plan.teacher.endpoints, lay.dp_rank), w.topk, ldtype, lay.device)
    elif plan.placement == "disaggregated":
        teacher = tea.Remote(tea.teacher_rank_of(lay.dp_rank, lay.teacher_ranks), plan.teacher.shape.vocab, w.completion_len, ldtype, lay.device,
                             w.topk if w.teacher_output == "topk" else None)
    ahead = 1 if isinstance(teacher, tea.Remote) or plan.teacher.served else 0  # a remote teacher computes micro-step k+1 while the student trains on k
    engine = rollout_engine(plan, model, lay, seed)
    chunk = w.loss_chunk_tokens if w.loss == "chunked" else None
    bar, task = _progress(opts.progress and lay.rank == lay.coordinator, steps, start)
    # per-phase seconds (the metrics' phase_s): always on a CPU (a lap costs a clock read), on a GPU with --phases only (a lap synchronizes)
    clock = metrics.PhaseClock(lay.device, opts.phases or lay.device.type == "cpu")
    sched = schedule.make_scheduler(opt, tr, steps, start)
    log = RunLog(tr.log_jsonl, tr.tensorboard_dir, lay.rank == lay.coordinator)
    log.start(start, steps)

    def sample(step: int, micro: int):
        idx = micro_batch_indices(step, micro, lay.dp_rank, lay.dp_size, plan.micro_batch, plan.grad_accum)
        return samples.batch(idx).to(lay.device), on_policy(seed, step, micro, w.lmbda)

    def rollout(step: int, micro: int, batch):
        """The batch with the student's own completion (the in-process loops: hf-eager, hf-static)."""
        with autocast(lay.device, w.student_dtype), stu.for_generation(stu.unwrapped(model), plan.student.strategy, plan.student.gather) as gen_model:
            batch = batch.pad(batch.prompt_len, w.completion_len)  # generation writes completion_len tokens on every rank
            if plan.rollout.engine == "hf-static":  # a static KV cache (and a compiled decode step on a GPU)
                return generate_static(gen_model, batch, batch.prompt_len, w.temperature, sample_seed(seed, step, micro, lay.dp_rank))
            return generate(gen_model, batch, batch.prompt_len, w.temperature, sample_seed(seed, step, micro, lay.dp_rank),
                            w.generation_kv_cache)

    def produce(step: int) -> dict:
        """Step `step`'s on-policy micro-batches, generated: {micro-step: batch} (the async schedule)."""
        todo = {m: b for m, (b, gen) in ((m, sample(step, m)) for m in range(plan.grad_accum)) if gen}
        if engine is not None:  # dedicated rollout servers: all of the step's, in flight at once over HTTP
            outs = engine.generate_many([b.pad(b.prompt_len, w.completion_len) for b in todo.values()], w.temperature,
                                        [sample_seed(seed, step, m, lay.dp_rank) for m in todo])
            return dict(zip(todo, outs))
        return {m: rollout(step, m, b) for m, b in todo.items()}

    def push(step: int) -> None:
        """Async with dedicated servers: before step `step`'s rollouts are requested, the servers get
        the trainer's current weights (when an optimizer step changed them and that step generates)."""
        if engine is not None and engine.stale and any(on_policy(seed, step, m, w.lmbda) for m in range(plan.grad_accum)):
            engine.refresh(model)
            clock.lap("weight_sync")

    pre = Ahead(produce) if plan.schedule == "async" else None
    current: dict = {}  # async: this step's generated micro-batches
    generated: dict = {}  # vllm: the step's on-policy micro-batches, generated together at its first

    def make(step: int, micro: int):
        batch, gen = sample(step, micro)
        if gen and pre is not None:
            batch = current[micro]  # generated during the previous step (or before this one, the first)
        elif gen:
            clock.lap("teacher")  # --phases: what came before is the teacher's (as without generation)
            if engine is not None:  # vLLM: the trainer's weights in place first, when a step changed them
                if (step, micro) not in generated:  # the step's first on-policy micro-batch: all of them, in one call
                    if engine.stale:
                        engine.refresh(model)
                        clock.lap("weight_sync")
                    todo = [m for m in range(micro, plan.grad_accum) if sample(step, m)[1]]
                    outs = engine.generate_many([b.pad(b.prompt_len, w.completion_len) for b in (sample(step, m)[0] for m in todo)], w.temperature,
                                                [sample_seed(seed, step, m, lay.dp_rank) for m in todo])
                    generated.clear()
                    generated.update({(step, m): b for m, b in zip(todo, outs)})
                batch = generated.pop((step, micro))
            else:
                batch = rollout(step, micro, batch)
            clock.lap("generation")
        return batch, teacher.request(batch), gen

    with bar:
        for step in range(start, steps):
            anon.mark("first_step" if step == start else "steps")
            _maybe_fail(lay.rank, step)
            if lay.device.type == "cuda":
                torch.cuda.synchronize(lay.device)
            t0 = time.perf_counter()
            queue, total, gens = deque(), torch.zeros(2, device=lay.device, dtype=torch.float64), 0  # loss sum, tokens (not padding)
            clock.start()
            if pre is not None:  # async: this step's rollouts (the first step's generated now), then the next step's in the background
                if step == start:
                    push(step)
                    pre.start(step, step)
                version, current, overlapped = pre.take()
                clock.lap("generation")  # the wait: all of the first step's generation, else what the thread had left
                if step > start:
                    clock.add("generation_overlapped", overlapped)
                record["rollout_version"].append(version if current else None)
                if step + 1 < steps:
                    push(step + 1)
                    pre.start(step + 1, step)
            for micro in range(plan.grad_accum):
                while len(queue) + micro <= min(micro + ahead, plan.grad_accum - 1):
                    queue.append(make(step, micro + len(queue)))
                batch, wait, gen = queue.popleft()
                gens += gen
                last = micro == plan.grad_accum - 1
                clock.lap("teacher")  # with generation, when on-policy
                with stu.grad_sync(model, last), autocast(lay.device, w.student_dtype):
                    s_logits = tea.completion_logits(model, batch.input_ids, batch.attention_mask, batch.completion_len)
                    clock.lap("student_forward")
                    t_logits = wait()
                    clock.lap("teacher")
                    loss = generalized_jsd(s_logits, t_logits, batch.labels, w.beta, w.temperature, chunk, ldtype)
                    clock.lap("loss_forward")
                    (loss / plan.grad_accum).backward()
                    clock.lap("backward")
                total += torch.stack([loss.detach().double(), batch.attention_mask.sum().double()])
            if pre is not None:  # the next step's rollouts were generated with these weights: done before they change
                pre.wait()
                clock.lap("generation")
            norm = stu.clip_grad_norm(model, tr.max_grad_norm)
            lr = schedule.current_lr(opt)
            opt.step()
            if engine is not None:
                engine.stale = True  # the next rollout loads these weights first
            schedule.step(sched)
            clock.lap("optimizer")
            if step == steps - 1:  # counted once, on the last step, and kept out of its time
                t_count = time.perf_counter()
                state = stu.state_bytes(model, opt)  # gradients and optimizer state both alive here
                t0 += time.perf_counter() - t_count
                clock.lap(None)
            opt.zero_grad(set_to_none=True)
            dist.all_reduce(total, group=lay.student_group)
            if lay.device.type == "cuda":
                torch.cuda.synchronize(lay.device)
            clock.lap("optimizer")
            clock.stop()
            record["step_times_s"].append(time.perf_counter() - t0)
            record["loss"].append(total[0].item() / (plan.grad_accum * lay.dp_size))
            record["tokens"].append(int(total[1].item()))
            record["grad_norm"].append(norm)
            record["on_policy"].append(gens)
            record["lr"].append(lr)
            if (step + 1) % tr.log_every == 0 or step + 1 == steps:
                log.step(step + 1, record["loss"][-1], lr, norm, record["step_times_s"][-1], w.global_batch, record["tokens"][-1], lay.device)
            if step + 1 in evals:
                loss = evaluate(model, teacher, held, n_eval, lay, plan, lambda: autocast(lay.device, w.student_dtype), ldtype)
                record["eval_loss"].append([step + 1, loss])
                log.eval(step + 1, loss, n_eval)
            saved = bool(ckpt_dir and ckpt_every and (step + 1) % ckpt_every == 0)
            if saved:
                checkpoint.save(ckpt_dir, step + 1, model, opt, lay, fp, tr.keep_checkpoints)
            bar.update(task, advance=1, info=f"loss {record['loss'][-1]:.4f}")
            if step + 1 < steps and stop.agreed():  # asked to stop (SIGUSR1, stop file): save this step and go
                if ckpt_dir and not saved:
                    checkpoint.save(ckpt_dir, step + 1, model, opt, lay, fp, tr.keep_checkpoints)
                stop.consume()
                record["stopped_at"] = step + 1
                break
    if pre is not None:
        pre.wait()  # a stopped run's next-step rollouts: never used
    log.close()
    stop.close()
    if out_dir and "stopped_at" not in record:
        save.save_pretrained(model, lay, out_dir, tokenizer, opts.force)
    if opts.phases:
        record["phase_times_s"] = clock.steps
    record["phase_s"] = metrics.phase_seconds(clock.steps[min(opts.warmup_steps, max(len(clock.steps) - 1, 0)):]) if clock.enabled else None
    record["schedule"] = plan.schedule
    record["engines"] = {"rollout": rollout_engine_name(plan) if w.lmbda > 0 else None, "teacher": plan.teacher.engine}
    if hasattr(teacher, "close"):
        teacher.close()
    record["memory"] = metrics.memory(lay.device, state if steps > start and "stopped_at" not in record else stu.state_bytes(model, opt),
                                      _teacher_module(teacher), anon)
    record["peak_anon_phase"] = anon.peak_phase
    out = _finish(plan, lay, opts, record, start, backend)
    if engine is not None:  # after the last collective: shutting vLLM down may take torch.distributed with it
        engine.close()
    return out


def rollout_engine(plan: Plan, model, lay: groups.Layout, seed: int):
    """This student rank's rollout engine beyond the eager loop (`plan.rollout`), or None."""
    r, w = plan.rollout, plan.workload
    if not lay.is_student or w.lmbda == 0 or r.engine in ("hf-eager", "hf-static"):  # the in-process loops, in `make`
        return None
    if r.engine == "vllm" and r.placement == "dedicated":  # vLLM servers of the student, outside this world
        from planner.executor.rollout.vllm_server import VllmDedicated

        return VllmDedicated(r.endpoints, lay.dp_rank, lay.student_group)
    if r.engine == "vllm":
        from planner.executor.rollout.vllm_engine import VllmColocated

        return VllmColocated(model, w.prompt_len + w.completion_len, w.student_dtype, lay.device, seed + lay.dp_rank, r.tp,
                             r.gpu_memory_utilization, lay.world, r.sleep)
    raise InputError(f"rollout.engine: {r.engine} is not implemented by the executor yet; use hf-eager or vllm")


def rollout_engine_name(plan: Plan) -> str:
    """What generated the rollouts, for the metrics: the plan's engine, or vllm-server for dedicated servers."""
    return "vllm-server" if plan.rollout.placement == "dedicated" else plan.rollout.engine


def _teacher_module(teacher) -> torch.nn.Module | None:
    """The teacher parameters this rank holds (none for a remote or cached teacher)."""
    return getattr(teacher, "model", None) or getattr(teacher, "stage_module", None)


def _finish(plan: Plan, lay: groups.Layout, opts: RunOptions, record: dict, start: int, backend: str) -> dict | None:
    records = [None] * lay.world
    dist.all_gather_object(records, record)
    if lay.rank != 0:
        return None
    out = metrics.summarize(plan, records, start, opts.warmup_steps, backend)
    if opts.metrics_out:
        metrics.write(out, opts.metrics_out, opts.force)
    return out


def run(plan: Plan, opts: RunOptions, keep_process_group: bool = False) -> dict | None:
    """Run the plan's training on this process (one of the plan's world, launched by torchrun).

    `keep_process_group` leaves torch.distributed up for another run in the same job (tests, bench).
    """
    try:
        groups.check_supported(plan)
        models.folders(plan, opts.random_init)  # a ref without weights needs --random-init
        save.check_layout(opts.output_dir or plan.training.output_dir, opts.checkpoint_dir or plan.training.checkpoint_dir)
    except InputError as e:
        e.all_ranks = True  # the same answer on every rank: said once
        raise
    backend, device = groups.init_distributed(plan)
    try:
        lay = groups.build_layout(plan, device)
        return train(plan, lay, opts, backend)
    finally:
        if not keep_process_group and dist.is_initialized():  # a colocated vLLM engine's shutdown may have taken it down
            dist.destroy_process_group()

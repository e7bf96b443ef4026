"""`planner run PLAN`: run GKD training with exactly the plan's partitioning (one process of torchrun)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from planner.cli.common import Command, err, handles_errors, require_executor
from planner.files import check_output
from planner.inputs.errors import InputError, said_elsewhere


def _override(plan, teacher: str | None, student: str | None, tokenizer: str | None, dataset: str | None):
    from planner.inputs.load import load_model

    update = {}
    for key, ref in (("teacher", teacher), ("student", student)):
        if ref:
            part = getattr(plan, key)
            update[key] = part.model_copy(update={"ref": ref, "shape": load_model(ref)})
    if tokenizer:
        update["tokenizer"] = tokenizer
    if dataset:
        if not Path(dataset).expanduser().exists():
            raise InputError(f"--dataset: {dataset}: not found; give a local .jsonl or .parquet file, or a folder written by `Dataset.save_to_disk`")
        update["dataset"] = dataset
    return plan.model_copy(update=update) if update else plan


def register(app: typer.Typer) -> None:
    @app.command(cls=Command)
    @handles_errors
    def run(
        plan: Annotated[Path, typer.Argument(help="Plan file (YAML) from `planner recommend` or written by hand.")],
        steps: Annotated[Optional[int], typer.Option(help="Optimizer steps to reach (a resumed run continues to this count); default the plan's training.steps, else workload.epochs over the dataset, else 10.", min=1)] = None,
        seed: Annotated[int, typer.Option(help="Seed of the weights, the data order and on-policy sampling.")] = 0,
        metrics_out: Annotated[Optional[Path], typer.Option(help="Write measured samples/s, losses and memory (JSON) here (checked before training starts).")] = None,
        force: Annotated[bool, typer.Option(help="Overwrite --metrics-out, the cache in the --cache-teacher folder, and a non-empty --output-dir, if they exist.")] = False,
        checkpoint_dir: Annotated[Optional[Path], typer.Option(help="Folder of student checkpoints; the run resumes from the newest complete one (default: the plan's training.checkpoint_dir).")] = None,
        checkpoint_every: Annotated[Optional[int], typer.Option(help="Save a checkpoint every N steps (0: never; default: the plan's training.checkpoint_every).", min=0)] = None,
        output_dir: Annotated[Optional[Path], typer.Option(help="Save the trained student here in Hugging Face format at the end (default: the plan's training.output_dir).")] = None,
        stop_file: Annotated[Optional[Path], typer.Option(help="Stop cleanly once this file exists (checked every step), as on SIGUSR1: save a checkpoint, write the metrics, exit 0; a rerun resumes.")] = None,
        warmup_steps: Annotated[int, typer.Option(help="Steps left out of samples/s.", min=0)] = 2,
        teacher: Annotated[Optional[str], typer.Option(help="Replace the plan's teacher: a local checkpoint folder (config.json + safetensors); with --random-init also a bundled name or config.json.")] = None,
        student: Annotated[Optional[str], typer.Option(help="Replace the plan's student: a local checkpoint folder (config.json + safetensors); with --random-init also a bundled name or config.json.")] = None,
        random_init: Annotated[bool, typer.Option("--random-init", help="Seeded random weights from the refs' shapes instead of their checkpoints (needed for a bundled name or a folder without weights).")] = False,
        tokenizer: Annotated[Optional[str], typer.Option(help="Local tokenizer folder (default: the plan's, else the student's (or teacher's) checkpoint folder when it has one, else bytes).")] = None,
        dataset: Annotated[Optional[str], typer.Option(help="Local dataset: a .jsonl or .parquet file, or a `Dataset.save_to_disk` folder, with `messages` or `prompt`/`completion` (default: the plan's, else synthetic prompts).")] = None,
        progress: Annotated[bool, typer.Option(help="Progress bar on the first student rank.")] = True,
        phases: Annotated[bool, typer.Option(help="Also time each phase of a step into the metrics (on a GPU this synchronizes at every phase).")] = False,
        cache_teacher: Annotated[Optional[Path], typer.Option(help="Do not train: run only the teacher over the data (lmbda 0) and write its top-k (workload.topk) per token to this folder, a shard per teacher rank and manifest.json (synthetic data: --steps x global batch samples; a dataset: every row). An existing cache is refused unless --force.")] = None,
        teacher_cache: Annotated[Optional[Path], typer.Option(help="Cache folder written by --cache-teacher; required by workload.teacher_output: cached (no teacher is built). A cache made with another teacher, tokenizer, data, lengths or k, or a damaged shard, is refused before training.")] = None,
        allow_changed_settings: Annotated[bool, typer.Option("--allow-changed-settings", help="Resume a checkpoint written under other settings (loss, beta, temperature, lmbda, optimizer, lr, schedule, clipping, dtypes) and go on under the new ones, saying what changed; without it such a resume is refused.")] = False,
        teacher_url: Annotated[Optional[list[str]], typer.Option("--teacher-url", help="teacher.engine: vllm-server: the base URL (http://HOST:PORT) of a vLLM OpenAI server of the teacher; repeat it for each replica (student rank i asks replica i mod n). Replaces the plan's teacher.endpoints.")] = None,
        rollout_url: Annotated[Optional[list[str]], typer.Option("--rollout-url", help="rollout.placement: dedicated: the base URL (http://HOST:PORT) of a vLLM OpenAI server of the student (started with VLLM_SERVER_DEV_MODE=1 and --worker-extension-cls planner.executor.rollout.vllm_reload.Reload); repeat it for each replica (student rank i asks replica i mod n). Replaces the plan's rollout.endpoints.")] = None,
    ) -> None:
        """Train the student by GKD with the plan's split of both models; launch with `torchrun --nproc-per-node N -m planner run PLAN`."""
        # Each problem is said once: one found before the ranks meet (the plan, the flags: the same on
        # every rank of a node) by the first rank of each node; one every rank learned together (the
        # executor's inputs: tokenizer, dataset) by rank 0; the executor's others by the rank that saw them.
        die_with_launcher()
        try:
            _run(plan, steps, seed, metrics_out, force, checkpoint_dir, checkpoint_every, output_dir, stop_file, warmup_steps, teacher,
                 student, random_init, tokenizer, dataset, progress, phases, cache_teacher, teacher_cache, allow_changed_settings, teacher_url, rollout_url)
        except InputError as e:
            if e.lines:
                raise
            # another rank says it: wait for it (torchrun stops this rank once that one exits; exiting
            # first would have torchrun stop that rank before it prints), then say it here if still running
            time.sleep(float(os.environ.get("PLANNER_SILENT_RANK_WAIT_S", SILENT_RANK_WAIT_S)))
            raise InputError(getattr(e, "held", [])) from None


SILENT_RANK_WAIT_S = 30.0  # at most; a run whose rank 0 said the error ends as soon as rank 0 exits


def die_with_launcher() -> None:
    """Under torchrun on Linux: this rank gets SIGTERM when the launcher (its parent) dies, instead
    of running on as an orphan (prctl PR_SET_PDEATHSIG); nothing elsewhere."""
    if "LOCAL_RANK" not in os.environ or not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the launcher died before the call: stop now
        os.kill(os.getpid(), signal.SIGTERM)


def _run(plan, steps, seed, metrics_out, force, checkpoint_dir, checkpoint_every, output_dir, stop_file, warmup_steps, teacher,
         student, random_init, tokenizer, dataset, progress, phases, cache_teacher, teacher_cache, allow_changed_settings, teacher_url, rollout_url) -> None:
    try:
        p = _prepare(plan, metrics_out, force, checkpoint_dir, checkpoint_every, output_dir, teacher, student, tokenizer, dataset)
        p = _endpoints(plan, p, teacher_url, rollout_url)
        _check_cache(p, cache_teacher, teacher_cache, force)
        _check_weights(plan, p, random_init)
    except InputError as e:
        raise (InputError(e.lines) if os.environ.get("LOCAL_RANK", "0") == "0" else said_elsewhere(e.lines)) from None
    from planner.executor import cache_pass, loop
    from planner.executor.loop import RunOptions
    run_plan = cache_pass.run if cache_teacher else loop.run
    try:
        out = run_plan(p, RunOptions(steps=steps, seed=seed, metrics_out=metrics_out, force=force, checkpoint_dir=checkpoint_dir,
                                     checkpoint_every=checkpoint_every, output_dir=output_dir, stop_file=stop_file, warmup_steps=warmup_steps, progress=progress,
                                     phases=phases, teacher_cache=teacher_cache, cache_teacher=cache_teacher, random_init=random_init,
                                     allow_changed_settings=allow_changed_settings))
    except InputError as e:
        if getattr(e, "all_ranks", False) and os.environ.get("RANK", "0") != "0":
            raise said_elsewhere(e.lines) from None
        raise
    if out is not None and cache_teacher:
        err.print(f"done: teacher cache of {out['samples']} samples in {out['shards']} shard(s), "
                  f"{out['bytes'] / 2**20:.1f} MiB, {out['seconds']:.1f} s: {out['folder']}")
    elif out is not None and out.get("stopped"):
        err.print(f"stopped on request (SIGUSR1 or --stop-file) after step {out['end_step']}; with a checkpoint folder "
                  "that step was saved: run again to resume from it")
    elif out is not None:
        sps = out["samples_per_s"]
        err.print(f"done: steps {out['start_step']}..{out['end_step']}, last loss {out['loss'][-1] if out['loss'] else float('nan'):.4f}, "
                  f"{sps:.2f} samples/s" if sps else "done")


def _endpoints(path: Path, plan, teacher_url: list[str] | None, rollout_url: list[str] | None = None):
    """The plan with --teacher-url as its served teacher's endpoints and --rollout-url as its
    dedicated rollout's; each served role needs one."""
    if rollout_url:
        if plan.rollout.placement != "dedicated":
            raise InputError(f"--rollout-url: the plan's rollout.placement is {plan.rollout.placement}; a URL is for rollout.placement: dedicated")
        bad = [u for u in rollout_url if not u.startswith(("http://", "https://"))]
        if bad:
            raise InputError(f"--rollout-url: {bad[0]}: give a base URL, http://HOST:PORT")
        plan = plan.model_copy(update={"rollout": plan.rollout.model_copy(update={"endpoints": list(rollout_url)})})
    if teacher_url:
        if not plan.teacher.served:
            raise InputError(f"--teacher-url: the plan's teacher.engine is {plan.teacher.engine}; a URL is for teacher.engine: vllm-server")
        bad = [u for u in teacher_url if not u.startswith(("http://", "https://"))]
        if bad:
            raise InputError(f"--teacher-url: {bad[0]}: give a base URL, http://HOST:PORT")
        plan = plan.model_copy(update={"teacher": plan.teacher.model_copy(update={"endpoints": list(teacher_url)})})
    if plan.teacher.served and not plan.teacher.endpoints:
        raise InputError(f"{path}: teacher.endpoints: a vllm-server teacher needs its servers' URLs; give --teacher-url http://HOST:PORT "
                         "(once per replica) or `planner export` the plan")
    if plan.rollout.placement == "dedicated" and not plan.rollout.endpoints:
        raise InputError(f"{path}: rollout.endpoints: dedicated rollout needs its vLLM servers' URLs; give --rollout-url http://HOST:PORT "
                         "(once per replica) or `planner export` the plan")
    return plan


def _check_cache(plan, cache_teacher: Path | None, teacher_cache: Path | None, force: bool) -> None:
    """The cache flags against each other and the plan's workload.teacher_output."""
    from planner.executor.cache import check_target

    w = plan.workload
    if cache_teacher and teacher_cache:
        raise InputError("--cache-teacher writes a cache and --teacher-cache reads one; give one of them")
    if cache_teacher:
        if w.lmbda > 0:
            raise InputError(f"--cache-teacher: workload.lmbda is {w.lmbda}; a teacher cache holds fixed completions only (lmbda 0)")
        check_target(cache_teacher, force)
    elif w.teacher_output == "cached" and not teacher_cache:
        raise InputError("workload.teacher_output: cached needs --teacher-cache DIR; write the cache first with "
                         "`planner run PLAN --cache-teacher DIR`")
    elif teacher_cache and w.teacher_output != "cached":
        raise InputError(f"--teacher-cache: the plan's workload.teacher_output is {w.teacher_output}; a cache is read only with teacher_output: cached")


def _prepare(plan: Path, metrics_out: Path | None, force: bool, checkpoint_dir: Path | None, checkpoint_every: int | None,
             output_dir: Path | None, teacher: str | None, student: str | None, tokenizer: str | None, dataset: str | None):
    """The plan to run, with every check that needs no other rank done."""
    from planner.plan import load_plan

    p = load_plan(plan)
    if os.environ.get("RANK", "0") == "0":  # figures of another CPU: say so once (the plan's predictions stay the plan's)
        from planner.cli.common import on_this_machine
        from planner.plan import plan_cluster

        try:
            on_this_machine(plan_cluster(plan, p), p.cluster, replace=False)
        except InputError:
            pass  # the plan's topology is not here: nothing to compare
    world = os.environ.get("WORLD_SIZE")
    if world is not None and world.isdigit() and int(world) != p.torch_world:
        served = f", less the {p.world - p.torch_world} GPU(s) of its served roles" if p.torch_world != p.world else ""
        raise InputError(f"{plan}: nodes x gpus_per_node: the plan needs {p.torch_world} processes ({p.nodes} x {p.gpus_per_node}{served}) but torchrun "
                         f"started {world} (WORLD_SIZE); launch with `torchrun --nnodes {p.nodes} --nproc-per-node {p.torch_world // p.nodes}`, "
                         "or `planner export` the plan")
    tr = p.training
    ckpt_dir = checkpoint_dir or tr.checkpoint_dir
    if checkpoint_every and not ckpt_dir:
        raise InputError("--checkpoint-every needs --checkpoint-dir (or the plan's training.checkpoint_dir)")
    if ckpt_dir and Path(ckpt_dir).exists() and not Path(ckpt_dir).is_dir():
        raise InputError(f"{'--checkpoint-dir' if checkpoint_dir else f'{plan}: training.checkpoint_dir'}: {ckpt_dir}: is a file, not a folder")
    if metrics_out:  # every rank checks; rank 0 writes at the end, atomically and again without clobbering
        check_output(metrics_out, force, "--metrics-out")
    require_executor("planner run")
    from planner.executor.logs import require_tensorboard
    from planner.executor.save import check_checkpoint_dir, check_layout, check_output_dir

    out_flag = "--output-dir" if output_dir else f"{plan}: training.output_dir"
    ckpt_flag = "--checkpoint-dir" if checkpoint_dir else f"{plan}: training.checkpoint_dir"
    if ckpt_dir:
        check_checkpoint_dir(ckpt_dir, ckpt_flag)
    if output_dir or tr.output_dir:
        check_layout(output_dir or tr.output_dir, ckpt_dir, out_flag, ckpt_flag)
        check_output_dir(output_dir or tr.output_dir, force, out_flag)
    if tr.tensorboard_dir:
        require_tensorboard(f"{plan}: training.tensorboard_dir")
    return _override(p, teacher, student, tokenizer, dataset)


def _check_weights(plan: Path, p, random_init: bool) -> None:
    """A ref without weights and no --random-init: one line per model, naming the plan file (or the folder)."""
    from planner.executor.models import folders

    folders(p, random_init, str(plan))

"""How a ZeRO-3/HSDP student is gathered for generation is the planner's choice (issue 17): the search
costs `once` and `per_step` where the runtime can run both and the job generates, the plan records
the winner (`student.gather`, `+per_step` in the strategy grammar), and old plans gather once."""

from dataclasses import replace

import pytest

from planner.inputs.errors import InputError
from planner.inputs.load import load_cluster, load_job, load_runtime
from planner.inputs.runtime import Generation
from planner.plan import Plan
from planner.search import output, rank, space
from planner.strategy import Strategy

BIG = "jobs/qwen3-235b-a22b-to-30b-a3b.yaml"  # the 30B-A3B student: 57 GiB of bf16 weights gathered once


def _eager_job(*args):
    """A job whose rollouts the trainer's own model generates (a vLLM engine gets its weights in the
    step's refresh and is never gathered per decode step)."""
    job = load_job(*args)
    return job.model_copy(update={"workload": job.workload.model_copy(update={"rollout_engine": "hf-eager"})})


def _runtime(*gathers):
    rt = load_runtime("kd-planner")
    return rt.model_copy(update={"generation": rt.generation.model_copy(update={"sharded_gather": list(gathers)})})


def _twin(sc: rank.Scored, job, cl, gather: str) -> rank.Scored:
    """The same layout, teacher output and runtime, gathered the other way."""
    st = replace(sc.strategy, gather=gather)
    return rank.score([st], [None], output.with_output(job, sc.output), cl, load_runtime(sc.runtime))[0]


def test_search_gathers_per_step_when_once_does_not_fit(root):
    job, cl = _eager_job(str(root / BIG)), load_cluster("dgx-a100", 2)
    res = rank.search(job, cl)
    assert res.ranked, "the default runtime plans the 235B -> 30B job"
    first = res.ranked[0]
    assert first.strategy.gather == "per_step" and first.strategy.student in ("zero3", "hsdp")
    once = _twin(first, job, cl, "once")
    assert not once.feasible and once.reason == "out of memory (largest term: student_generation)"
    assert once.figures["mem.student_generation"] > first.figures["mem.student_generation"] + 40 * 2**30
    assert first.figures["mem.teacher_logits"] > 0  # the teacher logits' memory per device is in the plan
    # Gathering once is the runtime's only way: nothing fits, as before the planner chose.
    assert not rank.search(job, cl, runtime=_runtime("once")).ranked


def test_search_gathers_once_where_it_fits_and_is_faster(root):
    """The same job on 141 GB GPUs: the whole bf16 student fits next to the rest, and a gather per
    generation instead of per token wins; per step would hold less and run slower."""
    job, cl = _eager_job(str(root / BIG)), load_cluster("hgx-h200", 2)
    res = rank.search(job, cl)
    first = res.ranked[0]
    assert first.strategy.student in ("zero3", "hsdp") and first.strategy.gather == "once"
    per_step = _twin(first, job, cl, "per_step")
    assert per_step.feasible and per_step.samples_per_s < first.samples_per_s / 2
    assert per_step.figures["mem_peak"] < first.figures["mem_peak"] - 40 * 2**30
    # slower but smaller: ranked too, below
    assert any((s.strategy, s.output) == (per_step.strategy, per_step.output) for s in res.ranked[1:])
    # the default job: its 8B student gathered once costs no memory beyond the training phase, so
    # per step is slower in the same memory and set aside
    job, cl = _eager_job(), load_cluster("dgx-h100", 2)
    res = rank.search(job, cl)
    first = res.ranked[0]
    assert first.strategy.student in ("zero3", "hsdp") and first.strategy.gather == "once"
    per_step = _twin(first, job, cl, "per_step")
    assert per_step.feasible and per_step.samples_per_s < first.samples_per_s
    assert per_step.figures["mem_peak"] == pytest.approx(first.figures["mem_peak"])
    assert not any((s.strategy, s.output) == (per_step.strategy, per_step.output) for s in res.ranked)
    assert res.rejected[rank.DOMINATED_GATHER] > 0


def test_per_step_wins_once_a_reserve_leaves_no_room_for_the_whole_student(root):
    """The same job, cluster and layout: a memory reserve between the two peaks flips the choice."""
    job, cl = _eager_job(str(root / BIG)), load_cluster("hgx-h200", 2)
    first = rank.search(job, cl).ranked[0]
    per_step = _twin(first, job, cl, "per_step")
    gap = first.figures["mem_peak"] - per_step.figures["mem_peak"]
    keep = rank.Reserve(0.0, (rank.bind.usable_bytes(cl) - per_step.figures["mem_peak"] - gap / 2) / 2**30)
    res = rank.search(job, cl, reserve=keep)
    layouts = {(s.strategy, s.output) for s in res.ranked}
    assert (per_step.strategy, per_step.output) in layouts and (first.strategy, first.output) not in layouts
    assert res.ranked[0].strategy.gather == "per_step"


def test_only_generating_sharded_students_get_both_ways():
    job, cl = _eager_job(), load_cluster("dgx-h100", 2)
    both = space.gathers(job, load_runtime("kd-planner"))
    assert both == ("once", "per_step")
    cands, _ = space.enumerate_candidates(job, cl, both)
    per_step = [c for c in cands if c.gather == "per_step"]
    assert per_step and {c.student for c in per_step} == {"zero3", "hsdp"}
    assert len(per_step) == sum(1 for c in cands if c.student in ("zero3", "hsdp") and c.gather == "once")
    off = job.model_copy(update={"workload": job.workload.model_copy(update={"lmbda": 0.0})})
    assert space.gathers(off, load_runtime("kd-planner")) == ("once",)  # nothing generated: nothing to choose
    assert space.gathers(job, load_runtime("trl-distillation")) == ("once",)  # TRL gathers once


def test_the_grammar_and_the_plan_carry_the_gather():
    job, cl = _eager_job(), load_cluster("dgx-h100", 2)
    st = Strategy.parse("shard:16/hsdp:8+per_step/colocated/4", cl)
    assert (st.student, st.s_sh, st.gather) == ("hsdp", 8, "per_step") and str(st) == "shard:16/hsdp:8+per_step/colocated/4"
    assert Strategy.parse("shard:16/zero3+once/colocated/4", cl) == Strategy.parse("shard:16/zero3/colocated/4", cl)
    data = st.to_plan(job, cl, "dgx-h100").model_dump(mode="json")
    assert data["student"]["gather"] == "per_step" and Strategy.from_plan(Plan(**data)) == st
    del data["student"]["gather"]  # a plan from before the choice: gathered once, as the executor did
    assert Strategy.from_plan(Plan(**data)).gather == "once"
    with pytest.raises(InputError, match="a ddp student holds its whole weights"):
        Strategy.parse("replicate/ddp+per_step", cl)
    with pytest.raises(InputError, match="after '\\+' only once or per_step"):
        Strategy.parse("shard/zero3+twice", cl)
    data = st.to_plan(job, cl, "dgx-h100").model_dump(mode="json")
    data["student"] |= {"strategy": "ddp", "shard": 1}
    with pytest.raises(Exception, match="a ddp student holds its whole weights"):
        Plan(**data)


@pytest.mark.parametrize("text, want", [
    ("shard:16/zero3+per_step/colocated/1+topk", ("shard:16/zero3+per_step/colocated/1", "topk")),
    ("shard:16+ep:8/zero3/colocated/1+cached", ("shard:16+ep:8/zero3/colocated/1", "cached")),
    ("shard:16+ep:8/zero3+per_step", ("shard:16+ep:8/zero3+per_step", None)),
    ("shard:16/zero3/colocated/1", ("shard:16/zero3/colocated/1", None)),
])
def test_a_teacher_output_follows_the_strategy_whatever_plus_signs_it_holds(text, want):
    assert output.split(text, "--strategy") == want


def test_a_runtime_lists_its_gathers():
    assert Generation(engine="hf-eager", layer_overhead_us=0, sharded_gather="once").sharded_gather == ["once"]  # older files
    assert load_runtime("kd-planner").generation.sharded_gather == ["once", "per_step"]
    assert load_runtime("trl-gkd").cannot_run("shard", "colocated", gather="per_step") == (
        "the trl-gkd runtime does not gather a sharded student per step for generation")
    assert load_runtime("kd-planner").cannot_run("shard", "colocated", gather="per_step") is None
    with pytest.raises(Exception, match="sharded_gather"):
        Generation(engine="hf-eager", layer_overhead_us=0, sharded_gather=["twice"])


def test_estimate_takes_the_gather_in_the_strategy(runner, root):
    from planner.cli import app

    args = ["estimate", "-m", str(root / BIG), "-c", "dgx-a100", "--nodes", "2", "--strategy"]
    fits = runner.invoke(app, args + ["pipeline:16/zero3+per_step/colocated/1", "-f", "json"])
    assert fits.exit_code == 0, fits.output
    assert '"strategy": "pipeline:16/zero3+per_step/colocated/1"' in fits.stdout
    once = runner.invoke(app, args + ["pipeline:16/zero3/colocated/1"])
    assert once.exit_code == 3 and "student_generation" in once.output and "Traceback" not in once.output

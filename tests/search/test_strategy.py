"""The strategy grammar: one spelling that round-trips through text and plan files, and one set of
rules that every reader (search, CLI, plan files, regimes, executor) applies."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs
from pydantic import ValidationError

from planner.inputs.errors import InputError
from planner.inputs.load import load_cluster, load_job
from planner.plan import Plan
from planner.search import space
from planner.strategy import PLACEMENTS, STUDENT_SPLITS, TEACHER_SPLITS, Strategy

JOBS = ["llama70b-to-8b", "qwen32b-to-1.5b", "tiny-cpu", "qwen3-235b-a22b-to-30b-a3b"]  # the last: an MoE teacher (EP)
CLUSTERS = ["dgx-h100", "l40s-pcie", "cpu-local", "mi300x"]
BATCH = "global batch not divisible by micro-batch x student ranks"


@settings(max_examples=12, deadline=None)
@given(hs.sampled_from(JOBS), hs.sampled_from(CLUSTERS), hs.integers(1, 3))
def test_every_candidate_round_trips_through_text_and_plan(job_name, cluster_name, nodes):
    """For every candidate the search enumerates: parse(str(s)) == s, and from_plan(to_plan(s)) == s
    for those whose batch a plan can hold (a plan file checks micro-batch x accumulation)."""
    job, cl = load_job(job_name), load_cluster(cluster_name, nodes)
    cands, _ = space.enumerate_candidates(job, cl, ("once", "per_step"))  # a sharded student gathered either way
    assert len(cands) > 1
    planned = 0
    for st in cands:
        text = str(st)
        assert Strategy.parse(text, cl) == st, text
        if job.workload.global_batch % (st.b * st.n_S) == 0:
            plan = st.to_plan(job, cl, cluster_name)
            assert Strategy.from_plan(plan) == st, text
            assert Strategy.from_plan(Plan(**plan.model_dump(mode="json"))) == st, text  # through the file's fields
            planned += 1
    assert planned > 0


@hs.composite
def any_fields(draw):
    """Field values of any kind, valid or not, on a cluster of 1-4 nodes."""
    cl = load_cluster(draw(hs.sampled_from(CLUSTERS)), draw(hs.integers(1, 4)))
    W = cl.world
    placement = draw(hs.sampled_from(PLACEMENTS)) if W > 1 else "colocated"
    n_T = W if placement == "colocated" else draw(hs.integers(1, W - 1))
    n_S = W if placement == "colocated" else W - n_T
    degree = draw(hs.sampled_from(["pp", "tp", "t_sh"]))
    fields = {degree: draw(hs.integers(1, n_T + 1))}
    if draw(hs.booleans()):  # expert parallelism, valid or not
        fields["ep"] = draw(hs.integers(1, n_T + 1))
    if draw(hs.booleans()):  # sometimes a second degree: never valid
        fields[draw(hs.sampled_from(["pp", "tp", "t_sh"]))] = draw(hs.integers(1, 3))
    student = draw(hs.sampled_from(STUDENT_SPLITS))
    s_sh = draw(hs.sampled_from([n_S, *range(1, n_S + 1)]))
    return cl, dict(teacher=draw(hs.sampled_from(TEACHER_SPLITS)), student=student, placement=placement, n_T=n_T,
                    n_S=n_S, s_sh=s_sh, r_S=max(1, n_S // s_sh), b=draw(hs.integers(1, 8)), **fields)


@settings(max_examples=300, deadline=None)
@given(any_fields())
def test_a_strategy_is_refused_or_round_trips(case):
    """Whatever the fields, either the structure is refused in words or the text reads back the same."""
    cl, fields = case
    try:
        st = Strategy(**fields)
    except InputError as e:
        assert e.lines[0].startswith("strategy ") and "Traceback" not in e.lines[0]
        return
    assert Strategy.parse(str(st), cl) == st


@pytest.mark.parametrize("fields, words", [
    (dict(teacher="pipeline", pp=2, t_sh=2), "one degree, pp, but shard=2"),
    (dict(teacher="replicate", tp=2), "no degree"),
    (dict(teacher="shard", t_sh=3), "does not divide the 4 teacher GPUs"),
    (dict(teacher="shard", t_sh=2, student="hsdp", s_sh=4, r_S=2), "is not the 4 student GPUs"),
    (dict(teacher="shard", t_sh=2, student="zero2", s_sh=2, r_S=2), "only hsdp takes a shard degree"),
    (dict(teacher="swap"), "teacher split 'swap' is not one of"),
])
def test_structure_rules_name_the_problem(fields, words):
    base = dict(teacher="replicate", student="ddp", placement="colocated", n_T=4, n_S=4, s_sh=4)
    with pytest.raises(InputError, match=words):
        Strategy(**(base | fields))


def test_defaults_and_aliases_in_the_grammar():
    cl = load_cluster("dgx-h100")  # 2 nodes of 8
    assert str(Strategy.parse("shard/fsdp", cl)) == "shard:16/zero3/colocated/1"
    assert str(Strategy.parse("pipeline/hsdp/colocated/2", cl)) == "pipeline:8/hsdp:8/colocated/2"
    assert str(Strategy.parse("shard/zero3/disaggregated", cl)) == "shard:8/zero3/disaggregated:8/1"
    st = Strategy.parse("shard:2/zero3/disaggregated:8/4", cl)
    assert (st.t_sh, st.n_T, st.n_S, st.s_sh, st.b) == (2, 8, 8, 8, 4)
    assert st.links(cl) == {"T": "intra_node", "S": "intra_node", "R": "one_nic", "X": "one_nic", "E": "none", "W": "one_nic"}


def test_hybrid_is_the_old_name_of_a_replicated_pipeline():
    """`hybrid:8` on 16 GPUs was `pipeline:8` under a second name (same degrees, same cost, same
    executor path): it still parses and loads from a plan file, always as pipeline, and the search
    enumerates each pipeline degree once."""
    job, cl = load_job(), load_cluster("dgx-h100")  # 2 nodes of 8
    old, new = Strategy.parse("hybrid:8/zero3/colocated/4", cl), Strategy.parse("pipeline:8/zero3/colocated/4", cl)
    assert old == new and str(old) == "pipeline:8/zero3/colocated/4" and (old.pp, old.n_T) == (8, 16)
    data = new.to_plan(job, cl, "dgx-h100").model_dump(mode="json")
    data["teacher"]["strategy"] = "hybrid"
    assert Strategy.from_plan(Plan(**data)) == new
    cands, _ = space.enumerate_candidates(job, cl)
    pipes = [(c.pp, c.student, c.placement, c.n_T, c.b) for c in cands if c.teacher == "pipeline"]
    assert "hybrid" not in {c.teacher for c in cands} and len(pipes) == len(set(pipes))
    assert {c.pp for c in cands if c.teacher == "pipeline" and c.placement == "colocated"} == {2, 4, 8, 16}


@pytest.mark.parametrize("text, words", [
    ("pipeline:x/zero3", "'pipeline:x': the number after ':' must be a whole number"),
    ("shard:3/zero3", "'shard:3': degree 3 does not divide the 16 teacher GPUs"),
    ("replicate:2/ddp", "replicate takes no degree"),
    ("shard/zero2:4", "only hsdp takes a degree"),
    ("shard/hsdp:3", "hsdp shard degree 3 does not divide the 16 student GPUs"),
    ("shard/zero3/disaggregated:16", "between 1 and 15"),
    ("shard/zero3/colocated/b=4", "micro-batch 'b=4' must be a whole number"),
    ("shard", "is not TEACHER"),
    ("shard/zero3/colocated/1/2", "is not TEACHER"),
])
def test_bad_text_is_one_line_naming_the_flag(text, words):
    with pytest.raises(InputError) as e:
        Strategy.parse(text, load_cluster("dgx-h100"), "--between")
    assert len(e.value.lines) == 1 and e.value.lines[0].startswith(f"--between: '{text}'") and words in e.value.lines[0]


def test_expert_parallelism_in_the_grammar():
    """`+ep:N` after a teacher split: the experts over groups of N, the rest as the split says."""
    cl = load_cluster("dgx-h100")  # 2 nodes of 8
    st = Strategy.parse("shard:16+ep:8/zero3", cl)
    assert (st.t_sh, st.ep, st.teacher_degree, str(st)) == (16, 8, 16, "shard:16+ep:8/zero3/colocated/1")
    st = Strategy.parse("pipeline:2+ep:8/zero3", cl)
    assert (st.pp, st.ep, st.teacher_degree, st.links(cl)["T"], st.links(cl)["E"]) == (2, 8, 16, "inter_node", "intra_node")
    assert str(Strategy.parse("replicate+ep:4/ddp", cl)) == "replicate+ep:4/ddp/colocated/1"
    job, cl1 = load_job("qwen3-235b-a22b-to-30b-a3b"), load_cluster("dgx-a100", 2)
    plan = Strategy.parse("shard:16+ep:16/zero3", cl1).to_plan(job, cl1, "dgx-a100")
    assert (plan.teacher.ep, plan.teacher.shard, plan.teacher.group_size) == (16, 16, 16)
    assert Strategy.from_plan(Plan(**plan.model_dump(mode="json"))) == Strategy.parse("shard:16+ep:16/zero3", cl1)


@pytest.mark.parametrize("text, words", [
    ("tp:2+ep:2/zero3", "a tp teacher does not combine with expert parallelism"),
    ("shard:4+ep:8/zero3", "expert-parallel degree 8 does not divide the shard degree 4"),
    ("pipeline:4+ep:8/zero3", "group 32 does not divide the 16 teacher GPUs"),
    ("shard:16+xp:2/zero3", "after '+' only ep:DEGREE may follow"),
    ("shard:16+ep/zero3", "after '+' only ep:DEGREE may follow"),
])
def test_bad_expert_parallelism_is_one_line(text, words):
    with pytest.raises(InputError) as e:
        Strategy.parse(text, load_cluster("dgx-h100"), "--strategy")
    assert len(e.value.lines) == 1 and words in e.value.lines[0], e.value.lines


def test_a_plan_file_the_grammar_cannot_say_is_refused():
    """A plan is a strategy: a pipelined teacher that is also sharded is refused when the file is
    read, not halfway through a run."""
    job, cl = load_job("tiny-cpu"), load_cluster("cpu-local", 2)
    data = Strategy.parse("pipeline:2/ddp/colocated/1", cl).to_plan(job, cl, "cpu-local").model_dump(mode="json")
    data["teacher"]["shard"] = 2
    with pytest.raises(ValidationError, match="one degree, pp, but shard=2"):
        Plan(**data)


def test_the_rules_a_job_adds():
    job, cl = load_job(), load_cluster("dgx-h100")
    assert Strategy.parse("pipeline:16/zero3/colocated/4", cl).rejection(job) is None
    assert Strategy.parse("shard:16/zero3/colocated/3", cl).rejection(job) == BATCH
    deep = job.model_copy(update={"teacher": job.teacher.model_copy(update={"num_layers": 8})})
    assert Strategy.parse("pipeline:16/zero3/colocated/4", cl).rejection(deep) == "pipeline degree exceeds teacher layers"


def test_grammar_stands_below_plan_and_search():
    """planner/strategy.py imports neither the plan file nor the search at module level (no circle)."""
    import ast
    from pathlib import Path

    import planner.strategy as mod

    tree = ast.parse(Path(mod.__file__).read_text())
    top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    names = [n.module for n in top if isinstance(n, ast.ImportFrom)] + [a.name for n in top if isinstance(n, ast.Import) for a in n.names]
    assert not [m for m in names if m and (m.startswith("planner.plan") or m.startswith("planner.search"))], names

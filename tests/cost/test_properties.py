"""Property tests of the whole cost model (hypothesis): signs, sums, monotonicity, and that the
compiled numpy function equals the sympy expressions.

Some restate how the model is built (a total is the sum of its terms): those guard against NaN,
negative and infinite terms. The monotonicity tests are not true by construction: overlap rules,
maxima and tier choices could each make more bandwidth slower or a bigger teacher faster.
"""

import math

import numpy as np
import pytest
import sympy as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from planner.cost.bind import job_values, strategy_values
from planner.strategy import Strategy
from planner.cost.compile import evaluate
from planner.cost.model import expressions
from planner.cost.names import MEMORY_TERMS
from planner.inputs.load import bundled_names, load_cluster, load_job, load_model

JOBS = ["llama70b-to-8b", "qwen32b-to-1.5b", "tiny-cpu"]
CLUSTERS = [n for n in bundled_names("topologies")]


@st.composite
def scenario(draw):
    job = load_job(draw(st.sampled_from(JOBS)))
    cluster = load_cluster(draw(st.sampled_from(CLUSTERS)), draw(st.integers(1, 4)))
    W = cluster.world
    disagg = W > 1 and draw(st.booleans())
    n_T = draw(st.integers(1, W - 1)) if disagg else W
    n_S = W - n_T if disagg else W
    kind = draw(st.sampled_from(["replicate", "shard", "pipeline", "tp"]))
    k = draw(st.sampled_from([d for d in range(1, n_T + 1) if n_T % d == 0]))
    deg = {"replicate": {}, "shard": {"t_sh": k}, "pipeline": {"pp": k}, "tp": {"tp": k}}[kind]
    student = draw(st.sampled_from(["ddp", "zero1", "zero2", "zero3"]))
    strat = Strategy(kind, student, "disaggregated" if disagg else "colocated", n_T, n_S, s_sh=n_S,
                     b=draw(st.integers(1, 16)), **deg)
    return job, cluster, strat


def figures(job, cluster, strat, **symbols):
    """The model's figures for a strategy, with `symbols` (e.g. `t_sh=8`) overriding its numbers: the
    model is a function of numbers, and some properties ask about numbers no single strategy has."""
    return {k: float(v) for k, v in evaluate(job_values(job, cluster) | strategy_values(strat, cluster) | symbols).items()}


@settings(max_examples=150, deadline=None)
@given(scenario())
def test_terms_non_negative_and_totals_are_sums(case):
    """The sums restate the model's construction; what this catches is a NaN, negative or infinite term."""
    f = figures(*case)
    assert all(v >= 0 and math.isfinite(v) for v in f.values())
    time_terms = [v for k, v in f.items() if k.startswith("time.")]
    assert f["step_time"] == pytest.approx(sum(time_terms), rel=1e-12)
    student = sum(f[f"mem.{k}"] for k in MEMORY_TERMS if not k.startswith("teacher"))
    teacher = sum(f[f"mem.{k}"] for k in MEMORY_TERMS if k.startswith("teacher"))
    expect = max(student, teacher) if case[2].placement == "disaggregated" else student + teacher
    assert f["mem_peak"] == pytest.approx(expect, rel=1e-12)
    assert f["samples_per_s"] == pytest.approx(case[0].workload.global_batch / f["step_time"])


@settings(max_examples=60, deadline=None)
@given(scenario(), st.sampled_from([2, 4, 8]))
def test_weights_never_grow_with_degree(case, factor):
    job, cluster, strat = case
    f1 = figures(job, cluster, strat)
    for field in ("t_sh", "pp", "tp"):
        bigger = figures(job, cluster, strat, **{field: getattr(strat, field) * factor})
        assert bigger["mem.teacher_weights"] <= f1["mem.teacher_weights"]
    ddp = figures(job, cluster, strat, z_o=0, z_g=0, z_p=0)
    for switches in ((1, 0, 0), (1, 1, 0), (1, 1, 1)):  # ZeRO-1, -2, -3 over a bigger group
        f2 = figures(job, cluster, strat, **dict(zip(("z_o", "z_g", "z_p"), switches)), s_sh=strat.s_sh * factor)
        for term in ("student_weights", "student_grads", "student_optimizer"):
            assert f2[f"mem.{term}"] <= ddp[f"mem.{term}"]


def with_inter_bw(cluster, factor):
    """The cluster with every inter-node bandwidth (nominal and measured per collective) times factor."""
    tier = cluster.inter_node
    measured = {k: c.model_copy(update={"bw_gb_per_s": c.bw_gb_per_s * factor}) for k, c in tier.collectives.items()}
    return cluster.model_copy(update={"inter_node": tier.model_copy(update={"bw_gb_per_s": tier.bw_gb_per_s * factor,
                                                                            "collectives": measured})})


@settings(max_examples=100, deadline=None)
@given(scenario(), st.floats(1.0, 1000.0))
def test_more_inter_node_bandwidth_never_slows_a_plan(case, factor):
    job, cluster, strat = case
    slow, fast = figures(job, cluster, strat), figures(job, with_inter_bw(cluster, factor), strat)
    assert fast["step_time"] <= slow["step_time"] * (1 + 1e-12)
    assert fast["mem_peak"] == pytest.approx(slow["mem_peak"], rel=1e-12)  # bandwidth is not memory


# Bigger teachers of one family (same tokenizer): more layers, wider, or both.
BIGGER = [("qwen2.5-7b", "qwen2.5-14b"), ("qwen2.5-14b", "qwen2.5-32b"), ("qwen2.5-32b", "qwen2.5-72b"),
          ("llama-3.1-8b", "llama-3.1-70b"), ("llama-3.1-70b", "llama-3.1-405b"), ("gemma-2-9b", "gemma-2-27b")]


@settings(max_examples=100, deadline=None)
@given(scenario(), st.integers(1, 120), st.sampled_from(BIGGER))
def test_a_bigger_teacher_never_speeds_a_plan_or_shrinks_it(case, extra_layers, pair):
    job, cluster, strat = case
    small, big = (job.model_copy(update={"teacher": load_model(name)}) for name in pair)
    deeper = job.model_copy(update={"teacher": job.teacher.model_copy(update={"num_layers": job.teacher.num_layers + extra_layers})})
    for smaller, bigger in ((job, deeper), (small, big)):
        a, b = figures(smaller, cluster, strat), figures(bigger, cluster, strat)
        assert b["step_time"] >= a["step_time"] * (1 - 1e-12)
        assert b["mem_peak"] >= a["mem_peak"] * (1 - 1e-12)


@settings(max_examples=15, deadline=None)
@given(scenario())
def test_numpy_equals_sympy(case):
    job, cluster, strat = case
    values = job_values(job, cluster) | strategy_values(strat, cluster)
    f = figures(job, cluster, strat)
    for name in ("step_time", "mem_peak", "time.teacher_gather_exposed", "mem.student_activations", "time.generation"):
        e = expressions()[name]
        subs = {s: sp.Float(values[s.name], 30) for s in e.free_symbols}
        assert f[name] == pytest.approx(float(e.xreplace(subs)), rel=1e-9, abs=1e-12)


def test_vectorised_equals_one_by_one():
    job, cluster = load_job("llama70b-to-8b"), load_cluster("dgx-h100")
    strats = [Strategy("shard", "zero3", "colocated", 16, 16, t_sh=16, s_sh=16, b=b) for b in (1, 2, 4)]
    from planner.search.space import columns
    arr = evaluate(job_values(job, cluster) | columns(strats, cluster))
    for i, s in enumerate(strats):
        assert arr["step_time"][i] == pytest.approx(figures(job, cluster, s)["step_time"], rel=1e-12)
    assert np.all(np.diff(arr["mem_peak"]) > 0)


@pytest.mark.parametrize("k", [2, 4, 8])
def test_a_tp_teacher_holds_its_groups_rows(k):
    """A tp:k group runs its k*b rows at once on every rank (the executor all-gathers them): each
    rank holds the activations of k*b rows at full hidden width, with the MLP's inner width split k
    ways. So more than a replica at micro-batch b, less than one at k*b, and the difference to the
    latter is (k-1)/k of the MLP's part (measured here by zeroing the FFN width)."""
    job, cluster = load_job("llama70b-to-8b"), load_cluster("dgx-h100", 2)
    strat = Strategy("tp", "zero3", "colocated", 16, 16, s_sh=16, b=2, tp=k)
    act = figures(job, cluster, strat)["mem.teacher_activations"]
    one = figures(job, cluster, strat, tp=1)["mem.teacher_activations"]
    rows = figures(job, cluster, strat, tp=1, b=2 * k)["mem.teacher_activations"]
    no_mlp = figures(job, cluster, strat, tp=1, b=2 * k, f_T=0)["mem.teacher_activations"]
    assert one < act < rows
    assert rows - act == pytest.approx((k - 1) / k * (rows - no_mlp), rel=1e-9)

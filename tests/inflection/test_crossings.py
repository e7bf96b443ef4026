"""Crossings agree with the model they come from; regime maps agree with the search."""

import json
from dataclasses import replace

import numpy as np
import pytest
import yaml

from planner.cli import app
from planner.inflection import crossing, regimes, sweep
from planner.inputs.load import load_cluster, load_job, load_runtime
from planner.search import output, rank
from planner.strategy import Strategy

# The crossings are between layouts as they were before rollout engines: eager rollouts and an
# in-process teacher (with vLLM rollouts the best plan is 4x every eager TRL layout and crosses none).
_DEFAULT = load_job()
JOB = _DEFAULT.model_copy(update={"workload": _DEFAULT.workload.model_copy(update={"rollout_engine": "hf-eager", "teacher_serving": "in-process"})})
CLUSTER = load_cluster("dgx-h100")
RES = rank.search(JOB, CLUSTER)


def step(regime, var, x):
    subs = regimes._subs(regime.strategy if var.name != "micro_batch" else replace(regime.strategy, b=1), JOB, CLUSTER, var, regime.runtime)
    return float(crossing._numeric(subs, np.array([x]))["step_time"][0])


def scored_step(regime, var, x):
    """The step time by the search's own path, independent of the crossing's substitutions: the job
    or cluster rebuilt with `var` = x (whole numbers where the input must be whole), then scored."""
    job, cl = sweep.with_value(var, x, JOB, CLUSTER)
    st = replace(regime.strategy, b=int(round(x))) if var == "micro_batch" else regime.strategy
    return rank.score([st], [None], job, cl, load_runtime(regime.runtime))[0].figures["step_time"]


PAIRS = regimes.default_pairs(RES)

# Regime pairs that cross on the default job, and a variable each crosses in (chosen by looking:
# if the cost model changes so that one no longer crosses, pick another pair, do not drop the case).
CROSSING = [
    (("best", "trl-zero3"), "nodes"),  # two crossings, one without a closed form
    (("best", "trl-ddp"), "micro_batch"),
    (("trl-zero3", "tp:8/zero3/colocated/4"), "inter_bw"),  # through the multi-rail cap (a Min)
    (("trl-zero3", "tp:8/zero3/colocated/4"), "teacher_layers"),
    (("pipeline:8/zero3", "shard:16/zero3"), "inter_bw"),
    (("pipeline:8/zero3", "shard:16/zero3"), "completion_len"),
    (("trl-ddp", "pipeline:8/zero2/disaggregated:8/2"), "teacher_layers"),  # two crossings
]


@pytest.mark.parametrize("pair, var", CROSSING)
def test_every_crossing_is_a_tie_with_the_reported_winners_around_it(pair, var):
    a, b = (regimes.resolve(p, JOB, CLUSTER, RES) for p in pair)
    v = crossing.VARIABLES[var]
    found = regimes.between(a, b, v, JOB, CLUSTER)
    assert len(found) > 0
    for c in found:
        ta, tb = step(a, v, c.value), step(b, v, c.value)
        assert abs(ta - tb) / max(ta, tb) < 1e-6
        below, above = c.value * (1 - 1e-3), c.value * (1 + 1e-3)
        win_below = a.name if step(a, v, below) < step(b, v, below) else b.name
        win_above = a.name if step(a, v, above) < step(b, v, above) else b.name
        assert (win_below, win_above) == (c.winner_below, c.winner_above)
        assert c.winner_below != c.winner_above
        if c.closed is not None:  # a closed form is only ever reported when it is the root
            assert float(c.closed[1]) == pytest.approx(c.value, rel=1e-9)
        if var == "nodes":  # a node count also re-derives the strategies' groups: not rebuilt here
            continue
        # the same two sides evaluated as the search evaluates a job: at the nearest whole values
        # (or 0.1% away) on either side, the reported winner is faster
        lo, hi = (c.value * 0.999, c.value * 1.001) if not v.integer else (np.floor(c.value), np.floor(c.value) + 1)
        for x, winner in ((lo, c.winner_below), (hi, c.winner_above)):
            sa, sb = scored_step(a, var, x), scored_step(b, var, x)
            assert (a.name if sa < sb else b.name) == winner, (x, sa, sb)


def test_some_crossing_has_a_closed_form():
    """On the default job, a teacher-depth crossing is solved exactly by sympy (the active branch of
    every Max is linear in the layer count there)."""
    a, b = (regimes.resolve(p, JOB, CLUSTER, RES) for p in ("trl-zero3", "tp:8/zero3/colocated/4"))
    closed = [c for c in regimes.between(a, b, crossing.VARIABLES["teacher_layers"], JOB, CLUSTER) if c.closed is not None]
    assert closed and "x" in crossing.describe(closed[0])


def test_memory_boundary_of_a_replicated_teacher():
    a = regimes.resolve("replicate/zero3/colocated/1", JOB, CLUSTER, RES)
    (c,) = regimes.memory_boundary(a, crossing.VARIABLES["teacher_layers"], JOB, CLUSTER)
    subs = regimes._subs(a.strategy, JOB, CLUSTER, crossing.VARIABLES["teacher_layers"])
    mem = float(crossing._numeric(subs, np.array([c.value]))["mem_peak"][0])
    assert mem == pytest.approx(rank.Reserve().limit(CLUSTER), rel=1e-6)  # where the search stops accepting it
    assert c.value < JOB.teacher.num_layers  # which is why the default cannot replicate the 70B teacher


def test_regime_names_read_back_as_their_strategies():
    """A regime's printed name is the strategy grammar (`best (...)` wraps it): pasting it back into
    `--between` gives the same strategy (the old `.../b=4` labels could not be read back)."""
    names = {p for pair in PAIRS for p in pair} | {"trl-zero3", "trl-ddp"}
    assert len(names) > 3
    for text in names:
        r = regimes.resolve(text, JOB, CLUSTER, RES)
        inner = r.name[len("best ("):-1] if r.name.startswith("best (") else str(r.strategy)
        assert regimes.resolve(inner, JOB, CLUSTER, RES).strategy == r.strategy
        assert Strategy.parse(output.split(inner, "--between")[0], CLUSTER) == r.strategy


def test_regime_map_agrees_with_search_point_by_point():
    xs, ys = np.array([10.0, 50.0, 400.0]), np.array([40.0, 80.0])
    m = sweep.sweep(JOB, CLUSTER, "inter_bw", xs, "teacher_layers", ys)
    for yi, y in enumerate(ys):
        for xi, x in enumerate(xs):
            j, c = sweep.with_value("inter_bw", x, *sweep.with_value("teacher_layers", y, JOB, CLUSTER))
            res = rank.search(j, c)
            assert m.best[yi][xi].strategy == res.ranked[0].strategy
            assert m.labels[yi][xi] == sweep.regime_label(res.ranked[0], c)
            # the shading: the fastest plan of any other regime, found here by sorting on its own
            others = sorted(sc.figures["step_time"] for sc in res.ranked if sweep.regime_label(sc, c) != m.labels[yi][xi])
            want = others[0] / res.ranked[0].figures["step_time"] - 1 if others else np.inf
            assert m.margins[yi][xi] == pytest.approx(want, rel=1e-12)
    assert any(0 < m.margins[yi][xi] < np.inf for yi in range(len(ys)) for xi in range(len(xs)))
    assert m.job_margin == pytest.approx(sweep.margin(RES, CLUSTER)) and m.fragile == (m.job_margin < sweep.FRAGILE)


def test_a_job_near_a_boundary_is_marked_fragile():
    """On the default job the split changes with the teacher depth (trl-zero3 vs tp:8 cross): a
    teacher of the crossing's depth sits on a boundary, one far from it does not."""
    a, b = (regimes.resolve(p, JOB, CLUSTER, RES) for p in ("trl-zero3", "tp:8/zero3/colocated/4"))
    at = min(regimes.between(a, b, crossing.VARIABLES["teacher_layers"], JOB, CLUSTER), key=lambda c: c.value).value
    near = sweep.with_value("teacher_layers", round(at), JOB, CLUSTER)
    assert sweep.margin(rank.search(*near), CLUSTER) < sweep.FRAGILE
    m = sweep.sweep(JOB, CLUSTER, "inter_bw", np.array([50.0]), "teacher_layers", np.array([float(round(at))]))
    assert m.margins[0][0] < sweep.FRAGILE


def test_inflection_cli_explains_the_default(runner):
    r = runner.invoke(app, ["inflection", "--in", "micro_batch", "--in", "nodes", "-f", "json"])
    assert r.exit_code == 0, r.stderr
    rows = json.loads(r.stdout)["crossings"]
    found = [x for x in rows if x["value"] is not None and x["between"][0].startswith("best")]
    assert found
    for x in found:
        assert {"expression", "latex", "variable", "value", "job_value", "winner_below", "winner_above"} <= set(x)
    r = runner.invoke(app, ["inflection", "--between", "best", "--between", "trl-zero3", "--in", "nodes"])
    assert r.exit_code == 0 and "trl-gkd-zero3" in r.stdout  # the name before issue 17 still resolves
    r = runner.invoke(app, ["inflection", "--in", "colour"])
    assert r.exit_code == 1 and "--in: 'colour'" in r.stderr


def test_sweep_cli_writes_csv_and_map(runner, tmp_path):
    csv_path, png = tmp_path / "m.csv", tmp_path / "m.png"
    pytest.importorskip("matplotlib")
    r = runner.invoke(app, ["sweep", "--points", "3", "--csv", str(csv_path), "--plot", str(png)])
    assert r.exit_code == 0, r.stderr
    assert csv_path.read_text().count("\n") == 10 and png.stat().st_size > 1000
    r = runner.invoke(app, ["sweep", "--points", "3", "--csv", str(csv_path), "--plot", str(png)])
    assert r.exit_code == 1 and "--force" in r.stderr


@pytest.mark.parametrize("pair, var", [(p, v) for p, v in CROSSING if crossing.VARIABLES[v].integer])
def test_a_whole_number_crossing_names_the_values_either_side_and_both_figures(pair, var):
    a, b = (regimes.resolve(p, JOB, CLUSTER, RES) for p in pair)
    v = crossing.VARIABLES[var]
    found = regimes.between(a, b, v, JOB, CLUSTER)
    assert found
    for c in found:
        (n0, a0, b0), (n1, a1, b1) = c.whole
        assert n1 == n0 + 1 and n0 <= c.value < n1
        assert (a0, b0, a1, b1) == pytest.approx((step(a, v, n0), step(b, v, n0), step(a, v, n1), step(b, v, n1)), rel=1e-9)
        if c.changes:  # the winner at each whole value is the one reported for its side
            assert ((a.name if a0 < b0 else b.name), (a.name if a1 < b1 else b.name)) == (c.winner_below, c.winner_above)


def test_the_statements_of_one_run_agree_on_the_winner_at_the_job(runner, tmp_path):
    """Two node-count crossings: each statement names the same winner at the job's 2 nodes, and it
    is the faster side there."""
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(JOB.model_dump(mode="json", exclude={"teacher_ref", "student_ref"}) | {"teacher": JOB.teacher_ref, "student": JOB.student_ref}))
    r = runner.invoke(app, ["inflection", "-m", str(tmp_path / "job.yaml"), "--between", "best", "--between", "trl-zero3", "--in", "nodes", "-f", "json"])
    assert r.exit_code == 0, r.output
    rows = [row for row in json.loads(r.stdout)["crossings"] if row["value"] is not None]
    assert len(rows) >= 2 and all(row["whole"] for row in rows)
    here = {t.split(": ", 1)[1].split(" wins here")[0] for t in (row["text"] for row in rows) if " wins here" in t}
    a, b = (regimes.resolve(p, JOB, CLUSTER, RES) for p in ("best", "trl-zero3"))
    v = crossing.VARIABLES["nodes"]
    assert here == {a.name if step(a, v, 2) < step(b, v, 2) else b.name}


def test_a_strategy_whose_engine_the_runtime_lacks_is_one_line(runner):
    """inflection costs a strategy's own rollout engine: one the runtime cannot run is refused, not a traceback."""
    r = runner.invoke(app, ["inflection", "--between", "shard:16/zero3/colocated/2+hf-static", "--between", "best", "--in", "nodes"])
    assert r.exit_code == 1 and "no hf-static rollout engine" in r.stderr and "Traceback" not in r.stderr

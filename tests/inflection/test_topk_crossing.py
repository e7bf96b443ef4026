"""`planner inflection` answers where top-k overtakes full logits (issue 17): the crossing in the
vocabulary size, checked on either side by scoring the two plans on jobs with that vocabulary
(`sweep.with_value` and `rank.score`: the search's own path, not the crossing's)."""

import json

import pytest

from planner.cli import app
from planner.inflection import crossing, regimes
from planner.inflection.sweep import with_value
from planner.inputs.load import load_cluster, load_job, load_runtime
from planner.search import output as outputs
from planner.search import rank
from planner.strategy import Strategy

JOB, CLUSTER = load_job(), load_cluster("dgx-h100")
LAYOUT = "shard:8/zero3/disaggregated:8/2"


def step(vocab: float, output: str) -> float:
    j, cl = with_value("vocab", vocab, JOB, CLUSTER)
    st = Strategy.parse(LAYOUT, cl)
    return rank.score([st], [None], outputs.with_output(j, output), cl, load_runtime("kd-planner"))[0].figures["step_time"]


def test_topk_overtakes_full_logits_above_a_vocabulary_size():
    res = rank.search(JOB, CLUSTER)
    a, b = (regimes.resolve(LAYOUT + suffix, JOB, CLUSTER, res) for suffix in ("+topk", "+logits"))
    assert (a.output, b.output) == ("topk", "logits")
    found = regimes.between(a, b, crossing.VARIABLES["vocab"], JOB, CLUSTER)
    assert len(found) == 1
    c = found[0]
    # full logits win below (a k-wide loss plus the dense gradient outweighs a tiny vocabulary), top-k above
    assert (c.winner_below, c.winner_above) == (b.name, a.name)
    x = c.value
    assert JOB.teacher.vocab > x  # the job's 128k vocabulary is far on top-k's side
    below, above = int(x * 0.8), int(x * 1.25) + 1
    assert step(below, "logits") < step(below, "topk")
    assert step(above, "topk") < step(above, "logits")
    assert c.closed is not None  # a closed form exists on this branch


def test_inflection_cli_names_the_outputs(runner):
    r = runner.invoke(app, ["inflection", "--between", LAYOUT + "+topk", "--between", LAYOUT, "--in", "vocab", "-f", "json"])
    assert r.exit_code == 0, r.stderr
    rows = json.loads(r.stdout)["crossings"]
    assert rows[0]["between"] == [LAYOUT + "+topk", LAYOUT] and rows[0]["value"] > 0
    assert rows[0]["winner_above"] == LAYOUT + "+topk" and rows[0]["job_value"] == JOB.teacher.vocab
    r = runner.invoke(app, ["inflection", "--between", LAYOUT + "+cached", "--between", LAYOUT, "--in", "vocab"])
    assert r.exit_code == 1 and "lmbda" in r.stderr  # a cache needs fixed completions
    r = runner.invoke(app, ["inflection", "--between", LAYOUT + "+top", "--between", LAYOUT, "--in", "vocab"])
    assert r.exit_code == 1 and "must be one of logits, topk, cached" in r.stderr

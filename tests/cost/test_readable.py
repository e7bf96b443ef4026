"""`planner estimate --symbolic`: named sub-expressions that give back each expression exactly."""

import json
import random
import re

import pytest

from planner.cli import app
from planner.cost.compile import compiled, evaluate
from planner.cost.readable import readable

FUNCTIONS = {"Max", "Min", "Piecewise", "True", "False"}


def test_names_substituted_back_give_each_expression():
    """Every expression computed through its printed names equals the compiled model's (an
    independent path: lambdify's own cse) at random points, switches and sizes alike drawn from
    (0.5, 3): a wrong or missing definition changes the value."""
    r = readable()
    arg_names, out_names, _ = compiled()
    assert list(r.terms) == out_names
    rng = random.Random(15)
    for _ in range(3):
        values = {a: rng.uniform(0.5, 3.0) for a in arg_names}
        want = {k: float(v) for k, v in evaluate(values).items()}
        got = r.evaluate(values)
        for k in out_names:
            assert got[k] == pytest.approx(want[k], rel=1e-9, abs=1e-12), k


def test_symbolic_output_is_short_and_every_symbol_is_in_the_legend(runner):
    r = runner.invoke(app, ["estimate", "--symbolic"])
    assert r.exit_code == 0, r.output
    body, legend = r.stdout.split("\nLegend:\n")
    # expanded, the expressions printed as 223,854 characters (2026-11-28, before they were named);
    # named, about 7,000 and a legend of about 14,000 then, 10,400 and 19,700 on 2026-12-08 (the
    # roles' and engines' terms, one legend line per symbol): the bound catches an expansion
    assert len(body) < 15_000 and len(legend) < 25_000, (len(body), len(legend))
    names = {line.split()[0] for line in legend.splitlines() if line.strip()}
    defined = {m.group(1) for m in re.finditer(r"^\s*(?:where\s+)?([\w.]+) = ", body, re.M)}
    used = {w for line in body.splitlines() if " = " in line
            for w in re.findall(r"[A-Za-z_][\w.]*", line.split(" = ", 1)[1])} - FUNCTIONS
    assert used - names - defined == set()  # every name is explained or defined
    assert {"B", "P_S", "x1"} <= names and "step_time" in defined


def test_one_term_brings_what_it_uses(runner):
    r = runner.invoke(app, ["estimate", "--symbolic", "--term", "time.teacher_transfer", "-f", "json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert list(d["expressions"]) == ["time.teacher_transfer"]
    assert "bw_p2p_X" in d["legend"] and "P_T" not in d["legend"]  # only what this term uses
    r = runner.invoke(app, ["estimate", "--symbolic", "--term", "time.teacher_transfr"])
    assert r.exit_code == 1 and "did you mean time.teacher_transfer" in r.stderr

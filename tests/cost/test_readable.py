"""`planner estimate --symbolic`: named sub-expressions that give back each expression exactly."""

import json
import random
import re

import sympy as sp

from planner.cli import app
from planner.cost.model import expressions
from planner.cost.readable import readable

FUNCTIONS = {"Max", "Min", "Piecewise", "True", "False"}


def _value(expr: sp.Expr, values: dict[str, float]) -> float:
    return float(expr.xreplace({s: values[s.name] for s in expr.free_symbols}))


def test_names_substituted_back_give_each_expression():
    """Every expression, rebuilt from its names, equals the model's at random points (switches and
    sizes alike drawn from (0.5, 3): a wrong or missing definition changes the value)."""
    exprs, r = expressions(), readable()
    assert list(r.terms) == list(exprs)
    rng = random.Random(15)
    for name, original in exprs.items():
        rebuilt = r.expanded(name)
        assert {s.name for s in rebuilt.free_symbols} <= {s.name for s in original.free_symbols}, name
        for _ in range(3):
            values = {s.name: rng.uniform(0.5, 3.0) for s in original.free_symbols}
            want, got = _value(original, values), _value(rebuilt, values)
            assert abs(got - want) <= 1e-9 * max(1.0, abs(want)), (name, want, got)


def test_symbolic_output_is_short_and_every_symbol_is_in_the_legend(runner):
    r = runner.invoke(app, ["estimate", "--symbolic"])
    assert r.exit_code == 0, r.output
    expanded = sum(len(f"{k} = {sp.sstr(v)}\n") for k, v in expressions().items())
    assert len(r.stdout) < expanded / 10, (len(r.stdout), expanded)  # about 200 KB expanded
    body, legend = r.stdout.split("\nLegend:\n")
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

"""`planner estimate --symbolic`: the cost model's expressions, named and with a legend."""

from __future__ import annotations

import difflib

from planner.cli.common import Format, emit
from planner.inputs.errors import InputError


def select(r, names: list[str]):
    """The expressions `names` and every expression and sub-expression they use, in the model's order."""
    from planner.cost.readable import Readable

    for n in names:
        if n not in r.terms:
            close = difflib.get_close_matches(n, list(r.terms), n=3)
            hint = f"did you mean {' or '.join(close)}? " if close else ""
            raise InputError(f"--term: no expression {n!r} in the cost model; {hint}"
                             "`planner estimate --symbolic` lists them all")
    want, todo = set(), list(names)
    defs = dict(r.shared) | {s: e for local, _ in r.terms.values() for s, e in local.items()}
    while todo:
        n = todo.pop()
        if n in want:
            continue
        want.add(n)
        exprs = [r.terms[n][1], *r.terms[n][0].values()] if n in r.terms else [defs[n]]
        todo.extend(f.name for e in exprs for f in e.free_symbols if f.name in defs or f.name in r.terms)
    shared = {k: v for k, v in r.shared.items() if k in want}
    terms = {k: v for k, v in r.terms.items() if k in want}
    printed = [*shared.values(), *(e for local, body in terms.values() for e in [*local.values(), body])]
    used = {f.name for e in printed for f in e.free_symbols}
    return Readable(shared, terms, {k: v for k, v in r.legend.items() if k in used})


def print_symbolic(latex: bool, fmt: Format, names: list[str]) -> None:
    """Every expression (or those named and what they use) with its named sub-expressions and the
    legend of the symbols printed; LaTeX with `latex`."""
    import sympy as sp

    from planner.cost.readable import readable

    r = readable()
    if names:
        r = select(r, names)
    show = sp.latex if latex else sp.sstr
    name = (lambda k: sp.latex(sp.Symbol(k))) if latex else str
    if fmt != Format.table:
        emit({"shared": {k: show(v) for k, v in r.shared.items()},
              "expressions": {k: {"expr": show(body), "where": {s: show(e) for s, e in local.items()}}
                              for k, (local, body) in r.terms.items()},
              "legend": r.legend}, fmt)
        return
    print(f"{len(r.terms)} expressions of the cost model (planner/cost). A sub-expression that repeats is named "
          "once: the model's building blocks by their names (P_S, ga, seq, ...), the others x1, x2, ... "
          "(sympy.cse); substituting the names back gives each expression exactly. Legend at the end.")
    if r.shared:
        print("\nUsed by several expressions:")
        for k, v in r.shared.items():
            print(f"  {name(k)} = {show(v)}")
    print("\nExpressions:")
    for k, (local, body) in r.terms.items():
        print(f"{name(k)} = {show(body)}")
        for i, (s, e) in enumerate(local.items()):
            print(f"  {'where' if i == 0 else '     '} {name(s)} = {show(e)}")
    print("\nLegend:")
    width = max(map(len, r.legend), default=0)
    for k, v in r.legend.items():
        print(f"  {k:<{width}}  {v}")

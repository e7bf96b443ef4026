"""The cost model's expressions in a form a reader can follow: named sub-expressions and a legend.

Expanded, the model's terms print as about 200 KB of algebra, because the same building blocks
(a model's parameter count, one decode step, micro-steps per step) are repeated inside every term
that uses them. Here they are named once instead:

- building blocks of the cost model (`BLOCKS`: parameter counts, micro-steps per step, tokens)
  under their own names;
- the totals (`step_time`, `mem_peak`, ...) over the terms' names, as `model.totals` sums them;
- every other repeated sub-expression found by `sympy.cse`, named x1, x2, ...; the trivial ones
  (`t_sh - 1`, `B/b`) are put back where they were, they read better in place.

Nothing is simplified or rewritten: substituting the definitions back gives each term exactly
(tests/cost/test_readable.py checks that numerically). No formula is defined here.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import sympy as sp

from planner.cost import params, timeline
from planner.cost import symbols as y
from planner.cost.model import expressions, totals

# name: (the cost model's expression, what it is)
BLOCKS = {
    "P_T": (params.total_params(y.T), "teacher parameters, every expert (params.total_params)"),
    "P_S": (params.total_params(y.S), "student parameters, every expert (params.total_params)"),
    "M_T": (params.matmul_params(y.T), "teacher matmul weights a token uses (params.matmul_params)"),
    "M_S": (params.matmul_params(y.S), "student matmul weights a token uses (params.matmul_params)"),
    "ga": (timeline.ga, "micro-steps per optimizer step on a student rank"),
    "ga_T": (timeline.ga_T, "teacher micro-batches per step per teacher rank (disaggregated)"),
    "seq": (timeline.seq, "tokens per sample"),
    "head_tok": (timeline.head_tokens, "positions per sample that the LM heads and the loss cover"),
}
TRIVIAL_OPS = 2  # a repeated sub-expression of at most this many operations is put back in place


@dataclass(frozen=True)
class Readable:
    """`shared`: sub-expressions used by several terms, in definition order; `terms`: per term its
    own sub-expressions (used by it alone) and its expression over them; `legend`: every symbol
    and sub-expression name printed, with its meaning."""

    shared: dict[str, sp.Expr]
    terms: dict[str, tuple[dict[str, sp.Expr], sp.Expr]]
    legend: dict[str, str]

    def evaluate(self, values: dict[str, float]) -> dict[str, float]:
        """Every expression's number for `values` (symbol name -> number), computed through the
        names as printed: each definition once, in terms of the ones it uses."""
        defs = dict(self.shared)
        for k, (local, body) in self.terms.items():
            defs |= local | {k: body}
        known: dict[str, float] = dict(values)

        def value(name: str) -> float:
            if name not in known:
                e = defs[name]
                known[name] = float(e.xreplace({f: value(f.name) for f in e.free_symbols}))
            return known[name]

        return {k: value(k) for k in self.terms}


@lru_cache(maxsize=1)
def readable() -> Readable:
    """The whole model, named: see the module docstring."""
    exprs = expressions()
    by_kind = ({k.split(".", 1)[1]: sp.Symbol(k) for k in exprs if k.startswith(kind)} for kind in ("mem.", "time."))
    composed = totals(*by_kind)
    terms = {k: v for k, v in exprs.items() if k not in composed}
    blocks = list(BLOCKS)
    subs, reduced = sp.cse([BLOCKS[k][0] for k in blocks] + list(terms.values()),
                           symbols=sp.numbered_symbols("_x"), order="none")
    defs = dict(subs)
    names: dict[sp.Symbol, str] = {}
    for k, r in zip(blocks, reduced):
        if isinstance(r, sp.Symbol) and r in defs and r not in names:
            names[r] = k
    reduced = dict(zip(terms, reduced[len(blocks):]))
    for k, r in reduced.items():  # a term that is one repeated sub-expression (generation.decode_step) names it
        if isinstance(r, sp.Symbol) and r in defs and r not in names:
            names[r] = k
    # put the trivial sub-expressions back in place, in order (a later one may use an earlier one)
    inline: dict[sp.Symbol, sp.Expr] = {}
    for x, d in subs:
        d = d.xreplace(inline)
        if x not in names and sp.count_ops(d) <= TRIVIAL_OPS:
            inline[x] = d
        defs[x] = d
    kept = [x for x, _ in subs if x not in inline]
    n = 0
    for x in kept:
        if x not in names:
            n += 1
            names[x] = f"x{n}"
    rename = {x: sp.Symbol(names[x]) for x in kept}
    final = {names[x]: defs[x].xreplace(rename) for x in kept}
    bodies = {k: r.xreplace(inline).xreplace(rename) for k, r in reduced.items()}
    owners: dict[str, set[str]] = {s: set() for s in final}
    for k, body in bodies.items():
        for s in _closure(body, final):
            owners[s].add(k)
    for k, body in bodies.items():  # a term named after its own sub-expression: the definition is the term
        if body == sp.Symbol(k):
            bodies[k] = final.pop(k)
    shared = {s: e for s, e in final.items() if len(owners[s]) != 1}
    per_term = {k: ({s: e for s, e in final.items() if owners[s] == {k}}, body) for k, body in bodies.items()}
    per_term |= {k: ({}, v) for k, v in composed.items()}
    per_term = {k: per_term[k] for k in exprs}  # the model's own order
    return Readable(shared, per_term, _legend(shared, per_term))


def _closure(expr: sp.Expr, final: dict[str, sp.Expr]) -> set[str]:
    """The sub-expressions `expr` uses, directly or through others."""
    todo = [f.name for f in expr.free_symbols if f.name in final]
    seen: set[str] = set()
    while todo:
        s = todo.pop()
        if s not in seen:
            seen.add(s)
            todo.extend(f.name for f in final[s].free_symbols if f.name in final)
    return seen


def _legend(shared: dict[str, sp.Expr], per_term: dict[str, tuple[dict[str, sp.Expr], sp.Expr]]) -> dict[str, str]:
    """Every symbol that appears in what is printed, with its meaning."""
    named = set(shared) | {s for local, _ in per_term.values() for s in local} | set(per_term)
    used: set[str] = set()
    for e in list(shared.values()) + [e for local, body in per_term.values() for e in [*local.values(), body]]:
        used |= {f.name for f in e.free_symbols}
    legend = {}
    for s in sorted(used, key=str.lower):
        if s in BLOCKS:
            legend[s] = BLOCKS[s][1]
        elif s in per_term:
            legend[s] = "the term of that name (above)"
        elif s in named:
            legend[s] = "a repeated sub-expression (defined above)"
        else:
            legend[s] = y.DESCRIPTIONS[s]
    return legend

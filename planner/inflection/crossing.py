"""Inflection points: where two regimes' step times cross, in closed form when one exists.

Method. Every symbol is bound to its number except the free variable `x`; the regimes differ
only in their strategy values. The numeric root comes first (scan, then bisection, on the
compiled model). Then each `Max(...)` is replaced by the branch active at that root, which
leaves a smooth equation that sympy solves; a closed-form root is reported only when it equals
the numeric root (relative 1e-9). Otherwise the numeric root is reported with its bracket.
The same machinery gives memory boundaries (peak memory = usable memory).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import sympy as sp

from planner.cost.compile import evaluate, one_variable
from planner.cost.model import expressions
from planner.cost.names import COLLECTIVE_SHORT
from planner.inputs.cluster import COLLECTIVES

X = sp.Symbol("x", positive=True)


@dataclass(frozen=True)
class Variable:
    """A free variable: how it enters the cost model and its search range."""

    name: str
    unit: str
    lo: float
    hi: float
    integer: bool
    describe: str


VARIABLES = {
    "inter_bw": Variable("inter_bw", "GB/s per NIC", 1.0, 5000.0, False, "inter-node bandwidth"),
    "micro_batch": Variable("micro_batch", "samples", 1.0, 4096.0, True, "micro-batch per rank"),
    "completion_len": Variable("completion_len", "tokens", 8.0, 262144.0, True, "completion length"),
    "teacher_layers": Variable("teacher_layers", "layers", 1.0, 2000.0, True, "teacher depth (size)"),
    "nodes": Variable("nodes", "nodes", 1.0, 4096.0, True, "node count"),
    "vocab": Variable("vocab", "tokens", 8.0, 4194304.0, True, "vocabulary size (teacher and student)"),
}


def substitutions(var: Variable, values: dict[str, float], inter: dict[str, bool], cluster) -> dict[str, object]:
    """Symbol-name -> number or expression in X, for one regime's values."""
    v: dict[str, object] = dict(values)
    if var.name == "inter_bw":
        scale = X / cluster.inter_node.bw_gb_per_s  # every collective on an inter-node group scales with the link
        for name in list(v):
            _, short, group = name.split("_") if name.startswith("bw_") else ("", "", "")
            if not inter.get(group, False):
                continue
            if group in ("T", "S"):  # node-spanning groups: every rail, up to the intra-node rate
                v[name] = cluster.spanning_fit(COLLECTIVES[COLLECTIVE_SHORT.index(short)], scale, sp.Min)[0]
            else:  # one NIC per GPU (HSDP replicas, teacher-to-student sends)
                v[name] = v[name] * scale
    elif var.name == "micro_batch":
        v["b"] = X
    elif var.name == "completion_len":
        v["s_c"] = X
    elif var.name == "teacher_layers":
        v["L_T"] = X
    elif var.name == "vocab":  # distillation needs one vocabulary: both models' change together
        v["V_T"] = v["V_S"] = X
    elif var.name == "nodes":
        world, G = cluster.world, cluster.gpus_per_node
        rest = world - values["n_T"]  # a disaggregated student owns every GPU the teacher does not
        for k in ("n_S", "n_T", "t_sh", "s_sh", "r_S"):
            if v[k] == world and world > 1:
                v[k] = X * G
            elif values["D"] and k in ("n_S", "s_sh") and v[k] == rest:
                v[k] = X * G - values["n_T"]
        if v.get("r_S") == cluster.nodes and cluster.nodes > 1:
            v["r_S"] = X
    return v


def _numeric(subs: dict[str, object], x: np.ndarray) -> dict[str, np.ndarray]:
    vals = {}
    for k, e in subs.items():
        vals[k] = one_variable(e, X)(x) if isinstance(e, sp.Expr) and e.free_symbols else float(e)
    return {k: np.broadcast_to(r, np.shape(x)) for k, r in evaluate(vals).items()}


def _bound(expr_name: str, subs: dict[str, object]) -> sp.Expr:
    """An output expression with every symbol replaced by its number or by an expression in X."""
    e = expressions()[expr_name]
    return e.xreplace({s: (subs[s.name] if isinstance(subs[s.name], sp.Expr) else sp.Float(subs[s.name], 30)) for s in e.free_symbols})


def _roots(f, var: Variable) -> list[tuple[float, float, float]]:
    """Sign changes of f on a log grid, refined by bisection: (root, lo, hi)."""
    grid = np.geomspace(var.lo, var.hi, 4000)
    g = f(grid)
    out = []
    for i in np.nonzero(np.sign(g[:-1]) * np.sign(g[1:]) < 0)[0]:
        lo, hi = grid[i], grid[i + 1]
        flo = g[i]
        for _ in range(200):
            mid = 0.5 * (lo + hi)
            fm = f(np.array([mid]))[0]
            if np.sign(fm) == np.sign(flo):
                lo, flo = mid, fm
            else:
                hi = mid
            if hi - lo <= 1e-13 * hi:
                break
        out.append((0.5 * (lo + hi), grid[i], grid[i + 1]))
    return out


def _active(e: sp.Expr, x0: float) -> sp.Expr:
    """Replace each Max by its argument that is largest at x = x0 (innermost first)."""
    def pick(*args):
        vals = [float(a.subs(X, x0)) if a.free_symbols else float(a) for a in args]
        return args[int(np.argmax(vals))]
    return e.replace(lambda n: isinstance(n, sp.Max), lambda n: pick(*n.args))


def closed_form(diff: sp.Expr, x0: float) -> tuple[sp.Expr, sp.Expr] | None:
    """(equation, root) for the smooth branch of `diff` around x0: the equation is the step-time
    difference on that branch (= 0), the root a sympy expression equal to x0; None when sympy cannot
    solve it or its roots miss x0."""
    branch = _active(diff, x0)
    smooth = sp.together(branch)
    num = sp.expand(sp.fraction(smooth)[0])
    if not num.has(X):
        return None
    try:
        sols = sp.solve(sp.Eq(num, 0), X)
    except (NotImplementedError, ValueError, TypeError):
        return None
    for s in sols:
        val = complex(sp.N(s, 30))
        if abs(val.imag) < 1e-9 * max(1.0, abs(val.real)) and abs(val.real - x0) <= 1e-9 * abs(x0):
            return sp.collect(sp.expand(branch), X), s
    return None


@dataclass
class Crossing:
    variable: Variable
    value: float
    bracket: tuple[float, float]
    closed: tuple[sp.Expr, sp.Expr] | None  # (equation = 0 in x, root), or None: numeric root only
    winner_below: str
    winner_above: str
    # A whole-number variable: the last whole value below the crossing and the first one above it,
    # each with (A's figure, B's figure or the limit); the winner changes between them unless both
    # lie on one side of a pair of crossings closer together than 1 (then `changes` is False).
    whole: tuple[tuple[int, float, float], tuple[int, float, float]] | None = None

    @property
    def changes(self) -> bool:
        """Whether the winner at the whole values either side differs (always, for a real variable)."""
        if self.whole is None:
            return True
        (_, a0, b0), (_, a1, b1) = self.whole
        return (a0 < b0) != (a1 < b1)


def crossings(name_a: str, subs_a: dict, name_b: str, subs_b: dict, var: Variable, what: str = "step_time",
              limit: float | None = None) -> list[Crossing]:
    """Where `what` of regime A equals that of regime B (or, with `limit`, where A's `what` = limit)."""
    def f(x):
        a = _numeric(subs_a, x)[what]
        b = np.full_like(a, limit) if limit is not None else _numeric(subs_b, x)[what]
        return np.asarray(a - b, dtype=float)

    out = []
    for x0, lo, hi in _roots(f, var):
        ea = _bound(what, subs_a)
        eb = sp.Float(limit, 30) if limit is not None else _bound(what, subs_b)
        closed = closed_form(ea - eb, x0)
        below = f(np.array([x0 * (1 - 1e-4)]))[0]
        # step time: the regime with the smaller time wins; memory: A fits below the limit
        a_wins_below = below < 0
        wb, wa = (name_a, name_b) if a_wins_below else (name_b, name_a)
        whole = None
        if var.integer:
            n1 = max(int(np.floor(x0)) + 1, int(var.lo) + 1)
            xs = np.array([n1 - 1, n1], dtype=float)
            fa = _numeric(subs_a, xs)[what]
            fb = np.full_like(fa, limit) if limit is not None else _numeric(subs_b, xs)[what]
            whole = tuple((int(x), float(p), float(q)) for x, p, q in zip(xs, fa, fb))
            if not np.all(np.isfinite(np.concatenate([fa, fb]))):  # a layout that does not exist at one of the whole
                continue  # values (e.g. a teacher on 8 GPUs of its own at 1 node of 8): no winner changes there
        out.append(Crossing(var, float(x0), (float(lo), float(hi)), closed, wb, wa, whole))
    return out


def describe(c: Crossing, latex: bool = False) -> str:
    """The crossing as `equation = 0` in x (4 significant digits), or why there is none."""
    if c.closed is None:
        return f"no closed form: numeric root in [{c.bracket[0]:.6g}, {c.bracket[1]:.6g}]"
    eq = sp.N(c.closed[0], 4)
    return f"{sp.latex(eq)} = 0" if latex else f"{sp.sstr(eq)} = 0"

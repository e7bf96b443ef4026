"""One generic fitter: a knob is what the measurement leaves once the model has spoken.

A timed operation is a `Case`: the numbers of every cost-model symbol for the layout that ran,
which outputs of the compiled model (`planner.cost.compile`) stand for what was timed, and the
seconds measured. `fit` finds the knob values (framework overheads, a compute rate) that make the
compiled model's prediction meet the measurements: it starts from every fitted knob at zero, so the
residual it fits is "measured minus the model's prediction with that knob at zero", and it only
ever evaluates the compiled model. No formula is restated here, so an edit of a formula in
`planner/cost` changes what the knob absorbs, never silently mis-calibrates it.

Least squares on relative residuals (small operations count as much as large ones), Gauss-Newton
through finite differences (the model is piecewise linear in most knobs: `Max` switches branches),
each step solved exactly under "no knob is negative" by trying every subset of free knobs (there
are at most three per fit). `bisect` solves one knob on one figure (bench/references_fit.py).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from planner.cost.compile import evaluate

BIG = 1e300  # an "inverse" knob at zero: a rate of 1/0, without inf * 0 = nan


@dataclass
class Case:
    """One timed operation: the model's inputs, the outputs that stand for it, the seconds measured."""

    values: dict[str, float]
    outputs: tuple[str, ...]
    measured: float
    label: str = ""
    per: float = 1.0  # the outputs' sum is for `per` operations (e.g. a step of two forwards): divide by it
    meta: dict = field(default_factory=dict)


def _knob_values(names: list[str], x: np.ndarray, inverse: frozenset[str]) -> dict[str, np.ndarray]:
    """Symbol values for parameters `x` (one row per evaluation): an inverse knob's parameter is
    1/value (seconds per FLOP for a FLOP rate), so that zero means "costs nothing"."""
    out = {}
    for j, n in enumerate(names):
        col = x[:, j]
        out[n] = np.where(col > 0, 1 / np.maximum(col, 1 / BIG), BIG) if n in inverse else col
    return out


def predict_many(cases: list[Case], names: list[str], xs: np.ndarray, inverse=frozenset()) -> np.ndarray:
    """Predictions [len(xs), len(cases)] of every case at every parameter row of `xs`, in one call
    of the compiled model."""
    xs = np.atleast_2d(np.asarray(xs, dtype=float))
    n, m = len(xs), len(cases)
    keys = set().union(*(c.values for c in cases))
    values = {k: np.tile(np.array([float(c.values[k]) for c in cases]), n) for k in keys}
    values |= {k: np.repeat(v, m) for k, v in _knob_values(names, xs, frozenset(inverse)).items()}
    res = evaluate(values)
    total = np.zeros(n * m)
    for i, c in enumerate(cases):
        rows = slice(i, n * m, m)
        total[rows] = sum(np.asarray(res[o])[rows] for o in c.outputs) / c.per
    return total.reshape(n, m)


def predict(cases: list[Case], knobs: dict[str, float], inverse=frozenset()) -> np.ndarray:
    """Each case's prediction with the knobs at the given values (an inverse knob as its rate)."""
    names = list(knobs)
    x = np.array([[1 / knobs[n] if n in inverse else knobs[n] for n in names]])
    return predict_many(cases, names, x, inverse)[0]


def _nonneg_lstsq(A: np.ndarray, y: np.ndarray) -> np.ndarray:
    """min |A x - y| over x >= 0, exactly, by every subset of free columns (few columns)."""
    k = A.shape[1]
    best, best_err = np.zeros(k), float(np.sum(y**2))
    for r in range(1, k + 1):
        for free in itertools.combinations(range(k), r):
            sol, *_ = np.linalg.lstsq(A[:, free], y, rcond=None)
            if np.all(sol >= 0):
                x = np.zeros(k)
                x[list(free)] = sol
                err = float(np.sum((A @ x - y) ** 2))
                if err < best_err:
                    best, best_err = x, err
    return best


def fit(cases: list[Case], scales: dict[str, float], inverse=frozenset(), iters: int = 12) -> dict[str, float]:
    """Knob values (symbol name -> value; an inverse knob as its rate) that best meet `cases`.

    `scales` gives each knob a typical size (the finite-difference step; an inverse knob's in
    seconds per unit, e.g. 1 / the peak FLOP rate). Every case's values must already hold the
    knobs fitted before (the fits run in order); the knobs fitted here start at zero."""
    names, inverse = list(scales), frozenset(inverse)
    step = np.array([scales[n] for n in names], dtype=float)
    meas = np.array([c.measured for c in cases], dtype=float)
    w = 1 / np.maximum(np.abs(meas), 1e-12)  # a difference of two timings may come out negative on a busy machine
    x = np.zeros(len(names))
    for _ in range(iters):
        probes = np.vstack([x] + [x + np.eye(len(names))[j] * step[j] for j in range(len(names))])
        pred = predict_many(cases, names, probes, inverse)
        J = (pred[1:] - pred[0]).T / step  # d prediction / d parameter, per case
        x_new = _nonneg_lstsq(J * w[:, None], (meas - pred[0] + J @ x) * w)
        done = np.all(np.abs(x_new - x) <= 1e-9 * (step + np.abs(x)))
        x = x_new
        if done:
            break
    return {n: float(1 / v if v > 0 else BIG) if n in inverse else float(v) for n, v in zip(names, x)}


def bisect(f: Callable[[float], float | None], target: float, lo: float, hi: float, iters: int = 40) -> float | None:
    """The knob value in [lo, hi] (log-bisection) where the monotone prediction `f` meets `target`;
    None if `f` has no answer (the row is out of scope); a bound if the target lies beyond it."""
    a, b = f(lo), f(hi)
    if a is None or b is None:
        return None
    rising = b > a
    if (target <= a) == rising:
        return lo
    if (target >= b) == rising:
        return hi
    for _ in range(iters):
        mid = math.sqrt(lo * hi)
        if (f(mid) < target) == rising:
            lo = mid
        else:
            hi = mid
    return math.sqrt(lo * hi)

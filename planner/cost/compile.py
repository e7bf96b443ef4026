"""The one place where sympy becomes numpy.

All expressions of `planner.cost.model` are lambdified together (`cse=True`, arguments in sorted
symbol-name order) into one vectorised function. The generated source is cached on disk, keyed by
a hash of the cost-model sources and the sympy version, so a warm process neither builds the
expressions nor imports sympy: `planner recommend` stays well under a second.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import inspect
import os
from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np

COST_DIR = Path(__file__).parent


def _cache_dir() -> Path:
    base = os.environ.get("KD_PLANNER_CACHE") or os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kd-planner"


def _key() -> str:
    h = hashlib.sha256(importlib.metadata.version("sympy").encode())
    for p in sorted(COST_DIR.glob("*.py")):
        h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()[:16]


def _generate() -> tuple[list[str], list[str], str]:
    import sympy as sp

    from planner.cost.model import expressions

    exprs = expressions()
    names = list(exprs)
    args = sorted(set().union(*(e.free_symbols for e in exprs.values())), key=lambda s: s.name)
    fn = sp.lambdify(args, [exprs[n] for n in names], modules="numpy", cse=True, docstring_limit=0)
    return [a.name for a in args], names, inspect.getsource(fn)


@lru_cache(maxsize=1)
def compiled() -> tuple[list[str], list[str], Callable]:
    """(argument names, output names, numpy function) - built once, cached on disk."""
    path = _cache_dir() / f"cost-{_key()}.py"
    try:
        text = path.read_text()
        head, source = text.split("\n", 1)
        arg_names, out_names = (part.split(",") for part in head[2:].split("|"))
    except (OSError, ValueError):
        arg_names, out_names, source = _generate()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(f"# {','.join(arg_names)}|{','.join(out_names)}\n{source}")
            tmp.replace(path)
        except OSError:
            pass  # a read-only home: compile every time, still correct
    namespace: dict = dict(vars(np)) | {"numpy": np, "reduce": functools.reduce}
    exec(compile(source, str(path), "exec"), namespace)  # noqa: S102 - our own generated code
    fn = next(v for k, v in namespace.items() if k.startswith("_lambdifygenerated"))
    return arg_names, out_names, fn


def evaluate(values: dict[str, np.ndarray | float]) -> dict[str, np.ndarray]:
    """Evaluate every output for arrays of candidates; `values` maps symbol names to numbers/arrays."""
    arg_names, out_names, fn = compiled()
    missing = [a for a in arg_names if a not in values]
    if missing:
        raise KeyError(f"cost model inputs missing: {', '.join(missing)}")
    with np.errstate(divide="ignore", invalid="ignore"):
        results = fn(*(values[a] for a in arg_names))
    shape = np.broadcast_shapes(*(np.shape(values[a]) for a in arg_names))
    return {n: np.broadcast_to(np.asarray(r, dtype=float), shape) for n, r in zip(out_names, results)}


@lru_cache(maxsize=256)
def one_variable(expr, var) -> Callable:
    """A small expression in one symbol (e.g. an inflection variable's substitution) as a numpy
    function; cached, so a crossing search compiles each substitution once."""
    import sympy as sp

    return sp.lambdify(var, expr, "numpy")

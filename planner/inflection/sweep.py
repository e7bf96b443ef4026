"""Regime maps: the best plan over a grid of two variables, with the crossings drawn on top.

Each grid point is a full `planner recommend` search (compiled model, vectorised over candidates)
on the job and cluster changed along the two axes, so the map agrees with the search point by
point. The boundary between two neighbouring winners in a row is the crossing of their step
times in the x variable (`planner.inflection.crossing`), not an interpolation.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from pydantic import ValidationError

from planner.files import write_files
from planner.inflection import regimes
from planner.inflection.crossing import VARIABLES
from planner.inputs.cluster import Cluster
from planner.inputs.errors import InputError, from_validation
from planner.inputs.load import Job
from planner.search import rank


def _changed(model, source: str, **update):
    """`model` with `update`, validated (`model_copy` would not check the bounds)."""
    try:
        return type(model).model_validate(model.model_dump() | update)
    except ValidationError as e:
        raise from_validation(e, source) from None


def with_value(var: str, x: float, job: Job, cluster: Cluster) -> tuple[Job, Cluster]:
    """The job and cluster with `var` set to x (rounded where it must be whole)."""
    if var not in VARIABLES:
        raise InputError(f"sweep: '{var}' is not one of {', '.join(VARIABLES)}")
    if not math.isfinite(x):
        raise InputError(f"sweep: {var} = {x}: not a finite number")
    n = max(1, int(round(x)))
    source = f"sweep: {var} = {x:g}"
    if var == "nodes":
        return job, cluster.resized(n)
    if var == "inter_bw":
        return job, cluster.model_copy(update={"inter_node": _changed(cluster.inter_node, source, bw_gb_per_s=float(x))})
    if var == "teacher_layers":
        return job.model_copy(update={"teacher": _changed(job.teacher, source, num_layers=n)}), cluster
    if var == "vocab":  # one vocabulary for both models
        return job.model_copy(update={"teacher": _changed(job.teacher, source, vocab=n),
                                      "student": _changed(job.student, source, vocab=n)}), cluster
    w = job.workload
    if var == "micro_batch":
        return job.model_copy(update={"workload": _changed(w, source, micro_batch_min=n, micro_batch_max=n)}), cluster
    return job.model_copy(update={"workload": _changed(w, source, completion_len=n)}), cluster


def regime_label(sc: rank.Scored | None, cluster: Cluster) -> str:
    """A regime's name on the map: the teacher split family and the placement."""
    if sc is None:
        return "nothing fits"
    st = sc.strategy
    name = st.teacher
    if name == "shard":
        name = "shard (whole world)" if st.t_sh == st.n_T and st.n_T > cluster.gpus_per_node else "shard (in node)"
    return name + (" / disaggregated" if st.placement == "disaggregated" else "")


def axis(spec: str, var: str, points: int, flag: str = "") -> np.ndarray:
    """`LO:HI` (linear) or `LO:HI:log` -> grid values; `flag` names the option in errors."""
    flag = flag or f"the {var} range"
    if var not in VARIABLES:
        raise InputError(f"sweep: '{var}' is not one of {', '.join(VARIABLES)}")
    parts = spec.split(":")
    try:
        lo, hi = float(parts[0]), float(parts[1])
    except (IndexError, ValueError):
        raise InputError(f"{flag}: '{spec}' is not LO:HI or LO:HI:log") from None
    if len(parts) > 3 or parts[2:] not in ([], ["log"]):
        raise InputError(f"{flag}: '{spec}' is not LO:HI or LO:HI:log")
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise InputError(f"{flag}: '{spec}': LO and HI must be finite numbers")
    if not 0 < lo < hi:
        raise InputError(f"{flag}: need 0 < LO < HI, got {spec}")
    grid = np.geomspace(lo, hi, points) if parts[2:] == ["log"] else np.linspace(lo, hi, points)
    if VARIABLES[var].integer:
        grid = np.unique(np.maximum(1, np.round(grid)))
    return grid


@dataclass
class RegimeMap:
    x_var: str
    y_var: str
    xs: np.ndarray
    ys: np.ndarray
    labels: list[list[str]]  # [y][x]
    best: list[list[rank.Scored | None]]
    boundaries: list[tuple[float, float]]  # (x, y) points where the winner changes
    job_point: tuple[float, float]
    margins: list[list[float]] | None = None  # [y][x]: how much slower the best plan of another regime is (0.1 = 10%)
    job_margin: float = math.inf  # the same at the job itself

    @property
    def fragile(self) -> bool:
        """The job sits within FRAGILE of another regime: a small error in the model could flip it."""
        return self.job_margin < FRAGILE


FRAGILE = 0.03  # a regime that wins by less than this is a coin toss (the model's time error is ~15%)
SHADE_FULL = 0.3  # a margin of 30% or more gets the full colour


def margin(res: rank.SearchResult, cluster: Cluster) -> float:
    """How much slower the fastest plan of another regime is than the recommended plan (inf: none;
    below 0 where a plan of another regime ties with it and lost on headroom)."""
    if not res.ranked:
        return math.inf
    first = regime_label(res.ranked[0], cluster)
    others = [sc.figures["step_time"] for sc in res.ranked if regime_label(sc, cluster) != first]
    return min(others) / res.ranked[0].figures["step_time"] - 1 if others else math.inf


def sweep(job: Job, cluster: Cluster, x_var: str, xs: np.ndarray, y_var: str, ys: np.ndarray,
          progress: Callable[[int], None] | None = None) -> RegimeMap:
    for var, values in ((x_var, xs), (y_var, ys)):  # the largest grid point first: refuse before any work
        if len(values):
            with_value(var, float(np.max(values)), job, cluster)
    labels, best, bounds, margins = [], [], [], []
    for y in ys:
        jy, cy = with_value(y_var, y, job, cluster)
        row, row_best, row_margin = [], [], []
        for x in xs:
            j, c = with_value(x_var, x, jy, cy)
            res = rank.search(j, c)
            sc = res.ranked[0] if res.ranked else None
            row.append(regime_label(sc, c))
            row_best.append(sc)
            row_margin.append(margin(res, c))
            if progress:
                progress(1)
        for i in range(len(xs) - 1):
            a, b = row_best[i], row_best[i + 1]
            if a and b and row[i] != row[i + 1] and x_var in ("inter_bw", "completion_len", "teacher_layers", "micro_batch"):
                j, c = with_value(x_var, xs[i], jy, cy)
                found = regimes.between(regimes.Regime(row[i], a.strategy), regimes.Regime(row[i + 1], b.strategy),
                                        VARIABLES[x_var], j, c)
                bounds += [(cr.value, float(y)) for cr in found if xs[i] <= cr.value <= xs[i + 1]]
        labels.append(row)
        best.append(row_best)
        margins.append(row_margin)
    job_point = (regimes.job_value(VARIABLES[x_var], job, cluster, _any(best)), regimes.job_value(VARIABLES[y_var], job, cluster, _any(best)))
    return RegimeMap(x_var, y_var, xs, ys, labels, best, bounds, job_point, margins, margin(rank.search(job, cluster), cluster))


def _any(best):
    for row in best:
        for sc in row:
            if sc is not None:
                return sc.strategy
    from planner.strategy import Strategy
    return Strategy("replicate", "ddp", "colocated", 1, 1)


def csv_text(m: RegimeMap) -> str:
    """The best plan at every grid point, as CSV."""
    f = io.StringIO(newline="")
    w = csv.writer(f)
    w.writerow([m.x_var, m.y_var, "regime", "strategy", "samples_per_s", "mem_peak_bytes", "margin"])
    for yi, y in enumerate(m.ys):
        for xi, x in enumerate(m.xs):
            sc = m.best[yi][xi]
            st = sc.strategy if sc else None
            w.writerow([x, y, m.labels[yi][xi], str(st) if st else "", sc.samples_per_s if sc else "",
                        sc.figures["mem_peak"] if sc else "", m.margins[yi][xi] if m.margins else ""])
    return f.getvalue()


def plot_format(path: str | Path) -> str:
    """The image format `path` asks for, checked before any work: matplotlib must import and know it."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        from matplotlib.backends.backend_agg import FigureCanvasAgg
    except ImportError:
        raise InputError("plotting needs matplotlib: pip install 'kd-planner[notebooks]' (or --plot '' for no image)") from None
    fmt = Path(path).suffix.lstrip(".").lower()
    known = FigureCanvasAgg.get_supported_filetypes()
    if fmt not in known:
        raise InputError(f"--plot: {path}: give a file ending in .png or .svg (or one of {', '.join(sorted(known))})")
    return fmt


def plot(m: RegimeMap, path: Path, title: str = "", force: bool = True) -> None:
    """Draw the map into `path` (png, svg, pdf, ...)."""
    write_files([(path, plot_bytes(m, plot_format(path), title), False)], force)


def plot_bytes(m: RegimeMap, fmt: str = "png", title: str = "") -> bytes:
    """One colour per winning regime, paler where it wins by less (full colour from SHADE_FULL), crossings
    as black dots, the job as a star (red, and said in the legend, when it is fragile)."""
    plot_format(f"map.{fmt}")
    import matplotlib.pyplot as plt

    names = sorted({lab for row in m.labels for lab in row})
    idx = np.array([[names.index(lab) for lab in row] for row in m.labels])
    fig, ax = plt.subplots(figsize=(7, 4.5))
    cmap = plt.get_cmap("tab10", max(len(names), 2))
    rgba = np.array(cmap(idx), dtype=float)
    if m.margins:  # fade toward white by how little the winner wins by
        strength = 0.25 + 0.75 * np.clip(np.array(m.margins, dtype=float) / SHADE_FULL, 0.0, 1.0)
        rgba[..., :3] = 1 - strength[..., None] * (1 - rgba[..., :3])
    ax.pcolormesh(m.xs, m.ys, rgba, shading="nearest")
    for i, n in enumerate(names):
        ax.scatter([], [], color=cmap(i), marker="s", label=n)
    if m.boundaries:
        bx, by = zip(*m.boundaries)
        ax.scatter(bx, by, color="black", s=10, label="closed-form crossing")
    job = "this job"
    if m.fragile:  # below 0: another regime's plan is as fast (within the tie rule) and lost on headroom
        job += (f": fragile, another regime within {m.job_margin:.1%}" if m.job_margin >= 0 else
                f": fragile, another regime\n{-m.job_margin:.1%} faster (a tie broken by headroom)")
    ax.scatter([m.job_point[0]], [m.job_point[1]], marker="*", s=200, color="red" if m.fragile else "white",
               edgecolor="black", label=job)
    ax.scatter([], [], color="none", label=f"paler: wins by less (full colour: {SHADE_FULL:.0%}+)")
    for name, setter in ((m.x_var, ax.set_xscale), (m.y_var, ax.set_yscale)):
        arr = m.xs if name == m.x_var else m.ys
        if len(arr) > 2 and arr[-1] / arr[0] > 20:
            setter("log")
    ax.set_xlabel(f"{VARIABLES[m.x_var].describe} ({VARIABLES[m.x_var].unit})")
    ax.set_ylabel(f"{VARIABLES[m.y_var].describe} ({VARIABLES[m.y_var].unit})")
    ax.set_title(title or "best teacher split")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=110)
    plt.close(fig)
    return buf.getvalue()

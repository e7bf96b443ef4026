"""The generic fitter recovers known knobs from synthetic timings made by the compiled cost model.

Each "measurement" below is the compiled model's own prediction of the operation
`planner calibrate` times (`planner.calibrate.cases`), at known knob values; `fit_runtime` must
return those values. No torch and no real timing: a busy machine cannot fail these tests (real
timings stay in bench/validation_report.py).
"""

import pytest

from planner.calibrate import cases, fit
from planner.calibrate.overheads import widened
from planner.inputs.load import load_cluster, load_model

WORLD, SEQ = 2, 64
SHAPE = load_model("tiny-student")
SHAPES = {"x1": SHAPE, "x2": widened(SHAPE)}
CPU = load_cluster("cpu-local")
KNOWN = {"F_S": 0.08e12, "ov": 300e-6, "loss_el": 15e-9, "ov_loss": 400e-6, "ov_opt": 15e-6, "ov_opt_sh": 40e-6,
         "ov_sh": 800e-6, "ov_shb": 1 / 2e9, "ov_dd": 500e-6, "ov_ddb": 1 / 4e9, "ov_pp": 700e-6, "ov_dec": 250e-6}


def synthetic_model_fit(known: dict, cluster=CPU, **formula) -> dict:
    """`measure_once`'s raw model_fit for timings that are exactly the compiled model's predictions
    at `known` (`formula`: other symbol values, e.g. a perturbed bandwidth)."""
    def t(shape, outputs, **kw):
        c = cases.case(shape, cluster, outputs, 1.0, knobs=known, **kw, **formula)
        return float(fit.predict([c], {})[0])

    train = ("time.student_forward", "time.student_backward")
    pipe = ("time.teacher_forward", "time.teacher_bubble", "time.teacher_comm")
    plain = 0.01  # an unsharded forward: subtracted again, any value
    return {
        "model": SHAPE.name, "dtype": "fp32",
        "train_steps": {f"{b}x{SEQ}": t(SHAPE, train, b=b, prompt=SEQ - SEQ // 2, completion=SEQ // 2, ext=1.0) for b in (1, 2, 4, 8)},
        "loss_calls": {f"{b}x{SEQ}": t(SHAPE, ("time.loss",), b=b, prompt=1, completion=SEQ) for b in (1, 4)},
        "optimizer_step_s": t(SHAPE, ("time.optimizer",), prompt=32, completion=32),
        "sharded_optimizer_step_s": t(SHAPE, ("time.optimizer",), prompt=32, completion=32, student="zero3", world=WORLD),
        "fsdp_gathers": {w: {"plain": plain, "passes": 2, "sharded": plain + 2 * t(s, ("time.teacher_gather_exposed",), prompt=32,
                                                                                 completion=32, teacher="shard", world=WORLD)}
                         for w, s in SHAPES.items()},
        "ddp_syncs": {w: {"unsynced": plain, "synced": plain + t(s, ("time.grad_sync",), prompt=32, completion=32, world=WORLD)}
                      for w, s in SHAPES.items()},
        "pipeline": {"seq": SEQ, "seconds": {str(b): t(SHAPE, pipe, b=b, prompt=32, completion=32, teacher="pipeline", world=WORLD)
                                             for b in (1, 3)}},
        "generations": {f"{b}x32+32": t(SHAPE, ("time.generation",), b=b, prompt=32, completion=32, lam=1.0, gen=1.0) for b in (1, 4)},
    }


def test_every_knob_is_recovered():
    got = cases.fit_runtime(synthetic_model_fit(KNOWN), SHAPES, CPU, WORLD)
    for k, v in KNOWN.items():
        assert got[k] == pytest.approx(v, rel=1e-6), k


def test_no_overhead_fits_as_zero():
    """Timings that are all modelled work leave nothing to fit: every overhead is 0, never negative."""
    known = {k: (v if k in ("F_S", "loss_el") else 0.0) for k, v in KNOWN.items()}
    got = cases.fit_runtime(synthetic_model_fit(known), SHAPES, CPU, WORLD)
    for k in known:
        if k not in ("F_S", "loss_el"):
            assert got[k] == pytest.approx(0.0, abs=1e-12), k
    assert cases.as_fields(got).get("shard_copy_gb_per_s") is None  # no per-byte copies: left unset


@pytest.mark.parametrize("formula", [{"bw_ag_T": 0.2e9, "bw_ar_S": 0.3e9}, {"H": 20e9}, {"al_p2p_T": 2e-3}])
def test_a_changed_formula_input_still_recovers_the_knobs(formula):
    """The fitter subtracts whatever the compiled model predicts with a knob at zero, not a copy of
    a formula: with the collectives' bandwidth, the memory bandwidth or a link's latency changed on
    the formula side (in the "measurements" and in the fit alike), every knob comes back exactly,
    and the model with the fitted knobs meets every measurement."""
    raw = synthetic_model_fit(KNOWN, **formula)
    unaware = cases.fit_runtime(raw, SHAPES, CPU, WORLD)  # fitted without the change: the knobs absorb it
    assert any(abs(unaware[k] / KNOWN[k] - 1) > 1e-3 for k in KNOWN), "the change must matter to some knob"
    got = cases.fit_runtime(raw, SHAPES, CPU, WORLD, overrides=formula)
    for k, v in KNOWN.items():
        assert got[k] == pytest.approx(v, rel=1e-6), k


def test_inverse_knob_and_bisect():
    """A FLOP rate is fitted as its inverse (zero = free), and `bisect` (bench/references_fit.py)
    meets a monotone target."""
    c = cases.case(SHAPE, CPU, ("time.student_forward",), 1.0, knobs={"ov": 0.0}, prompt=32, completion=32)
    target = float(fit.predict([c], {"F_S": 5e10}, inverse={"F_S"})[0])
    c.measured = target
    assert fit.fit([c], {"F_S": 1e-11}, inverse={"F_S"})["F_S"] == pytest.approx(5e10, rel=1e-9)
    assert fit.bisect(lambda x: 3 * x, 6.0, 0.1, 10.0) == pytest.approx(2.0, rel=1e-9)

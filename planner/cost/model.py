"""The whole cost model as named sympy expressions: memory and time terms and their totals."""

from __future__ import annotations

from functools import lru_cache

import sympy as sp

from planner.cost import memory, timeline
from planner.cost import symbols as y


def totals(mem: dict[str, sp.Expr], time: dict[str, sp.Expr]) -> dict[str, sp.Expr]:
    """The totals over the terms (their expressions, or one symbol per term for a readable print):
    `mem_student_side`, `mem_teacher_side`, `mem_peak`, `step_time`, `samples_per_s`. In a
    disaggregated plan teacher and student terms live on different devices, so the peak is the
    larger side; colocated, their sum; with an offline teacher cache the teacher side is the
    one-time pass, which runs before training: the larger side too."""
    student_side = sp.Add(*(mem[k] for k in memory.STUDENT_TERMS))
    teacher_side = sp.Add(*(mem[k] for k in memory.TEACHER_TERMS))
    apart = y.disagg + y.cache  # never both: a cached plan is colocated
    peak = (1 - apart) * (student_side + teacher_side) + apart * sp.Max(student_side, teacher_side)
    step = sp.Add(*time.values())
    return {"mem_student_side": student_side, "mem_teacher_side": teacher_side, "mem_peak": peak,
            "step_time": step, "samples_per_s": y.B / step}


@lru_cache(maxsize=1)
def expressions() -> dict[str, sp.Expr]:
    """`mem.<term>`, the memory totals (`totals`), `time.<term>`, `step_time`, `samples_per_s`, and
    the parts of one generation (`generation.prefill`, `generation.decode_step`) and a serving engine's
    reservation per GPU (`engine_reservation`) and what a dedicated rollout GPU lacks (`rollout_gpu_shortfall`)."""
    mem, time = memory.terms(), timeline.terms()
    total = totals(mem, time)
    out = {f"mem.{k}": v for k, v in mem.items()}
    out |= {k: total[k] for k in ("mem_student_side", "mem_teacher_side", "mem_peak")}
    out |= {f"time.{k}": v for k, v in time.items()}
    out |= {k: total[k] for k in ("step_time", "samples_per_s")}
    out |= {"generation.prefill": timeline.prefill(), "generation.decode_step": timeline.decode_step()}
    out["engine_reservation"] = y.gen * y.eng * memory.engine_reservation()  # a serving engine's, per GPU (0: none)
    out["rollout_gpu_shortfall"] = memory.rollout_gpu_shortfall()  # > 0: a dedicated rollout engine does not fit its GPU
    return out

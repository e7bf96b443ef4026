"""From scored candidates to plan files (the grammar and the plan's fields are `Strategy`'s)."""

from __future__ import annotations

import math

from planner.inputs.cluster import Cluster
from planner.inputs.load import Job, load_runtime
from planner.inputs.runtime import Runtime
from planner.plan import Plan, Predicted
from planner.search import output
from planner.search.rank import Scored, speedup
from planner.strategy import Strategy

strategy_of = Strategy.from_plan  # kept for callers that predate `Strategy.from_plan`


def roles(sc: Scored, runtime: Runtime | None = None) -> dict:
    """Who does what on which GPUs (DESIGN.md 6b): the rollout (the student's generation), the teacher
    (scoring) and the trainer (the student's update), as `-f json` gives them. The rollout shares the
    trainer's GPUs (colocated: a serving engine sleeps or keeps its reservation beside it) or runs
    vLLM servers of the student on GPUs of its own (dedicated), synchronously or one step ahead."""
    st, rt = sc.strategy, runtime or load_runtime(sc.runtime)  # a runtime file's name is not a bundled one: pass it
    engine = rt.generation.costs(st.rollout if st.rollout in (rt.generation.engine, *rt.generation.other_engines) else None)
    rollout = {"gpus": st.n_R or st.n_S, "placement": "dedicated" if st.n_R else "colocated", "engine": st.rollout,
               "tp": st.g_tp if st.n_R or st.g_tp > 1 else engine.tensor_parallel, "sleep": st.sleep}
    return {"rollout": rollout,
            "teacher": {"gpus": st.n_T, "engine": "vllm-server" if st.served else rt.teacher_engine, "split": st.teacher_part,
                        "placement": "shares the trainer's GPUs" if st.placement == "colocated" else "GPUs of its own"},
            "trainer": {"gpus": st.n_S, "split": st.student_part}}


def schedule(sc: Scored) -> str:
    """The plan's schedule: async (one step ahead) or sync."""
    return "async" if sc.strategy.ahead else "sync"


def schedule_reason(ranked: list[Scored]) -> str:
    """Why the recommended plan (ranked[0]) runs its schedule: the fastest plan that fits with the other one."""
    if not ranked:
        return ""
    first = ranked[0]
    other = next((s for s in ranked[1:] if s.strategy.ahead != first.strategy.ahead), None)
    if not first.strategy.n_R and other is None:
        return ("sync: one step ahead (async) overlaps the rollouts with training only where they run on GPUs of their own, "
                "and no plan with rollout GPUs of their own fits")
    if first.strategy.ahead:
        hidden = first.figures["time.rollout_wait"]
        tail = f"; the fastest synchronous plan gives {other.samples_per_s:.2f} samples/s" if other else ""
        return (f"async: the next step's rollouts run on {first.strategy.n_R} GPUs of their own while this one trains "
                f"(completions one update old){' and ' + format(hidden, '.3g') + ' s of them still show' if hidden > 0 else ''}{tail}")
    tail = f" (the fastest plan one step ahead gives {other.samples_per_s:.2f} samples/s)" if other else ""
    where = "its rollouts share the trainer's GPUs" if not first.strategy.n_R else "fresh rollouts are as fast"
    return f"sync: {where}{tail}"


def roles_line(sc: Scored, runtime: Runtime | None = None) -> str:
    """The recommended plan's roles in one sentence."""
    r = roles(sc, runtime)
    ro, te, tr = r["rollout"], r["teacher"], r["trainer"]
    tp = (f", tp {ro['tp']}" if ro["tp"] > 1 else "") + (", asleep while it trains" if ro["sleep"] else "")
    where = f"{ro['gpus']} GPUs of its own" if ro["placement"] == "dedicated" else f"the trainer's {ro['gpus']} GPUs"
    return (f"rollout {ro['engine']} on {where}{tp}; teacher {te['split']} ({te['engine']}) on "
            f"{te['gpus']} GPUs ({te['placement']}); trainer {tr['split']} on {tr['gpus']} GPUs; schedule {schedule(sc)}")


def predicted(sc: Scored, baseline: Scored | None, baseline_name: str | None = None) -> Predicted:
    """The plan's predictions, with its speed-up over `baseline` (named `baseline_name`: the strongest that fits)."""
    ratio = speedup(sc, baseline)
    return Predicted(samples_per_s=sc.samples_per_s, step_time_s=sc.figures["step_time"],
                     memory_bytes_per_device=sc.figures["mem_peak"], memory_bytes=sc.memory_terms(), memory_bytes_by_side=sc.memory_sides(),
                     time_s=sc.time_terms(), speedup_vs_baseline=ratio, baseline=baseline_name if ratio is not None else None)


def to_plan(sc: Scored, job: Job, cluster: Cluster, cluster_ref: str, baseline: Scored | None, runtime: str = "kd-planner",
            baseline_name: str | None = None) -> Plan:
    """The plan file for one scored candidate: its strategy's layout, its teacher output in the
    plan's workload, and the predictions."""
    job = output.with_output(job, sc.output)
    plan = sc.strategy.to_plan(job, cluster, cluster_ref, runtime, predicted(sc, baseline, baseline_name))
    reserved = sc.figures.get("engine_reservation", 0.0)
    if plan.rollout.engine == "vllm" and reserved > 0:  # the share of each GPU the engine may take, as costed
        share = min(0.95, math.ceil(1000 * reserved / (cluster.gpu.mem_gib * 2**30)) / 1000)
        plan = plan.model_copy(update={"rollout": plan.rollout.model_copy(update={"gpu_memory_utilization": share})})
    return plan

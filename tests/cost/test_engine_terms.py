"""A serving engine's costs (issue 26, item 2): one generation over the step's samples, decode waves
bounded by its KV room, its reservation held or asleep, the per-step weight refresh and wake. Each
is checked by changing one runtime knob on one layout and comparing the two evaluations."""

from dataclasses import replace

import pytest

from planner.inputs.load import load_cluster, load_job, load_runtime
from planner.search import output, plans, rank
from planner.strategy import Strategy

LAYOUT = "shard:16/zero3/colocated/2+vllm"  # TRL's ZeRO-3 layout with vLLM rollouts, on 2 DGX H100


def _runtime(name="trl-distillation-vllm", **changes):
    rt = load_runtime(name)
    return rt.model_copy(update={"generation": rt.generation.model_copy(update=changes)})


def _score(rt, layout=LAYOUT, job=None):
    job, cl = job or load_job(), load_cluster("dgx-h100", 2)
    st = Strategy.parse(layout, cl)
    return rank.score([st], [None], job, cl, rt)[0]


def _gib(x):
    return x / 2**30


def test_one_generation_per_step_reads_the_weights_once_for_every_micro_batch():
    """ga micro-batches of 2: per micro-batch the engine reads its weights ga times as often (decode
    is bandwidth-bound at these batches); per step it also holds ga x the sequences' cache."""
    ga = load_job().workload.global_batch // (2 * 16)
    assert ga >= 2
    step, micro = _score(_runtime(batch="step", memory_utilization="fill")), _score(_runtime(batch="micro", memory_utilization="fill"))
    assert micro.figures["time.generation"] > 0.9 * ga * step.figures["time.generation"]
    assert step.figures["engine_reservation"] > micro.figures["engine_reservation"]


def test_a_small_kv_room_decodes_in_waves():
    """A share whose room (share x 80 GiB less the 8B student's bf16 weights) holds a third of the
    step's sequences decodes them in about three waves; `fill` sizes the room to all of them."""
    fill = _score(_runtime(memory_utilization="fill"))
    weights = 8_030_261_248 * 2  # Llama-3.1-8B parameters (DESIGN.md), bf16
    need = fill.figures["engine_reservation"] - weights
    third = _score(_runtime(memory_utilization=(weights + need / 3) / (80 * 2**30)))
    roomy = _score(_runtime(memory_utilization=0.3))
    assert roomy.figures["time.generation"] == pytest.approx(fill.figures["time.generation"], rel=1e-9)  # one wave either way
    assert 2 * fill.figures["time.generation"] < third.figures["time.generation"] < 3.1 * fill.figures["time.generation"]
    assert fill.figures["engine_reservation"] < roomy.figures["engine_reservation"]


def test_sleep_frees_the_reservation_for_training_and_costs_a_wake():
    awake, asleep = _score(_runtime(sleep=False)), _score(_runtime(sleep=True, wake_ms=250))
    reserved = awake.figures["engine_reservation"]
    assert _gib(reserved) == pytest.approx(0.3 * 80, rel=1e-6)  # vllm_gpu_memory_utilization 0.3 of 80 GiB
    assert awake.figures["mem.rollout_engine"] == pytest.approx(reserved)
    assert asleep.figures["mem.rollout_engine"] < awake.figures["mem.rollout_engine"]
    assert awake.figures["mem_peak"] - asleep.figures["mem_peak"] > 8 * 2**30
    per_step = load_job().workload.lmbda  # generations per step, in expectation: one per on-policy step
    assert asleep.figures["time.generation"] - awake.figures["time.generation"] == pytest.approx(0.25 * per_step, rel=1e-6)


def test_the_weight_refresh_is_charged_once_per_step_and_only_with_an_engine():
    rt = _runtime(refresh_tensor_overhead_us=0.0)
    slow = _score(_runtime(refresh_tensor_overhead_us=1000.0))
    fast = _score(rt)
    tensors_8b = 291  # Llama-3.1-8B: 32 layers x 9 tensors + embedding, final norm, head
    assert slow.figures["time.weight_sync"] - fast.figures["time.weight_sync"] == pytest.approx(tensors_8b * 1e-3 * 0.5, rel=1e-6)
    assert fast.figures["time.weight_sync"] > 0  # the ZeRO-3 gather and the 16 GB copy
    eager = _score(load_runtime("trl-distillation"), LAYOUT.removesuffix("+vllm"))
    assert eager.figures["time.weight_sync"] == 0 and eager.figures["mem.rollout_engine"] == 0


def test_an_off_policy_job_pays_nothing_for_an_engine():
    job = load_job()
    off = job.model_copy(update={"workload": job.workload.model_copy(update={"lmbda": 0.0})})
    sc = _score(_runtime(), job=off)
    assert sc.figures["time.generation"] == 0 and sc.figures["time.weight_sync"] == 0
    assert sc.figures["mem.rollout_engine"] == 0 and sc.figures["engine_reservation"] == 0


def test_the_plan_asks_vllm_for_the_share_it_was_costed_with():
    """Under `fill` (the bundled executor's), the plan's rollout.gpu_memory_utilization is the
    engine's costed reservation over the device's memory, rounded up."""
    job, cl = load_job(), load_cluster("dgx-h100", 2)
    res = rank.search(job, cl)
    first = res.ranked[0]
    assert first.strategy.rollout == "vllm"
    plan = plans.to_plan(first, job, cl, "dgx-h100", None)
    share = first.figures["engine_reservation"] / (80 * 2**30)
    assert share <= plan.rollout.gpu_memory_utilization <= share + 0.001
    eager = replace(first.strategy, rollout="hf-eager", served=False, sleep=False, g_tp=1)  # an in-process teacher: full logits allowed
    sc = rank.score([eager], [None], job, cl)[0]
    assert plans.to_plan(sc, job, cl, "dgx-h100", None).rollout.gpu_memory_utilization == 0.3  # the field's default, unused


def test_the_default_job_shows_the_vllm_baselines_and_beats_the_strongest():
    res = rank.search(load_job(), load_cluster("dgx-h100", 2))
    assert {"trl-vllm-zero3", "trl-vllm-sleep-zero3", "trl-server-vllm"} <= set(res.baselines)
    strongest = res.baselines[res.strongest]
    assert load_runtime(strongest.runtime).generation.engine == "vllm"  # vLLM rollouts are TRL's faster path here
    assert res.ranked[0].samples_per_s >= strongest.samples_per_s
    eager_trl = res.baselines["trl-distill-zero3"]
    assert strongest.samples_per_s > 2 * eager_trl.samples_per_s


@pytest.mark.parametrize("nodes", [1, 2, 8])
def test_the_search_chooses_whether_the_engine_sleeps(nodes):
    """Under the executor's runtime (`sleep: choose`) each vLLM plan is tried asleep and awake: the
    one ranked first is at least as fast as its twin that fits, the plan file records the choice,
    and the grammar spells it `+vllm:sleep`."""
    job, cl = load_job(), load_cluster("dgx-h100", nodes)
    job = job.model_copy(update={"workload": job.workload.model_copy(update={"rollout_placement": "colocated"})})  # only these sleep
    first = rank.search(job, cl).ranked[0]
    assert first.strategy.rollout == "vllm"
    twin = rank.score([replace(first.strategy, sleep=not first.strategy.sleep)], [None],
                      output.with_output(job, first.output), cl)[0]
    assert not twin.feasible or twin.samples_per_s <= first.samples_per_s * (1 + rank.TIE_MARGIN)
    awake, asleep = (twin, first) if first.strategy.sleep else (first, twin)
    assert asleep.figures["time.generation"] > awake.figures["time.generation"]  # the wake
    assert asleep.figures["mem_peak"] <= awake.figures["mem_peak"]
    plan = plans.to_plan(first, job, cl, "dgx-h100", None)
    assert plan.rollout.sleep == first.strategy.sleep and Strategy.from_plan(plan) == first.strategy
    assert Strategy.parse(str(first.strategy), cl) == first.strategy and str(first.strategy).endswith("+vllm:sleep") == first.strategy.sleep

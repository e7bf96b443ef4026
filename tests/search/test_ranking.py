"""The search's ranking logic on cases whose right answer can be worked out by hand."""

import pytest

from planner.inputs.load import load_cluster, load_job, load_runtime
from planner.search import rank
from planner.search.output import OUTPUT_ORDER


def best(res, pred):
    return max((s for s in res.ranked if pred(s.strategy)), key=lambda s: s.samples_per_s)


def test_default_top_plan_fits_and_is_never_slower_than_trl():
    """TRL's ZeRO-3 layout is in the search space, so the winner can tie it but never lose to it;
    whether an asymmetric split wins depends on the cluster (multi-rail InfiniBand makes the
    world-wide gather cheap), so that is not asserted here."""
    job, cl = load_job(), load_cluster("dgx-h100")
    res = rank.search(job, cl)
    top, z3 = res.ranked[0], res.baselines["trl-gkd-zero3"]
    assert top.feasible and top.figures["mem_peak"] <= res.usable_bytes
    assert rank.speedup(top, z3) >= 1.0 - 1e-9
    # the strongest baseline's layout is in the space too, under a runtime no faster than ours: #1,
    # the simplest of the plans within the tie margin of the fastest, is at most that margin behind
    assert rank.speedup(top, res.baselines[res.strongest]) >= 1.0 - res.margin
    assert not res.baselines["trl-gkd-ddp"].feasible  # a 70B replica does not fit in 80 GB
    assert not res.baselines["trl-distill-ddp"].feasible


def test_teacher_fits_replicate_beats_shard_on_slow_link():
    """Qwen2.5-7B teacher (15 GB) fits everywhere: gathering it over 25 GB/s Ethernet shared by 4
    GPUs every micro-step costs more than it saves, so a replica beats world-wide ZeRO-3."""
    job = load_job(None, teacher="qwen2.5-7b", student="qwen2.5-0.5b")
    cl = load_cluster("l40s-pcie")
    res = rank.search(job, cl)
    replicate = best(res, lambda s: s.teacher == "replicate" and s.placement == "colocated")
    shard_world = best(res, lambda s: s.teacher == "shard" and s.t_sh == cl.world and s.placement == "colocated")
    assert replicate.samples_per_s > shard_world.samples_per_s
    assert res.ranked[0].strategy.teacher != "shard" or res.ranked[0].strategy.t_sh < cl.world


def one_nic_per_node(cl):
    """The cluster with one NIC per node (all eight GPUs share it), as commodity clusters have."""
    return cl.model_copy(update={"inter_node": cl.inter_node.model_copy(update={"gpus_per_nic": cl.gpus_per_node})})


def test_teacher_too_big_pipeline_in_node_beats_zero3_across_nodes():
    """A 70B teacher cannot be replicated on 80 GB; a pipeline inside the node moves only activations
    over NVLink while ZeRO-3 across nodes all-gathers 141 GB every micro-step, here over one shared
    NIC per node (with a NIC per GPU, multi-rail NCCL hides the gather: see test_links.py)."""
    job, cl = load_job(), one_nic_per_node(load_cluster("dgx-h100"))
    res = rank.search(job, cl)
    assert not any(s.strategy.teacher == "replicate" for s in res.ranked)
    pipe = best(res, lambda s: s.teacher in ("pipeline", "hybrid") and s.pp <= cl.gpus_per_node and s.placement == "colocated")
    z3 = best(res, lambda s: s.teacher == "shard" and s.t_sh == cl.world and s.placement == "colocated")
    assert pipe.samples_per_s > z3.samples_per_s


def test_nothing_fits_reports_closest():
    job = load_job(None, teacher="llama-3.1-405b", student="llama-3.1-70b")
    res = rank.search(job, load_cluster("l40s-pcie", 1))
    assert res.ranked == [] and res.closest is not None
    assert any(k.startswith("out of memory") for k in res.rejected)


def test_rejections_are_counted_by_reason():
    res = rank.search(load_job(), load_cluster("dgx-h100"))
    assert sum(res.rejected.values()) + len(res.ranked) == res.evaluated
    assert "global batch not divisible by micro-batch x student ranks" in res.rejected


@pytest.mark.parametrize("objective", ["throughput", "memory"])
def test_objective_orders(objective):
    res = rank.search(load_job(), load_cluster("dgx-h100"), objective)
    if objective == "memory":
        values = [s.figures["mem_peak"] for s in res.ranked]
        assert values == sorted(values)
    else:  # throughput: the plans within 1% of the fastest first (as a group), then the others by speed
        fastest = max(s.samples_per_s for s in res.ranked)
        tied, rest = res.ranked[:res.tied], res.ranked[res.tied:]
        assert tied and all(s.samples_per_s >= 0.99 * fastest for s in tied)
        assert all(s.samples_per_s < 0.99 * fastest for s in rest)
        assert [s.samples_per_s for s in rest] == sorted((s.samples_per_s for s in rest), reverse=True)


def test_every_plan_keeps_the_reserve_free():
    """The reserve is a constraint: no ranked plan (nor the baselines it is compared with) eats into
    it, and a bigger reserve only removes plans, with the reason counted."""
    job, cl = load_job(), load_cluster("dgx-h100")
    res = rank.search(job, cl)
    assert res.reserve_bytes == pytest.approx(0.05 * res.usable_bytes)
    assert all(s.free >= res.reserve_bytes and s.figures["mem_peak"] + s.free == pytest.approx(res.usable_bytes)
               for s in res.ranked)
    big = rank.search(job, cl, reserve=rank.Reserve(0.05, 10.0))
    assert all(s.free >= 0.05 * res.usable_bytes + 10 * 2**30 for s in big.ranked)
    assert 0 < len(big.ranked) < len(res.ranked)
    assert {str(s.strategy) for s in big.ranked} < {str(s.strategy) for s in res.ranked}
    assert any("kept free" in why for why in big.rejected)
    none = rank.search(job, cl, reserve=rank.Reserve(0.0))
    assert len(none.ranked) > len(res.ranked)


def test_ties_are_one_group_led_by_the_simplest_with_the_most_headroom():
    """On the default job with eager rollouts many plans tie within 1% (generation dominates every
    layout): #1 is the simplest placement and teacher split among them, and of those the one with the
    most free memory."""
    job = load_job()
    job = job.model_copy(update={"workload": job.workload.model_copy(update={"rollout_engine": "hf-eager"})})
    res = rank.search(job, load_cluster("dgx-h100"))
    tied = res.ranked[:res.tied]
    assert len(tied) > 1
    first = tied[0]
    key = lambda s: (OUTPUT_ORDER[s.output], s.strategy.machinery[:2])  # noqa: E731  the exact loss first
    simplest = min(key(s) for s in tied)
    assert key(first) == simplest and first.output == "logits"
    assert first.free == max(s.free for s in tied if key(s) == simplest)
    assert "free" in res.why_first and f"{first.free / 2**30:.1f} GiB" in res.why_first
    wider = rank.search(job, load_cluster("dgx-h100"), margin=0.05)
    assert wider.tied >= res.tied


def test_near_ties_prefer_the_simpler_plan():
    res = rank.search(load_job("tiny-cpu"), load_cluster("cpu-local"))
    top = res.ranked[0].strategy
    assert (top.teacher, top.student, top.placement) == ("replicate", "ddp", "colocated")


@pytest.mark.parametrize("job_name, cluster_name", [("llama70b-to-8b", "dgx-h100"), ("qwen32b-to-1.5b", "l40s-pcie")])
def test_more_inter_node_bandwidth_never_slows_the_best_plan(job_name, cluster_name):
    """Every plan gets faster or stays as fast, and none stops fitting: the best can only improve."""
    job, cl = load_job(job_name), load_cluster(cluster_name)
    times = []
    for factor in (0.05, 0.25, 1.0, 4.0, 20.0):
        tier = cl.inter_node.model_copy(update={"bw_gb_per_s": cl.inter_node.bw_gb_per_s * factor})
        # the fastest plan (the recommended one may be up to the tie margin slower, for more free memory)
        times.append(min(s.figures["step_time"] for s in rank.search(job, cl.model_copy(update={"inter_node": tier})).ranked))
    assert all(b <= a * (1 + 1e-12) for a, b in zip(times, times[1:])), times
    assert times[-1] < times[0]  # and on these jobs the network matters at all


@pytest.mark.parametrize("job_name, cluster_name", [("llama70b-to-8b", "dgx-h100"), ("qwen32b-to-1.5b", "mi300x")])
def test_a_bigger_teacher_never_speeds_the_best_plan(job_name, cluster_name):
    job, cl = load_job(job_name), load_cluster(cluster_name)
    times = []
    for layers in (16, 32, 64, 96, 128):
        deeper = job.model_copy(update={"teacher": job.teacher.model_copy(update={"num_layers": layers})})
        res = rank.search(deeper, cl)
        times.append(res.ranked[0].figures["step_time"] if res.ranked else float("inf"))
    assert all(b >= a * (1 - 1e-12) for a, b in zip(times, times[1:])), times
    assert times[-1] > times[0]


def test_a_wide_micro_batch_range_builds_only_reachable_candidates():
    """micro_batch_max 1024 on 16 nodes used to build and score ~1.6 million candidates (minutes,
    gigabytes); the unreachable micro-batches are now counted, not built, and the counts agree."""
    from planner.search import space

    job = load_job(None).model_copy(update={"workload": load_job(None).workload.model_copy(update={"global_batch": 4096, "micro_batch_max": 1024})})
    cl = load_cluster("dgx-h100", 16)
    gathers = space.gathers(job, load_runtime("kd-planner"))  # a sharded student gathered once and per step
    engines = space.rollout_engines(job, cl, load_runtime("kd-planner"))  # eager and colocated vLLM
    servings = space.teacher_servings(job, load_runtime("kd-planner"))  # in-process, and served where it can be
    rt = load_runtime("kd-planner")
    res = rank.search(job, cl)
    tps = res.rollout_tp.chosen  # the rollout servers' TP degrees the search kept (planner.search.rollout_tp)
    cands, _ = space.enumerate_candidates(job, cl, gathers, engines, servings, rt, tps)
    # rollout GPUs of their own (1, 2, ..., 64, each sync and ahead, with each TP degree the search kept)
    # and colocated engines of TP 1, 2, 4, 8 multiply the vLLM variants: 138,158 here on 2026-12-08
    # (155,020 with every dedicated degree and colocated TP 1 only, 1.6 million before counting)
    assert len(cands) < 150_000
    assert all(job.workload.global_batch % (c.b * c.n_S) == 0 for c in cands)
    outputs = len(job.workload.outputs)  # every layout with every teacher output the job allows
    skipped = space.unreachable(job, cl, gathers, engines, servings, rt, tps)
    assert res.evaluated == outputs * (len(cands) + skipped) > 1_000_000
    assert res.rejected[space.UNREACHABLE] >= outputs * skipped

"""The rollout servers' tensor-parallel degree on GPUs of their own: spelled `+vllm:dedicated:N:tp:K`,
carried by the plan (rollout.tp) and its export (servers of K GPUs), chosen by the search
(`planner.search.rollout_tp`), and the choice made before the trainer's layouts loses no plan."""

from __future__ import annotations

import pytest

from planner.cli import app
from planner.inputs.errors import InputError
from planner.inputs.load import load_cluster, load_job
from planner.launch.options import LaunchOptions
from planner.launch.servers import servers
from planner.plan import plan_of, strategy_of
from planner.search import rank, rollout_tp
from planner.strategy import Strategy

H100 = load_cluster("dgx-h100", 2)


def test_the_degree_is_spelled_after_the_rollout_gpus_and_read_back():
    st = Strategy.parse("replicate/zero3/served:4/1+vllm:dedicated:4:tp:2+async", H100)
    assert (st.n_R, st.g_tp, st.ahead, st.n_T, st.n_S) == (4, 2, True, 4, 8)
    assert str(st) == "replicate/zero3/served:4/1+vllm:dedicated:4:tp:2+async"
    assert Strategy.parse(str(st), H100) == st
    assert str(Strategy.parse("replicate/zero3/served:4/1+vllm:dedicated:4:tp:1", H100)) == "replicate/zero3/served:4/1+vllm:dedicated:4"


@pytest.mark.parametrize("text, words", [
    ("replicate/zero3/served:4/1+vllm:dedicated:4:tp:3", "divide"),    # 3 divides neither the 4 GPUs nor a node
    ("replicate/zero3/served:4/1+vllm:dedicated:6:tp:4", "divide"),    # 4 does not divide 6
    ("replicate/zero3/served:4/1+vllm:dedicated:4:tp:16", "node"),     # wider than a node
    ("replicate/zero3/served:4/1+vllm:dedicated:4:pp:2", ":tp:K"),
])
def test_a_degree_that_cannot_be_servers_is_one_line(text, words):
    with pytest.raises(InputError) as e:
        Strategy.parse(text, H100)
    assert len(e.value.lines) == 1 and words in e.value.lines[0]


def test_a_colocated_degree_must_divide_the_trainer_and_be_a_vllm_engines():
    assert Strategy("replicate", "ddp", "colocated", 8, 8, s_sh=8, rollout="vllm", g_tp=2).g_tp == 2
    with pytest.raises(InputError, match="does not divide the 6 trainer GPUs"):
        Strategy("replicate", "ddp", "colocated", 6, 6, s_sh=6, rollout="vllm", g_tp=4)
    with pytest.raises(InputError, match="a vllm engine's"):
        Strategy("replicate", "ddp", "colocated", 8, 8, s_sh=8, rollout="hf-eager", g_tp=2)


def test_a_colocated_degree_is_spelled_after_the_engine():
    for text in ("replicate/zero3/colocated/1+vllm:tp:4", "replicate/zero3/colocated/1+vllm:sleep:tp:2+async"):
        st = Strategy.parse(text, H100)
        assert str(st) == text and not st.n_R
    with pytest.raises(InputError, match="divide a node"):
        Strategy.parse("replicate/zero3/colocated/1+vllm:tp:3", H100)


def test_the_plan_and_its_export_carry_the_degree():
    cl = load_cluster("dgx-h100", 1)
    st = Strategy.parse("replicate/zero3/served:2/1+vllm:dedicated:4:tp:2", cl)
    job = load_job(None).model_copy(update={"workload": load_job(None).workload.model_copy(update={"teacher_output": "topk"})})
    plan = plan_of(st, job, cl, "dgx-h100")
    assert (plan.rollout.tp, plan.rollout.ranks, plan.rollout.placement) == (2, [4, 5, 6, 7], "dedicated")
    assert strategy_of(plan) == st
    rollout = [s for s in servers(plan, LaunchOptions()) if s.role == "rollout"]
    assert [(s.node, s.gpus) for s in rollout] == [(0, (4, 5)), (0, (6, 7))]  # two servers of 2 GPUs each


def test_kept_degrees():
    tried = {1: (3.0, 0.4), 2: (2.6, 0.38), 4: (3.6, 0.37), 8: None}
    assert rollout_tp.kept(tried, ahead=False) == (2,)           # the smallest generation + refresh
    assert rollout_tp.kept(tried, ahead=True) == (2, 4)          # 1 is beaten by 2 on both; 4 refreshes faster
    assert rollout_tp.kept({1: (1.0, 0.1), 2: (1.0, 0.1)}, ahead=True) == (1,)  # a tie: the smaller degree
    assert rollout_tp.kept({1: None, 2: None}, ahead=False) == (1, 2)  # none fits: every plan says why


@pytest.mark.parametrize("student", ["qwen2.5-14b", "llama-3.1-8b"])
def test_choosing_the_degree_first_loses_no_plan(student, monkeypatch):
    """The search with the degrees chosen first ranks the same best plan, at the same speed, at every
    rollout GPU count in each schedule, as the search over every degree."""
    job = load_job(None, teacher="qwen2.5-72b", student=student)
    chosen = rank.search(job, H100)
    real = rollout_tp.choose
    monkeypatch.setattr(rollout_tp, "choose", lambda *a: rollout_tp.RolloutTP(real(*a).seconds, {}))  # every degree
    every = rank.search(job, H100)
    assert chosen.evaluated < every.evaluated

    def best(res):
        out = {}
        for s in res.ranked:
            key = (s.strategy.n_R, s.strategy.ahead)
            out[key] = max(out.get(key, 0.0), s.samples_per_s)
        return out

    assert best(chosen) == pytest.approx(best(every), rel=1e-12)
    assert chosen.ranked[0].samples_per_s == pytest.approx(every.ranked[0].samples_per_s, rel=1e-12)


def test_recommend_says_why_the_servers_have_their_degree(runner, tmp_path):
    """72B -> 14B on 2 x 8 H100 with the rollouts on GPUs of their own (workload.rollout_placement):
    two servers of tp 2 on 4 rollout GPUs, whose rollouts the cost model puts ahead of tp 1 and tp 4;
    the table's line and the JSON say the same."""
    import json

    import yaml

    from pathlib import Path

    ROOT = Path(__file__).resolve().parents[2]
    job = yaml.safe_load((ROOT / "jobs" / "llama70b-to-8b.yaml").read_text())
    job |= {"teacher": "qwen2.5-72b", "student": "qwen2.5-14b"}
    job["workload"]["rollout_placement"] = "dedicated"
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job))
    args = ["recommend", "-m", str(tmp_path / "job.yaml")]
    r = runner.invoke(app, args, env={"COLUMNS": "400"})
    assert r.exit_code == 0, r.stderr
    line = next(x for x in r.stdout.splitlines() if x.startswith("Rollout TP:"))
    assert "tp 1 " in line and "tp 2 " in line and "tp 4 " in line and "2 server(s) of tp 2 on the 4 rollout GPUs" in line
    d = json.loads(runner.invoke(app, [*args, "-f", "json"]).stdout)
    first = d["plans"][0]
    assert "+vllm:dedicated:4:tp:2" in first["strategy"] and first["roles"]["rollout"]["tp"] == 2
    assert d["rollout_tp_why"] == line.removeprefix("Rollout TP: ").removesuffix(".")


def test_a_degree_the_students_heads_do_not_allow_is_never_ranked():
    """Qwen2.5-7B has 28 query and 4 key/value heads: vLLM splits it over 2 or 4 GPUs, not 8. No plan
    with an engine of tp 8 is ranked, and the servers' pre-pass never keeps one."""
    job = load_job(None, student="qwen2.5-7b")
    res = rank.search(job, H100)
    assert res.ranked and not any(s.strategy.g_tp == 8 for s in res.ranked)
    assert any(s.strategy.g_tp == 4 for s in res.ranked)
    assert all(8 not in tried for tried in res.rollout_tp.seconds.values())
    st = Strategy.parse("replicate/zero3/colocated/1+vllm:tp:8", H100)
    assert st.rejection(job) == "the rollout engine's tensor-parallel degree does not divide the student's heads"


def test_a_misspelled_degree_after_sleep_is_one_line():
    with pytest.raises(InputError, match=":tp:K"):
        Strategy.parse("replicate/zero3/colocated/1+vllm:sleep:tpx:2", H100)

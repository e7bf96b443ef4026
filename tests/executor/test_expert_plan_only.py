"""Expert parallelism is plan-only: the executor refuses it in one line, and `planner export`
refuses it before writing a script (no processes); so is a tp split of an MoE teacher."""

import pytest

pytest.importorskip("torch")

from planner.executor.groups import check_supported  # noqa: E402
from planner.inputs.errors import InputError  # noqa: E402
from planner.inputs.load import load_cluster, load_job  # noqa: E402
from planner.launch import render  # noqa: E402
from planner.plan import write_plan  # noqa: E402
from planner.strategy import Strategy  # noqa: E402


def test_expert_parallelism_is_plan_only(tmp_path):
    job, cl = load_job("qwen3-235b-a22b-to-30b-a3b"), load_cluster("dgx-a100", 2)
    ep = Strategy.parse("shard:16+ep:8/zero3", cl).to_plan(job, cl, "dgx-a100", runtime="megatron-ep")
    with pytest.raises(InputError, match=r"teacher shard:16\+ep:8: expert parallelism is plan-only"):
        check_supported(ep)
    path = tmp_path / "ep.yaml"
    write_plan(ep, path)
    with pytest.raises(InputError, match=r"teacher.ep: shard:16\+ep:8: the kd-planner runtime does not run an expert-parallel teacher"):
        render(path, None, "slurm")
    tp = Strategy.parse("tp:4/zero3", cl).to_plan(job, cl, "dgx-a100")  # the executor's tp splits dense layers, not experts
    with pytest.raises(InputError, match=r"teacher tp:4: the executor's tensor parallelism splits dense layers only"):
        check_supported(tp)
    write_plan(tp, tmp_path / "tp.yaml")
    with pytest.raises(InputError, match=r"teacher.strategy: tp:4: the kd-planner runtime does not split a mixture-of-experts teacher"):
        render(tmp_path / "tp.yaml", None, "slurm")
    plain = Strategy.parse("shard:16/zero3", cl).to_plan(job, cl, "dgx-a100")
    write_plan(plain, tmp_path / "plain.yaml")
    assert "planner run" in render(tmp_path / "plain.yaml", None, "slurm")  # the same job without EP exports

"""A tensor-parallel teacher (tp:2, planner/executor/tensor_parallel.py) gives the single-process
reference's per-step loss (within 1e-5) and gradient norm (relative 1e-5) over 3 steps, as
test_correctness does for the other splits: colocated on 2 ranks (on-policy half the time); two
tp:2 replicas on 4 ranks with top-k output (selected shard by shard) and a ZeRO-3 student; and on 2
ranks of its own serving 2 DDP students; and, in the same launch, two 2-stage pipelines of the teacher
with an HSDP student (2 replicas x 2 shards), on-policy. Each rank of a TP group holds half the teacher. Qwen2 and
Qwen3 blocks and a tied head split like the whole model (tp_families.py)."""

import json
from pathlib import Path

from executor_helpers import ROOT, assert_matches_reference, run_plan, tiny_plan, torchrun

from planner.inputs.yamlio import dump_yaml, read_mapping

STEPS = 3


def full_teacher_bytes() -> int:
    from planner.executor.build import build_model
    from planner.inputs.load import load_model

    return sum(p.nbytes for p in build_model("tiny-teacher", load_model("tiny-teacher"), "fp32", 0).parameters())


def four_ranks(plan: Path, teacher_ranks: list[int], student_ranks: list[int], grad_accum: int, student_shard: int = 1) -> Path:
    """The plan on 4 processes (global batch 8, micro-batch 2)."""
    data = read_mapping(plan)
    data["gpus_per_node"], data["grad_accum"] = 4, grad_accum
    data["teacher"]["ranks"], data["student"]["ranks"], data["student"]["shard"] = teacher_ranks, student_ranks, student_shard
    plan.write_text(dump_yaml(data))
    return plan


def test_tp_teacher_on_two_ranks_matches_single_process(tmp_path):
    plan = tiny_plan(tmp_path, "replicate-ddp", "tp2", teacher="tp", lmbda=0.5)
    got = run_plan(plan, tmp_path / "tp2.json", STEPS)
    assert_matches_reference(plan, got, STEPS)
    assert sum(got["on_policy"]) > 0
    held = [got["peak_memory_bytes"][r]["teacher_params"] for r in ("0", "1")]
    assert held[0] == held[1] and abs(held[0] / full_teacher_bytes() - 0.5) < 0.01  # the norms (replicated) are 0.1%


def test_tp_teacher_replicas_and_disaggregated_on_four_ranks_match_single_process(tmp_path):
    replicas = four_ranks(tiny_plan(tmp_path, "replicate-ddp", "tp2x2-topk", teacher="tp", student="zero3", teacher_output="topk", topk=16),
                          [0, 1, 2, 3], [0, 1, 2, 3], grad_accum=1, student_shard=4)
    own = four_ranks(tiny_plan(tmp_path, "disaggregated", "tp2-disaggregated", teacher="tp"), [0, 1], [2, 3], grad_accum=2)
    # the other 2-D layouts, in the same launch: two 2-stage teacher pipelines (the old "hybrid") and an
    # HSDP student (2 replicas of a 2-way shard)
    hybrid = four_ranks(tiny_plan(tmp_path, "pipeline-ddp", "pp2x2-hsdp2x2", student="hsdp", lmbda=0.5),
                        [0, 1, 2, 3], [0, 1, 2, 3], grad_accum=1, student_shard=2)
    jobs = [{"plan": str(p), "metrics_out": str(tmp_path / f"{p.stem}.json"), "steps": STEPS} for p in (replicas, own, hybrid)]
    (tmp_path / "jobs.json").write_text(json.dumps(jobs))
    torchrun([str(ROOT / "tests" / "executor" / "run_many.py"), str(tmp_path / "jobs.json")], nproc=4, timeout=300)
    full = full_teacher_bytes()
    for plan, job in zip((replicas, own), jobs[:2]):
        got = json.loads(Path(job["metrics_out"]).read_text())
        assert_matches_reference(plan, got, STEPS)
        teachers = [r for r, role in got["roles"].items() if role != "student"]
        assert len(teachers) == (4 if plan is replicas else 2)
        assert all(abs(got["peak_memory_bytes"][r]["teacher_params"] / full - 0.5) < 0.01 for r in teachers)
    got = json.loads(Path(jobs[2]["metrics_out"]).read_text())
    assert_matches_reference(hybrid, got, STEPS)
    assert sum(got["on_policy"]) > 0
    # each rank holds one stage of its pipeline (two whole teachers over the 4 ranks, none on one rank)
    # and the same half of the student (its replica's 2-way shard)
    held = [got["peak_memory_bytes"][str(r)] for r in range(4)]
    assert all(h["teacher_params"] < 0.75 * full for h in held), held
    assert abs(sum(h["teacher_params"] for h in held) / (2 * full) - 1) < 0.02, held
    assert len({h["student_params"] for h in held}) == 1


def test_qwen2_qwen3_and_tied_llama_split_like_the_whole_model(tmp_path):
    """Q/K/V biases (Qwen2), per-head q/k norms on the local heads (Qwen3) and a tied head re-tied to
    the split embedding give each rank the whole model's logits for its rows (within float rounding
    of the split sums), and the shard-wise top-k the top-k of those."""
    torchrun([str(ROOT / "tests" / "executor" / "tp_families.py"), str(tmp_path / "fam")], timeout=240)
    for rank in range(2):
        for name, r in json.loads((tmp_path / f"fam.{rank}.json").read_text()).items():
            assert r["logits"] < 1e-5 and r["topk_values"] < 1e-5 and r["topk_indices_equal"], (rank, name, r)

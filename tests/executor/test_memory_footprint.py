"""What a rank holds while it runs: the sampled peak of anonymous memory (the metrics' `peak_anon`)
of a `shard:2` teacher loaded from a sharded safetensors checkpoint stays below the full teacher,
and its whole step's peak within the plan's own terms plus a stated slack."""

from pathlib import Path

from executor_helpers import run_plan
from test_weights import save_llama

from planner.inputs.load import load_model
from planner.inputs.yamlio import dump_yaml
from planner.plan import load_plan

ROOT = Path(__file__).resolve().parents[2]


def test_a_sharded_teachers_peak_is_reported_and_bounded(tmp_path):
    """A 32k-vocabulary teacher (~171 MiB fp32, 10 MB files) sharded over 2 ranks, a small DDP student
    of the same vocabulary, 3 steps. Each rank reports `peak_anon` (sampled RssAnon), its start and
    the phase of the peak; the peak holds at least the rank's teacher half and student state.

    The bound is today's, not issue 24's goal (below 0.8x the teacher above an idle process): on
    2026-12-07 a rank peaked 513 MiB above its start here (688 before the teacher's embeddings and
    head became FSDP units of their own), of which ~150 MiB are what the plan charges; most of the
    rest is freed memory glibc keeps (docs/executor.md). The upper bound, 4x the teacher plus the
    student state, is a loose guard (a rank that held two more whole teachers fails it), not a fit."""
    teacher = save_llama(tmp_path / "teacher", hidden=512, layers=4, ffn=1536, vocab=32000, tied=False, shard="10MB")
    save_llama(tmp_path / "student", hidden=64, layers=1, ffn=128, vocab=32000, tied=False, shard="10MB")
    data = load_plan(ROOT / "examples" / "tiny-shard-zero3.yaml").model_dump(mode="json")
    for who in ("teacher", "student"):
        data[who] |= {"ref": str(tmp_path / who), "shape": load_model(str(tmp_path / who)).model_dump(mode="json")}
    data["student"].update(strategy="ddp", shard=1)
    data["workload"].update(prompt_len=16, completion_len=16)
    plan = tmp_path / "plan.yaml"
    plan.write_text(dump_yaml(data))
    got = run_plan(plan, tmp_path / "metrics.json", 3, random_init=False, timeout=300)
    for rank, mem in got["peak_memory_bytes"].items():
        assert abs(mem["teacher_params"] / teacher - 0.5) < 0.01
        student = mem["student_params"] + mem["student_grads"] + mem["student_optimizer"]
        added = mem["peak_anon"] - mem["start_anon"]
        assert got["peak_anon_phase"][rank] in ("load", "first_step", "steps") and mem["peak_rss"] >= mem["peak_anon"]
        assert mem["teacher_params"] + student <= added < 4 * teacher + student, (
            f"rank {rank}: {added / 2**20:.0f} MiB above the start (peak in {got['peak_anon_phase'][rank]}), "
            f"teacher {teacher / 2**20:.0f} MiB, student state {student / 2**20:.0f} MiB")

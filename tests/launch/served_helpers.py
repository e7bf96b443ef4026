"""A plan with a served teacher, for the export tests (imported by name: tests/ has no packages)."""

from __future__ import annotations

from pathlib import Path

from planner.plan import Plan, load_plan, write_plan

ROOT = Path(__file__).resolve().parents[2]


def teacher_folder(folder: Path, weights: bool = False) -> Path:
    """The tiny teacher as a checkpoint folder vLLM can load: config.json (and, with `weights`,
    random fp32 safetensors weights; `--random-init` runs without them)."""
    from planner.executor.build import build_model
    from planner.inputs.load import load_model

    import torch

    model = build_model("tiny-teacher", load_model("tiny-teacher"), "fp32", 3)
    model.config.dtype = torch.float32  # vLLM runs the config's dtype
    if weights:
        model.save_pretrained(folder)
    else:
        model.config.save_pretrained(folder)
    return folder


def served_plan(tmp_path: Path, name: str = "served.yaml", weights: bool = False, **top) -> Path:
    """tiny-disaggregated with its teacher behind a vLLM server on the last GPU (rank 1, outside
    the trainer's world of 1); `top` replaces top-level plan fields (e.g. cluster, nodes)."""
    data = load_plan(ROOT / "examples" / "tiny-disaggregated.yaml").model_dump(mode="json")
    folder = teacher_folder(tmp_path / "teacher", weights)
    data.update(top)
    world = data["nodes"] * data["gpus_per_node"]
    n_T = len(data["teacher"]["ranks"])
    from planner.inputs.load import load_model

    data["teacher"]["shape"] = load_model(str(folder)).model_dump(mode="json")  # the shape as the folder says it
    data["teacher"].update(engine="vllm-server", strategy="replicate", ref=str(folder), ranks=list(range(world - n_T, world)))
    data["student"]["ranks"] = list(range(world - n_T))
    data["workload"]["teacher_output"] = "topk"
    data["workload"]["global_batch"] = data["micro_batch"] * data["grad_accum"] * (world - n_T)
    path = tmp_path / name
    write_plan(Plan(**data), path)
    return path

"""Resolve what a user names (bundled name, file or directory) into validated inputs.

A model may be: the name of a bundled model (`planner list`), a path to a Hugging Face
`config.json` or to a directory holding one, or a YAML file with a `ModelShape` written out.
A job (`--model JOB`) names or inlines a teacher and a student, plus the workload.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from pydantic import ConfigDict, Field, ValidationError

import planner
from planner.inputs.cluster import Cluster
from planner.inputs.errors import InputError, from_validation
from planner.inputs.model import ModelShape, Strict, from_hf_config
from planner.inputs.runtime import Runtime
from planner.inputs.training import Training
from planner.inputs.workload import Workload
from planner.inputs.yamlio import read_mapping

DEFAULT_JOB = "llama70b-to-8b"
DEFAULT_CLUSTER = "dgx-h100"
DEFAULT_RUNTIME = "kd-planner"  # what our plans run under; each TRL baseline runs under its own (planner.search.baselines)


def bundled_dir(kind: str) -> Path:
    """Folder of bundled `models`, `topologies`, `runtimes` or `jobs` (inside a wheel, or the source tree)."""
    pkg = Path(planner.__file__).parent
    inside = pkg / "_bundled" / kind
    return inside if inside.is_dir() else pkg.parent / kind


def bundled_names(kind: str) -> list[str]:
    folder = bundled_dir(kind)
    return sorted(p.stem for p in folder.glob("*") if p.suffix in (".json", ".yaml", ".yml"))


def _find(ref: str, kind: str, base: Path | None) -> Path:
    """The file `ref` names: an existing path (relative to cwd, then to `base`), else a bundled name."""
    tried = []
    for root in (Path.cwd(), base):
        if root is None:
            continue
        p = (root / ref).expanduser()
        tried.append(str(p))
        if p.is_dir():
            cfg = p / "config.json"
            if cfg.is_file():
                return cfg
            tried.append(str(cfg))
        elif p.is_file():
            return p
    folder = bundled_dir(kind)
    for suffix in (".json", ".yaml", ".yml"):
        p = folder / f"{ref.lower()}{suffix}"
        if p.is_file():
            return p
    tried.append(f"bundled {kind} '{ref}'")
    close = difflib.get_close_matches(ref.lower(), bundled_names(kind), n=3)
    guess = f"did you mean {' or '.join([', '.join(close[:-1]), close[-1]] if len(close) > 1 else close)}? " if close else ""
    raise InputError(f"{ref}: not found (tried {', '.join(tried)}); {guess}`planner list` shows the bundled {kind}")


def _shape_from_mapping(data: dict[str, Any], source: str, name: str, prefix: str = "") -> ModelShape:
    if "model_type" in data:  # a Hugging Face config.json
        return from_hf_config(data, source, name=name)
    try:
        return ModelShape(**({"name": name} | data))
    except ValidationError as e:
        raise from_validation(e, source, prefix) from None


def find_model(ref: str) -> Path | None:
    """The file a model `ref` names (as `load_model` finds it, from the current folder), or None."""
    try:
        return _find(ref, "models", None)
    except InputError:
        return None


def load_model(ref: str, base: Path | None = None) -> ModelShape:
    """A model shape from a bundled name, a config.json (or its directory) or a YAML shape."""
    path = _find(ref, "models", base)
    name = path.parent.name if path.name == "config.json" else path.stem
    return _shape_from_mapping(read_mapping(path), str(path), name)


def load_cluster(ref: str, nodes: int | None = None) -> Cluster:
    """A cluster topology from a bundled name or a YAML file, optionally resized to `nodes`."""
    path = _find(ref, "topologies", None)
    data = read_mapping(path)
    try:
        cluster = Cluster(**data)
    except ValidationError as e:
        raise from_validation(e, str(path)) from None
    if nodes is not None:
        if nodes < 1:
            raise InputError(f"--nodes: must be at least 1, got {nodes}")
        cluster = cluster.resized(nodes)
    return cluster


def load_runtime(ref: str = DEFAULT_RUNTIME) -> Runtime:
    """A runtime from a bundled name (`trl-gkd`, `trl-distillation`, `trl-server`, `kd-planner`) or a YAML file."""
    path = _find(ref, "runtimes", None)
    data = _runtime_mapping(path, ())
    try:
        return Runtime(**data)
    except ValidationError as e:
        raise from_validation(e, str(path)) from None


def _runtime_mapping(path: Path, seen: tuple[Path, ...]) -> dict[str, Any]:
    """A runtime file's mapping; one with `base: NAME` (a bundled runtime or a file) is that
    runtime's with this file's keys over it, nested mappings merged key by key."""
    data = read_mapping(path)
    base = data.pop("base", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise InputError(f"{path}: base: must name a runtime (a bundled name or a YAML file), got {base!r}")
    base_path = _find(base, "runtimes", path.parent)
    if base_path.resolve() in seen or base_path.resolve() == path.resolve():
        raise InputError(f"{path}: base: '{base}' leads back to itself")
    return _merged(_runtime_mapping(base_path, (*seen, path.resolve())), data)


def runtime_file_schema() -> dict[str, Any]:
    """The JSON Schema of a runtime *file* (`planner schema runtime`): a whole runtime, or one that
    names a `base` runtime and writes only what differs (checked in full once merged, on load)."""
    full = Runtime.model_json_schema()
    defs = full.pop("$defs", {})
    partial = {"type": "object", "required": ["base"], "description": "A runtime over a base one: its keys replace the base's, mappings merged key by key.",
               "properties": {"base": {"type": "string", "description": "The runtime this one changes: a bundled name or a YAML file (relative to this one)."}}}
    return {"$defs": defs, "anyOf": [full, partial]}


def _merged(under: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(under)
    for k, v in over.items():
        out[k] = _merged(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _job_file_schema(schema: dict[str, Any]) -> None:
    """The JSON Schema of a job *file* (`planner schema job`): a model is named by a string or
    written out, as `job_from_mapping` reads it; the `*_ref` fields are the loader's, not the file's."""
    props = schema["properties"]
    for key in ("teacher", "student"):
        shape = {"$ref": props[key].pop("$ref")}
        props[key]["anyOf"] = [
            {"type": "string", "description": "A bundled model name, or a path to a config.json, its folder or a YAML shape."},
            shape,
            {"type": "object", "required": ["model_type"], "description": "A Hugging Face config.json written out."},
        ]
    for key in ("teacher_ref", "student_ref"):
        del props[key]


class Job(Strict):
    """A distillation job: the teacher, the student and the workload."""

    model_config = ConfigDict(json_schema_extra=_job_file_schema)

    name: str = Field("job", description="Display name.")
    teacher: ModelShape = Field(description="The frozen teacher.")
    student: ModelShape = Field(description="The trained student.")
    teacher_ref: str = Field("", description="How the teacher was named (bundled name or path), kept for the plan file.")
    student_ref: str = Field("", description="How the student was named (bundled name or path), kept for the plan file.")
    workload: Workload = Field(default_factory=Workload, description="Batch, lengths and GKD settings.")
    training: Training = Field(default_factory=Training, description="Learning rate, schedule, length, evaluation, checkpoints, final save and logs (copied into the plan; the cost model does not read it).")
    dataset: str | None = Field(None, description="Local training dataset, copied into the plan for `planner run` (a .jsonl or .parquet file, or a `Dataset.save_to_disk` folder; columns `messages`, or `prompt` and `completion`); default synthetic prompts. Checked when the run starts, not when planning.")
    tokenizer: str | None = Field(None, description="Local tokenizer folder, copied into the plan; default the student checkpoint folder's tokenizer.")


def _model_field(value: Any, key: str, source: str, base: Path) -> tuple[ModelShape, str]:
    if isinstance(value, str):
        return load_model(value, base), value
    if isinstance(value, dict):
        return _shape_from_mapping(value, source, key, prefix=key), f"inline:{key}"
    raise InputError(f"{source}: {key}: expected a model name, a path or a mapping, got {type(value).__name__}")


def job_from_mapping(data: dict[str, Any], source: str, base: Path) -> Job:
    lines: list[str] = []
    for key in ("teacher", "student"):
        if key not in data:
            lines.append(f"{source}: {key}: missing (a bundled model name, a config.json path or a mapping)")
    if lines:
        raise InputError(lines)
    fields = dict(data)
    fields["teacher"], fields["teacher_ref"] = _model_field(data["teacher"], "teacher", source, base)
    fields["student"], fields["student_ref"] = _model_field(data["student"], "student", source, base)
    try:
        return Job(**fields)
    except ValidationError as e:
        raise from_validation(e, source) from None


def load_job(ref: str | None = None, teacher: str | None = None, student: str | None = None) -> Job:
    """A job from a file or bundled name; `teacher`/`student` replace the job's models, and the
    job is then named after its models (`TEACHER-to-STUDENT`): only the workload is the file's."""
    path = _find(ref or DEFAULT_JOB, "jobs", None)
    data = read_mapping(path)
    if teacher:
        data["teacher"] = str(Path(teacher).resolve()) if Path(teacher).exists() else teacher
    if student:
        data["student"] = str(Path(student).resolve()) if Path(student).exists() else student
    data.setdefault("name", path.stem)
    job = job_from_mapping(data, str(path), path.parent)
    if teacher or student:
        job = job.model_copy(update={"name": f"{job.teacher.name}-to-{job.student.name}"})
    return job

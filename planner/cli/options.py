"""Options shared by the planning commands (typed once, reused)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

Model = Annotated[Optional[str], typer.Option("--model", "-m", help="Job file or bundled job (teacher + student + workload); default: the bundled llama70b-to-8b.")]
ClusterOpt = Annotated[Optional[str], typer.Option("--cluster", "-c", help="Cluster topology (bundled name or YAML); default: dgx-h100.")]
RuntimeOpt = Annotated[Optional[str], typer.Option("--runtime", help="How our plans are run (bundled runtime name or YAML): kd-planner (the bundled executor, default; eager or vLLM rollouts), trl-gkd, trl-distillation, trl-distillation-vllm, trl-distillation-vllm-sleep, trl-server, trl-server-vllm, trl-async-distillation, verl-opd, megatron-ep (`planner list`); each baseline runs under its own.")]
Nodes = Annotated[Optional[int], typer.Option("--nodes", "-n", help="Resize the cluster to this many nodes.", min=1)]
Teacher = Annotated[Optional[str], typer.Option("--teacher", help="Teacher model instead of the job's (name, config.json or folder).")]
Student = Annotated[Optional[str], typer.Option("--student", help="Student model instead of the job's.")]
ReserveOpt = Annotated[float, typer.Option("--reserve", help="Fraction of each device's usable memory a plan must leave free, on top of the topology's reserved_mem_gib (CUDA context, NCCL buffers): for allocator fragmentation and longer batches.", min=0.0, max=0.5)]
ReserveGib = Annotated[float, typer.Option("--reserve-gib", help="GiB a plan must leave free per device, added to --reserve.", min=0.0)]
RandomInit = Annotated[bool, typer.Option("--random-init", help="Passed to `planner run --random-init` in the launch script: seeded random weights instead of the refs' checkpoints (a bundled name is a shape, not weights).")]

"""Which CPU this is, and whether a CPU topology was measured on it.

A CPU topology (`backend: gloo`) written by `planner calibrate` records the CPU it was measured on
(`measured_on`: model name, family and model numbers, ISA, bf16 units, logical CPUs, torch). On a
CPU that differs, a bundled CPU topology is replaced by this machine's cached calibration
(`planner calibrate --cache`, stored under `$XDG_CACHE_HOME/kd-planner/machines/`, keyed by the
CPU identity), if there is one; otherwise the planning commands print one line that the figures
belong to another CPU, with the command that measures this one. No torch here: the CPU is read
from /proc/cpuinfo (`KD_PLANNER_CPUINFO` points the reader at another file, for tests).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform
import re
from pathlib import Path
from typing import Literal

from pydantic import Field

from planner.inputs.model import Strict

ISA = Literal["AMX", "AVX-512", "AVX2", "AVX", "SSE", "NEON", "other"]


class MeasuredOn(Strict):
    """The CPU a topology's figures were measured on (what `planner calibrate` found)."""

    cpu: str = Field(description="/proc/cpuinfo's model name (or the platform's processor name).")
    family: str = Field("", description="/proc/cpuinfo's vendor, cpu family and model numbers ('AuthenticAMD 26/2'): one model name covers several generations.")
    isa: ISA = Field(description="The widest vector/matrix extension: AMX, AVX-512, AVX2, AVX, SSE (x86) or NEON (Arm).")
    bf16_units: bool = Field(description="Whether the CPU has bf16 matmul instructions (avx512_bf16 or amx_bf16; Arm 'bf16'). Without them bf16 matmuls run far slower than fp32.")
    cpus: int = Field(gt=0, description="Logical CPUs the machine has.")
    torch: str | None = Field(None, description="torch version the figures were measured with (recorded, not compared).")
    torch_capability: str | None = Field(None, description="torch.backends.cpu.get_cpu_capability() at measuring time ('AVX2', 'AVX512', ...; recorded, not compared).")

    def same_cpu(self, other: "MeasuredOn") -> bool:
        """Whether the figures carry over: the same CPU (model, family, ISA, bf16 units, CPU count)."""
        return self.key() == other.key()

    def key(self) -> str:
        """A short file-name-safe key of the CPU identity (the cache's folder name)."""
        ident = f"{self.cpu}|{self.family}|{self.isa}|{self.bf16_units}|{self.cpus}"
        slug = re.sub(r"[^a-z0-9]+", "-", self.cpu.lower()).strip("-")[:40] or "cpu"
        return f"{slug}-{self.cpus}cpu-{hashlib.sha256(ident.encode()).hexdigest()[:10]}"

    def describe(self) -> str:
        return f"{self.cpu}{f' ({self.family})' if self.family else ''}, {self.isa}, {'' if self.bf16_units else 'no '}bf16 units, {self.cpus} CPUs"


def _isa(flags: set[str]) -> str:
    if flags & {"amx_tile", "amx_bf16", "amx_int8"}:
        return "AMX"
    if "avx512f" in flags:
        return "AVX-512"
    for isa, flag in (("AVX2", "avx2"), ("AVX", "avx"), ("SSE", "sse2")):
        if flag in flags:
            return isa
    if flags & {"asimd", "neon"}:
        return "NEON"
    return "other"


def this_cpu(torch_capability: str | None = None) -> MeasuredOn:
    """This machine's CPU, from /proc/cpuinfo (or `KD_PLANNER_CPUINFO`); torch's version from its
    package metadata (torch is not imported); `torch_capability` if the caller has torch."""
    path = Path(os.environ.get("KD_PLANNER_CPUINFO", "/proc/cpuinfo"))
    fields: dict[str, str] = {}
    cpus = 0
    try:
        text = path.read_text(errors="replace")
    except OSError:
        text = ""
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        key = key.strip().lower()
        if not sep:
            continue
        if key == "processor":
            cpus += 1
        fields.setdefault(key, value.strip())
    flags = set((fields.get("flags") or fields.get("features") or "").split())
    name = fields.get("model name") or fields.get("cpu model") or platform.processor() or platform.machine() or "unknown CPU"
    family = " ".join(p for p in (fields.get("vendor_id", ""), "/".join(v for v in (fields.get("cpu family", ""), fields.get("model", "")) if v)) if p)
    try:
        torch = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        torch = None
    return MeasuredOn(cpu=name, family=family, isa=_isa(flags), bf16_units=bool(flags & {"avx512_bf16", "amx_bf16", "bf16"}),
                      cpus=cpus or os.cpu_count() or 1, torch=torch, torch_capability=torch_capability)


def cache_dir() -> Path:
    """Where this machine's calibrations are kept: `$KD_PLANNER_CACHE`, `$XDG_CACHE_HOME` or
    ~/.cache, then kd-planner/machines/CPU-KEY/."""
    base = os.environ.get("KD_PLANNER_CACHE") or os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kd-planner" / "machines" / this_cpu().key()


def cached_topology(name: str) -> Path:
    """The cache file of this machine's calibration of the CPU topology `name`."""
    return cache_dir() / f"{name}.yaml"


def measure_command(cluster) -> str:
    return f"planner calibrate --quick --model tiny-student --world {cluster.gpus_per_node} --name {cluster.name} --cache"


def for_this_machine(cluster, ref: str, bundled: bool):
    """(the cluster to plan with, a one-line note or None). A CPU topology measured on another CPU:
    a bundled one is replaced by this machine's cached calibration of the same name if there is
    one; otherwise (or for the user's own file, which is kept as given) the note says whose figures
    they are and how to measure this machine."""
    mine = this_cpu()
    theirs = cluster.measured_on
    if cluster.backend != "gloo" or theirs is None or theirs.same_cpu(mine):
        return cluster, None
    cached = cached_topology(cluster.name)
    if bundled and cached.is_file():
        from planner.inputs.load import load_cluster

        return (load_cluster(str(cached), cluster.nodes),
                f"{ref}: measured on another CPU ({theirs.describe()}); using this machine's calibration {cached}.")
    how = f"`{measure_command(cluster)}` measures this one" + (f" (then -c {ref} uses it)" if bundled else f"; or plan with -c {cached}" if cached.is_file() else "")
    return cluster, (f"{ref}: these figures belong to another CPU ({theirs.describe()}), not this one "
                     f"({mine.describe()}): {how}.")


def slow_bf16_note(cluster, job) -> str | None:
    """One line when a bf16 job meets a CPU whose bf16 matmuls are slower than its fp32 ones (no bf16
    units: the topology's measured peaks say so). The job is predicted as it will run, at the
    measured bf16 rate; the line says how much faster fp32 would be."""
    w, peaks = job.workload, cluster.gpu.peak_tflops
    dtypes = {w.student_dtype, w.teacher_dtype or job.teacher.dtype}
    if cluster.backend != "gloo" or "bf16" not in dtypes or not {"bf16", "fp32"} <= set(peaks) or peaks["bf16"] >= peaks["fp32"]:
        return None
    return (f"{cluster.name}: this CPU's bf16 matmuls are {peaks['fp32'] / peaks['bf16']:.0f}x slower than fp32 ({peaks['bf16']:g} vs "
            f"{peaks['fp32']:g} TFLOP/s: no bf16 units); bf16 is predicted at that rate: set the workload's student_dtype and "
            "teacher_dtype to fp32 for a faster run.")

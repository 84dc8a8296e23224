"""What this machine offers, read once: CPU instruction sets, OpenVINO's CPU capabilities, usable CPUs.

Every hardware-dependent choice (the precisions a runtime may run, default thread counts) and every
hardware-dependent test expectation reads these functions, never a guess. The probes are cached;
the parsers below them are pure functions, so tests simulate another machine by passing text or by
monkeypatching a probe (``cpu_flags``, ``openvino_capabilities``, ``cgroup_cpu_limit``).
"""

from __future__ import annotations

import functools
import math
import os
import platform
from pathlib import Path
from typing import Any

from edgemem.errors import InputError
from edgemem.optional import require

# The flags a bench result's machine block records ("amx": any AMX tile extension).
ISA_KEYS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx")
# The flags `edgemem runtimes` shows: the ones that change what the CPU runtimes run and how fast.
SHOWN_FLAGS = (
    "f16c", "fma", "avx2", "avx_vnni", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "avx512_fp16",
    "amx_tile", "amx_bf16", "amx_int8",
)  # fmt: skip
_AMX = frozenset({"amx_tile", "amx_bf16", "amx_int8"})
_CGROUP = Path("/sys/fs/cgroup")


def parse_cpuinfo_flags(text: str) -> frozenset[str]:
    """The flags of the first CPU in ``/proc/cpuinfo`` text (``flags`` on x86, ``Features`` on Arm)."""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def parse_cpuinfo_model(text: str) -> str | None:
    """The ``model name`` of the first CPU in ``/proc/cpuinfo`` text (None where there is none)."""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() == "model name":
            return value.strip()
    return None


@functools.cache
def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


@functools.cache
def cpu_flags() -> frozenset[str]:
    """This CPU's instruction-set flags (empty where ``/proc/cpuinfo`` does not exist)."""
    return parse_cpuinfo_flags(_cpuinfo())


def cpu_model() -> str:
    """This CPU's model name; the platform's processor or machine name where cpuinfo has none."""
    return parse_cpuinfo_model(_cpuinfo()) or platform.processor() or platform.machine()


def isa(flags: frozenset[str] | None = None) -> dict[str, bool]:
    """The ISA summary of ``flags`` (default: this CPU) under ``ISA_KEYS``."""
    f = cpu_flags() if flags is None else flags
    return {k: bool(f & _AMX) if k == "amx" else k in f for k in ISA_KEYS}


@functools.cache
@functools.cache
def shared_core() -> Any:
    """The process's one ``openvino.Core`` (also ``runtimes.openvino.shared_core``).

    OpenVINO's CPU plugin gives the main thread an alternate signal stack per plugin instance and,
    when instances are destroyed out of creation order, restores one that was already freed: the
    next signal handled on it (Python installs every handler with SA_ONSTACK: Ctrl-C, SIGCHLD)
    kills the process with SIGSEGV. One Core per process (OpenVINO's own advice) never destroys one.
    """
    return require("openvino", extra="openvino", purpose="runtime openvino").Core()


def openvino_capabilities(device: str = "CPU") -> frozenset[str] | None:
    """OpenVINO's ``OPTIMIZATION_CAPABILITIES`` of ``device`` (e.g. FP32, BF16, FP16, INT8).

    None when openvino is not installed or has no such device. Read through the process's one
    ``openvino.Core`` (``shared_core``), never a second one.
    """
    try:
        import openvino  # noqa: F401
    except ImportError:
        return None
    try:
        return frozenset(str(c) for c in shared_core().get_property(device, "OPTIMIZATION_CAPABILITIES"))
    except RuntimeError:  # no such device
        return None


def parse_cpu_max(text: str) -> float | None:
    """CPUs allowed by a cgroup v2 ``cpu.max`` (``"max 100000"``: no limit -> None)."""
    parts = text.split()
    if len(parts) != 2 or parts[0] == "max":
        return None
    quota, period = float(parts[0]), float(parts[1])
    return quota / period if quota > 0 and period > 0 else None


def parse_cfs(quota_text: str, period_text: str) -> float | None:
    """CPUs allowed by cgroup v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` (quota -1: None)."""
    quota, period = float(quota_text), float(period_text)
    return quota / period if quota > 0 and period > 0 else None


def _read_limit(d: Path) -> float | None:
    try:
        if (d / "cpu.max").is_file():
            return parse_cpu_max((d / "cpu.max").read_text())
        if (d / "cpu.cfs_quota_us").is_file():
            return parse_cfs((d / "cpu.cfs_quota_us").read_text(), (d / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None


def _cgroup_dirs(root: Path, self_cgroup: str) -> list[Path]:
    """The directories of this process's cpu cgroup and all its ancestors (v2 and v1 layouts)."""
    dirs = []
    for line in self_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, rel = parts
        names = controllers.split(",")
        if controllers == "":
            mounts = [root]  # v2 unified hierarchy
        elif "cpu" in names:
            mounts = [root / controllers, root / "cpu", root / "cpu,cpuacct"]
        else:
            continue
        for mount in mounts:
            d = mount / rel.lstrip("/")
            while True:
                dirs.append(d)
                if d == mount:
                    break
                d = d.parent
    return dirs


def cgroup_cpu_limit(root: Path = _CGROUP, self_cgroup: Path = Path("/proc/self/cgroup")) -> float | None:
    """The tightest CPU quota (in CPUs) on this process's cgroup or its ancestors; None: no quota."""
    try:
        text = self_cgroup.read_text()
    except OSError:
        return None
    limits = [x for x in (_read_limit(d) for d in dict.fromkeys(_cgroup_dirs(root, text))) if x is not None]
    return min(limits) if limits else None


def affinity_cpus() -> int:
    """CPUs this process may be scheduled on (its affinity mask; all CPUs where there is none)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def cpu_budget(affinity: int, quota: float | None) -> int:
    """Usable CPUs: the affinity mask capped by the quota rounded up, at least 1."""
    n = affinity if quota is None else min(affinity, math.ceil(quota))
    return max(1, n)


@functools.cache
def usable_cpus() -> int:
    """The CPUs this process may really use: affinity and cgroup quota (``cpu.max`` / CFS)."""
    return cpu_budget(affinity_cpus(), cgroup_cpu_limit())


def default_threads(processes: int = 1) -> int:
    """Default intra-op threads of a session or a training process: the usable CPUs shared by
    ``processes`` processes, capped by ``OMP_NUM_THREADS`` when that is set."""
    n = max(1, usable_cpus() // max(1, processes))
    omp = os.environ.get("OMP_NUM_THREADS", "")
    return min(n, int(omp)) if omp.isdigit() and int(omp) > 0 else n


def resolve_threads(threads: int | None, processes: int = 1) -> int:
    """``threads`` when given (>= 1), else ``default_threads(processes)``."""
    if threads is None:
        return default_threads(processes)
    if int(threads) < 1:
        raise InputError(f"threads must be >= 1, got {threads}")
    return int(threads)


def int8_gemm(flags: frozenset[str] | None = None) -> str:
    """The int8 dot-product instructions of ``flags`` (default: this CPU): ``amx``, ``vnni``
    (AVX512-VNNI or AVX-VNNI: int8 GEMMs at 2-4x f32), ``avx2`` (VPMADDUBSW/VPMADDWD only: at best
    about 2x f32, and OpenVINO's int8 Linear kernels there run at f32 speed, ``python -m
    edgemem.bench.gemm``) or ``none``."""
    f = cpu_flags() if flags is None else flags
    if "amx_int8" in f:
        return "amx"
    if f & {"avx512_vnni", "avx_vnni"}:
        return "vnni"
    return "avx2" if "avx2" in f else "none"


def summary() -> dict[str, Any]:
    """Everything above, for ``edgemem runtimes`` and bench results."""
    flags = cpu_flags()
    return {
        "isa": isa(flags),
        "flags": [f for f in SHOWN_FLAGS if f in flags],
        "int8_gemm": int8_gemm(flags),
        "affinity_cpus": affinity_cpus(),
        "cpu_quota": cgroup_cpu_limit(),
        "usable_cpus": usable_cpus(),
        "default_threads": default_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS") or None,
    }

"""The versioned results file of one benchmark cell, and the machine it ran on.

One JSON file per cell (model x runtime x precision x frame-scale x batch). Files from any number
of machines merge by reading them all: each carries its machine, so nothing else is needed.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from edgemem import hardware
from edgemem.atomic import write_json
from edgemem.errors import EdgememError, UnsupportedError
from edgemem.precision import Precision
from edgemem.runtimes.registry import runs_on_gpu

SCHEMA_VERSION = 1

STATUSES = ("ok", "failed", "skipped")
LATENCY_KEYS = ("first", "reset", "p50", "p90", "p99", "mean", "min", "steps")
REQUIRED_KEYS = (
    "schema_version",
    "model",
    "runtime",
    "precision",
    "frame_scale",
    "batch",
    "temporal_support",
    "latency_ms",
    "throughput_clips_s",
    "real_time_factor",
    "peak_rss_mb",
    "gflops_step",
    "state_bytes",
    "accuracy",
    "status",
    "error",
    "machine",
)
# Distributions whose versions a machine record lists (both ONNX Runtime builds can be installed at once).
_LIBRARIES = ("edgemem", "torch", "numpy", "onnx", "onnxruntime", "onnxruntime-gpu", "openvino", "tensorrt")


@dataclass(frozen=True)
class Cell:
    """What one benchmark cell measures; the key its results are filed under."""

    model: str
    runtime: str
    precision: str = "f32"
    frame_scale: int = 1
    batch: int = 1

    @property
    def key(self) -> str:
        return f"{model_slug(self.model)}-fs{self.frame_scale}-{self.runtime}-{self.precision}-b{self.batch}"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def nvidia_smi_rows(query: str) -> list[list[str]]:
    """Rows of ``nvidia-smi --query-<query> --format=csv,noheader,nounits``; empty without a GPU."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        out = subprocess.run(
            [exe, f"--query-{query}", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [[p.strip() for p in line.split(",")] for line in out.strip().splitlines()]


def _gpus() -> list[dict[str, Any]]:
    """GPUs that nvidia-smi reports (name, memory); empty without one."""
    return [
        {"name": r[0], "memory_mb": float(r[1]), "driver": r[2]}
        for r in nvidia_smi_rows("gpu=name,memory.total,driver_version")
        if len(r) == 3
    ]


def _versions() -> dict[str, str]:
    found = {}
    for lib in _LIBRARIES:
        try:
            found[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            continue
    return found


def _ort_providers() -> list[str] | None:
    """The execution providers of the ``onnxruntime`` that imports: which of its builds is in use."""
    try:
        import onnxruntime
    except ImportError:
        return None
    return list(onnxruntime.get_available_providers())


def machine_info() -> dict[str, Any]:
    """CPU model and ISA flags, cores (usable: affinity and cgroup quota), memory, GPUs, OS, Python
    and library versions, the providers of the ONNX Runtime that imports, and the date (UTC). Older
    result files lack ``isa``/``cpu_quota``/``onnxruntime_providers``."""

    try:
        mem_kb = next(
            int(line.split()[1])
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        )
        memory_gb = round(mem_kb / 2**20, 1)
    except (OSError, StopIteration, ValueError):
        memory_gb = None
    return {
        "hostname": platform.node(),
        "cpu": hardware.cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": hardware.usable_cpus(),
        "cpu_quota": hardware.cgroup_cpu_limit(),
        "isa": hardware.isa(),
        "memory_gb": memory_gb,
        "gpus": _gpus(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "libraries": _versions(),
        "onnxruntime_providers": _ort_providers(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def model_slug(model: str) -> str:
    """A model name safe in a file name (a YAML config is named by its stem)."""
    name = Path(model).stem if model.lower().endswith((".yaml", ".yml")) else model
    return re.sub(r"[^A-Za-z0-9_.]+", "-", name).strip("-")


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def device_tag(runtime: str, machine: dict[str, Any]) -> str:
    """Short name of the device a cell ran on, for file names: ``cpu-amd-epyc-2c`` or ``nvidia-h100``."""
    gpus = machine.get("gpus") or []
    if runs_on_gpu(runtime) and gpus:
        return _slug(gpus[0]["name"])
    cpu = _slug(str(machine.get("cpu", "cpu")))
    cpu = re.sub(r"-(\d+-core-processor|processor|cpu)$", "", cpu)
    return f"cpu-{cpu[:40]}-{machine.get('cores_usable') or machine.get('cores')}c"


def empty_result(cell: Cell, machine: dict[str, Any], status: str = "failed", error: str | None = None) -> dict:
    """A result with every metric null, for a cell that failed or was skipped before measuring."""
    return {
        "schema_version": SCHEMA_VERSION,
        **cell.to_json(),
        "temporal_support": {"clips": None, "frames": None, "seconds": None},
        "clip_seconds": None,
        "latency_ms": dict.fromkeys(LATENCY_KEYS),
        "throughput_clips_s": None,
        "real_time_factor": None,
        "achieved_gflop_s": None,
        "peak_rss_mb": None,
        "base_rss_mb": None,
        "peak_device_mb": None,
        "gflops_step": None,
        "state_bytes": None,
        "params": None,
        "backbone": None,
        "accuracy": None,
        "status": status,
        "error": error,
        "device": device_tag(cell.runtime, machine),
        "machine": machine,
    }


def validate_result(d: Any, source: str = "result") -> dict[str, Any]:
    """Check that ``d`` is a results dict of a known schema version; raise EdgememError naming the problem."""
    if not isinstance(d, dict):
        raise EdgememError(f"{source}: not a JSON object")
    version = d.get("schema_version")
    if version != SCHEMA_VERSION:
        raise EdgememError(f"{source}: schema_version {version!r}, this edgemem reads {SCHEMA_VERSION}")
    missing = [k for k in REQUIRED_KEYS if k not in d]
    if missing:
        raise EdgememError(f"{source}: missing keys {missing}")
    if d["status"] not in STATUSES:
        raise EdgememError(f"{source}: status {d['status']!r} is not one of {list(STATUSES)}")
    lat = d["latency_ms"]
    if not isinstance(lat, dict) or any(k not in lat for k in LATENCY_KEYS):
        raise EdgememError(f"{source}: latency_ms must hold {list(LATENCY_KEYS)}")
    if d["status"] == "ok" and lat["p50"] is None:
        raise EdgememError(f"{source}: status ok without a p50 latency")
    return d


def result_filename(result: dict[str, Any]) -> str:
    """``<model>-fs<k>-<runtime>-<precision>-b<batch>-<device>.json``: the file says what and where."""
    cell = Cell(result["model"], result["runtime"], result["precision"], result["frame_scale"], result["batch"])
    return f"{cell.key}-{result.get('device') or device_tag(cell.runtime, result['machine'])}.json"


def write_result(out_dir: Path, result: dict[str, Any]) -> Path:
    """Validate and write one cell's results under ``out_dir``; returns the file."""
    validate_result(result)
    path = Path(out_dir) / result_filename(result)
    write_json(path, result)
    return path


def read_results(paths: list[str | Path]) -> list[dict[str, Any]]:
    """Every results file under the given files/folders (recursively), validated, in a stable order."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(f for f in p.rglob("*.json") if not f.name.startswith("."))
        elif p.is_file():
            files.append(p)
        else:
            raise EdgememError(f"no such results file or folder: {p}")
    results = []
    for f in files:
        try:
            d = json.loads(f.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise EdgememError(f"{f}: unreadable results file: {e}") from None
        if isinstance(d, dict) and "schema_version" not in d:
            continue  # other JSON that lives beside results (graph info, caches)
        if isinstance(d, dict) and isinstance(d.get("precision"), str):  # an older spelling reads as today's
            try:
                d["precision"] = Precision.parse(d["precision"]).value
            except UnsupportedError as e:
                raise EdgememError(f"{f}: {e}") from None
        results.append(validate_result(d, str(f)))
    return results

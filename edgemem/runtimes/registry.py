"""``open_session(model_path, runtime, **options)``: the one entry point to every runtime adapter."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgemem.errors import UnsupportedError
from edgemem.runtimes.base import Session


def _ort_cpu(path: Any, **kw: Any) -> Session:
    from edgemem.runtimes.ort import OrtSession

    return OrtSession(path, **kw)


def _ort_device(device: str) -> Callable[..., Session]:
    def make(path: Any, **kw: Any) -> Session:
        from edgemem.runtimes.ort import OrtDeviceSession

        return OrtDeviceSession(path, device=device, **kw)

    return make


def _openvino(path: Any, **kw: Any) -> Session:
    from edgemem.runtimes.openvino import OpenVinoSession

    return OpenVinoSession(path, **kw)


def _openvino_stateful(path: Any, **kw: Any) -> Session:
    from edgemem.runtimes.openvino import OpenVinoStatefulSession

    return OpenVinoStatefulSession(path, **kw)


def _tensorrt(path: Any, **kw: Any) -> Session:
    from edgemem.runtimes.tensorrt import TensorRTSession

    return TensorRTSession(path, **kw)


# name -> (factory, one-line description); options are the adapter's keyword arguments. The graph
# runtimes are listed here; a layer above adds its own with ``register_runtime`` (``edgemem.export``
# registers the PyTorch reference ``torch`` when imported).
RUNTIMES: dict[str, tuple[Callable[..., Session], str]] = {
    "ort-cpu": (_ort_cpu, "ONNX Runtime, CPU provider; batch, threads, inter_threads, spinning"),
    "ort-cuda": (_ort_device("cuda"), "ONNX Runtime, CUDA provider, state on device; batch, device_id"),
    "ort-tensorrt": (_ort_device("tensorrt"), "ONNX Runtime, TensorRT provider; batch, device_id, fp16"),
    "openvino": (_openvino, "OpenVINO, explicit state; batch, precision (as the CPU has), device, threads"),
    "openvino-stateful": (_openvino_stateful, "OpenVINO, state in variables; batch, precision, device, threads"),
    "tensorrt": (_tensorrt, "TensorRT engine, state in device buffers; batch, device_id, fp16"),
}


# name -> availability probe (returns a version line, raises UnsupportedError) of a registered runtime.
PROBES: dict[str, Callable[[], str]] = {}


def register_runtime(name: str, factory: Callable[..., Session], description: str, probe: Callable[[], str]) -> None:
    """Add a runtime from a layer above; a name already registered is refused."""
    if name in RUNTIMES:
        raise ValueError(f"runtime '{name}' is already registered")
    RUNTIMES[name] = (factory, description)
    PROBES[name] = probe


def list_runtimes() -> list[str]:
    return list(RUNTIMES)


def open_session(model_path: str | Path | Any, runtime: str, **options: Any) -> Session:
    """Open ``model_path`` (an edgemem ONNX graph; for ``torch`` also a preset or model) on ``runtime``.

    ``precision`` (any runtime) is checked against what this machine runs (``runtimes.precisions``)."""
    if runtime not in RUNTIMES:
        raise UnsupportedError(f"unknown runtime '{runtime}'; available: {', '.join(RUNTIMES)}")
    options = {k: v for k, v in options.items() if v is not None}
    if "precision" in options:  # checked against this machine for every runtime, never ignored
        from edgemem.runtimes.precisions import precision_options

        options.update(precision_options(runtime, options.pop("precision"), options.get("device", "CPU")))
    try:
        return RUNTIMES[runtime][0](model_path, **options)
    except TypeError as e:
        if "unexpected keyword argument" in str(e):
            raise UnsupportedError(f"runtime '{runtime}' does not take option {str(e).split()[-1]}") from None
        raise

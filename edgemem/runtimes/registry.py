"""The runtime registry: one entry per runtime (name, factory, description, device, precisions, probe),
and ``open_session(model_path, runtime, **options)``, the one entry point to every runtime adapter."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgemem.errors import UnsupportedError
from edgemem.runtimes import precisions as P
from edgemem.runtimes import probes
from edgemem.runtimes.base import Session


@dataclass(frozen=True)
class RuntimeEntry:
    """Everything edgemem knows about one runtime."""

    name: str
    factory: Callable[..., Session]  # (graph path or model, **options) -> Session
    description: str  # one line: what it is and its options
    device: str  # "cpu" or "gpu": where its steps run (bench pins GPU cells and tags results by it)
    precisions: Callable[[str], P.Support]  # device -> {precision: None if it runs here, else why not}
    probe: Callable[[], str]  # a version line, or UnsupportedError with the reason it cannot run here
    takes_model: bool = False  # opened on a model (preset, config, nn.Module) rather than on an exported graph


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


_GRAPH_RUNTIMES = [
    RuntimeEntry("ort-cpu", _ort_cpu, "ONNX Runtime, CPU provider; batch, threads, inter_threads, spinning",
                 "cpu", P.ort_cpu, probes.ort_provider("CPUExecutionProvider")),
    RuntimeEntry("ort-cuda", _ort_device("cuda"), "ONNX Runtime, CUDA provider, state on device; batch, device_id",
                 "gpu", P.ort_cuda, probes.ort_provider("CUDAExecutionProvider")),
    RuntimeEntry("ort-tensorrt", _ort_device("tensorrt"), "ONNX Runtime, TensorRT provider; batch, device_id, fp16",
                 "gpu", P.ort_tensorrt, probes.ort_provider("TensorrtExecutionProvider")),
    RuntimeEntry("openvino", _openvino, "OpenVINO, explicit state; batch, precision (as the CPU has), device, threads",
                 "cpu", P.openvino_support, probes.openvino),
    RuntimeEntry("openvino-stateful", _openvino_stateful,
                 "OpenVINO, state in variables; batch, precision, device, threads", "cpu", P.openvino_support,
                 probes.openvino),
    RuntimeEntry("tensorrt", _tensorrt, "TensorRT engine, state in device buffers; batch, device_id, fp16",
                 "gpu", P.tensorrt, probes.tensorrt),
]  # fmt: skip

# name -> entry. The graph runtimes are listed here; a layer above adds its own with
# ``register_runtime`` (``edgemem.export`` registers the PyTorch runtimes ``torch`` and ``torch-cuda`` when imported).
RUNTIMES: dict[str, RuntimeEntry] = {e.name: e for e in _GRAPH_RUNTIMES}


def register_runtime(
    name: str,
    factory: Callable[..., Session],
    description: str,
    probe: Callable[[], str],
    *,
    device: str = "cpu",
    precisions: Callable[[str], P.Support] | None = None,
    takes_model: bool = False,
) -> RuntimeEntry:
    """Add a runtime from a layer above (``precisions``: default f32 only; ``takes_model``: it opens
    models, not graphs); a name already registered is refused."""
    if name in RUNTIMES:
        raise ValueError(f"runtime '{name}' is already registered")
    if device not in ("cpu", "gpu"):
        raise ValueError(f"runtime device must be 'cpu' or 'gpu', got {device!r}")
    RUNTIMES[name] = RuntimeEntry(
        name, factory, description, device, precisions or P.f32_only(name), probe, takes_model
    )
    return RUNTIMES[name]


def entry(runtime: str) -> RuntimeEntry:
    """The registry entry of ``runtime``; UnsupportedError listing the registered ones otherwise."""
    if runtime not in RUNTIMES:
        raise UnsupportedError(f"unknown runtime '{runtime}'; available: {', '.join(RUNTIMES)}")
    return RUNTIMES[runtime]


def list_runtimes() -> list[str]:
    return list(RUNTIMES)


def takes_model(runtime: str) -> bool:
    """Whether ``runtime`` opens a model it builds (the PyTorch runtimes) rather than an exported graph."""
    return runtime in RUNTIMES and RUNTIMES[runtime].takes_model


def runs_on_gpu(runtime: str) -> bool:
    """Whether ``runtime`` is registered as a GPU runtime (unknown names, e.g. from old results: no)."""
    return runtime in RUNTIMES and RUNTIMES[runtime].device == "gpu"


def open_session(model_path: str | Path | Any, runtime: str, **options: Any) -> Session:
    """Open ``model_path`` (an edgemem ONNX graph; for ``torch`` also a preset or model) on ``runtime``.

    ``precision`` (any runtime) is checked against what this machine runs (``runtimes.precisions``)."""
    factory = entry(runtime).factory
    options = {k: v for k, v in options.items() if v is not None}
    if "precision" in options:  # checked against this machine for every runtime, never ignored
        options.update(P.precision_options(runtime, options.pop("precision"), options.get("device", "CPU")))
    try:
        return factory(model_path, **options)
    except TypeError as e:
        if "unexpected keyword argument" in str(e):
            raise UnsupportedError(f"runtime '{runtime}' does not take option {str(e).split()[-1]}") from None
        raise

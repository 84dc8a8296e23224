"""Which runtimes can run here, and why not: ``edgemem runtimes [--json]``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from edgemem.errors import UnsupportedError
from edgemem.optional import install_hint, require
from edgemem.runtimes.precisions import supported_precisions
from edgemem.runtimes.registry import PROBES, RUNTIMES


@dataclass(frozen=True)
class Availability:
    runtime: str
    available: bool
    detail: str  # version / device when available, the reason when not
    precisions: list[str] = field(default_factory=list)  # what it really runs here (runtimes.precisions)

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def _ort(provider: str) -> Callable[[], str]:
    def probe() -> str:
        try:
            import onnxruntime as ort
        except ImportError:
            raise UnsupportedError("package onnxruntime not installed") from None
        if provider not in ort.get_available_providers():
            raise UnsupportedError(f"onnxruntime {ort.__version__} has no {provider}: {install_hint('gpu')}")
        if provider != "CPUExecutionProvider":
            _probe_provider(ort, provider)
        return f"onnxruntime {ort.__version__}, {provider}"

    return probe


def _probe_provider(ort: Any, provider: str) -> None:
    """Open a one-node graph on ``provider``: ORT falls back to the CPU silently when it cannot load."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    try:
        sess = ort.InferenceSession(model.SerializeToString(), providers=[provider])
    except Exception as e:  # provider libraries missing raise at session creation
        raise UnsupportedError(f"{provider} failed to load: {str(e).splitlines()[0]}") from None
    if provider not in sess.get_providers():
        raise UnsupportedError(f"{provider} fell back to {', '.join(sess.get_providers())} (no GPU or CUDA libraries)")


def _openvino() -> str:
    ov = require("openvino", extra="openvino")
    from edgemem.runtimes.openvino import shared_core

    devices = shared_core().available_devices
    if "CPU" not in devices:
        raise UnsupportedError(f"OpenVINO has no CPU device (devices: {devices})")
    return f"openvino {ov.get_version().split('-')[0]}, devices {','.join(devices)}"


def _tensorrt() -> str:
    from edgemem.runtimes.tensorrt import gpu_count, import_tensorrt

    trt, cudart = import_tensorrt()
    if gpu_count(cudart) == 0:
        raise UnsupportedError("no NVIDIA GPU found")
    return f"tensorrt {trt.__version__}"


_PROBES: dict[str, Callable[[], str]] = {
    "ort-cpu": _ort("CPUExecutionProvider"),
    "ort-cuda": _ort("CUDAExecutionProvider"),
    "ort-tensorrt": _ort("TensorrtExecutionProvider"),
    "openvino": _openvino,
    "openvino-stateful": _openvino,
    "tensorrt": _tensorrt,
}


def check(runtime: str) -> Availability:
    try:
        probe = _PROBES.get(runtime) or PROBES[runtime]
        return Availability(runtime, True, probe(), supported_precisions(runtime))
    except UnsupportedError as e:
        return Availability(runtime, False, str(e))


def availability() -> list[Availability]:
    """One entry per registered runtime, in registry order."""
    return [check(r) for r in RUNTIMES]

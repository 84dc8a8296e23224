"""Availability probes of the graph runtimes: each returns a version line, or raises UnsupportedError
with the reason it cannot run here (``runtimes.registry`` pairs each runtime with its probe)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from edgemem.errors import UnsupportedError
from edgemem.optional import install_hint, require
from edgemem.runtimes.ort import inference_session


def ort_provider(provider: str) -> Callable[[], str]:
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
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    try:
        sess = inference_session(ort, model.SerializeToString(), providers=[provider])
    except Exception as e:  # provider libraries missing raise at session creation
        raise UnsupportedError(f"{provider} failed to load: {str(e).splitlines()[0]}") from None
    if provider not in sess.get_providers():
        raise UnsupportedError(f"{provider} fell back to {', '.join(sess.get_providers())} (no GPU or CUDA libraries)")


def openvino() -> str:
    ov = require("openvino", extra="openvino")
    from edgemem.runtimes.openvino import shared_core

    devices = shared_core().available_devices
    if "CPU" not in devices:
        raise UnsupportedError(f"OpenVINO has no CPU device (devices: {devices})")
    return f"openvino {ov.get_version().split('-')[0]}, devices {','.join(devices)}"


def tensorrt() -> str:
    from edgemem.runtimes.tensorrt import gpu_count, import_tensorrt

    trt, cudart = import_tensorrt()
    if gpu_count(cudart) == 0:
        raise UnsupportedError("no NVIDIA GPU found")
    return f"tensorrt {trt.__version__}"

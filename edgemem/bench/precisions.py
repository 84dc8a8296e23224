"""Which graph and which session options a runtime runs a precision with.

bf16 is an inference hint on the f32 graph (OpenVINO); fp16 is ONNX Runtime's TensorRT fp16 option on
the f32 graph for ort-tensorrt and the exported fp16 graph elsewhere (native TensorRT builds it strongly
typed, the one fp16 path TensorRT 10 and 11 share); int8 is its own (statically quantised, QDQ) graph,
which OpenVINO compiles with an explicit f32 hint (int8 kernels come from the graph). A runtime that
cannot run a precision says so when the session opens (UnsupportedError): the cell is then
recorded as skipped, with that reason (``runtimes.precisions.check_precision``: bf16 on a CPU without
AVX512-BF16/AMX, ...).
"""

from __future__ import annotations

from typing import Any

from edgemem.runtimes.precisions import PRECISIONS, check_precision

__all__ = ["PRECISIONS", "graph_precision", "session_options"]
_OPENVINO = ("openvino", "openvino-stateful")
_TENSORRT = ("ort-tensorrt",)  # fp16 as a provider option on the f32 graph


def graph_precision(runtime: str, precision: str) -> str:
    """The precision of the exported graph a cell opens (f32, fp16 or int8)."""
    if precision == "bf16" or (precision == "fp16" and runtime in _TENSORRT):
        return "f32"
    return precision


def session_options(runtime: str, precision: str) -> dict[str, Any]:
    """Keyword options for ``open_session`` beyond the graph; UnsupportedError when the runtime
    cannot run ``precision`` here (the reason names the missing capability)."""
    precision = check_precision(runtime, precision)
    if runtime in _OPENVINO:
        return {"precision": "bf16" if precision == "bf16" else "f32"}
    if precision == "fp16" and runtime in _TENSORRT:
        return {"fp16": True}
    return {}

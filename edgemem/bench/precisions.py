"""Which graph and which session options a runtime runs a precision with.

bf16 is an inference hint on the f32 graph (OpenVINO); fp16 is a builder flag on the f32 graph for
TensorRT and its own exported graph elsewhere; int8 is its own (statically quantised, QDQ) graph,
which OpenVINO compiles with an explicit f32 hint (int8 kernels come from the graph). A runtime that
cannot run a precision says so when the session opens (UnsupportedError): the cell is then
recorded as skipped, with that reason.
"""

from __future__ import annotations

from typing import Any

from edgemem.errors import UnsupportedError

PRECISIONS = ("f32", "bf16", "fp16", "int8")
_OPENVINO = ("openvino", "openvino-stateful")
_TENSORRT = ("ort-tensorrt", "tensorrt")


def graph_precision(runtime: str, precision: str) -> str:
    """The precision of the exported graph a cell opens (f32, fp16 or int8)."""
    if precision == "bf16" or (precision == "fp16" and runtime in _TENSORRT):
        return "f32"
    return precision


def session_options(runtime: str, precision: str) -> dict[str, Any]:
    """Keyword options for ``open_session`` beyond the graph; raises UnsupportedError when meaningless."""
    if runtime == "torch" and precision != "f32":
        raise UnsupportedError(f"the torch runtime runs the PyTorch model in f32 only, not {precision}")
    if runtime in _OPENVINO:
        return {"precision": "bf16" if precision == "bf16" else "f32"}
    if precision == "bf16":
        raise UnsupportedError(f"runtime {runtime} has no bf16 mode (OpenVINO has)")
    if precision == "fp16" and runtime in _TENSORRT:
        return {"fp16": True}
    return {}

"""Which precisions each runtime really runs on this machine, why not, and how it runs them.

A runtime's support function (its registry entry's ``precisions``) returns ``{precision: None if it
runs here, else the reason}``; add a precision (or a runtime) by extending its function.
``check_precision`` turns a reason into a one-line ``UnsupportedError`` naming the missing capability:
asking for a precision the device cannot run is never a silent fallback. Precisions are
``edgemem.precision.Precision`` (f32, bf16, fp16, int8, int8+bf16).

How a precision is run: bf16 is an inference hint on the f32 graph (OpenVINO); fp16 is ONNX Runtime's
TensorRT fp16 option on the f32 graph for ort-tensorrt and the exported fp16 graph elsewhere (native
TensorRT builds it strongly typed); int8 is its own (statically quantised, QDQ) graph, which OpenVINO
compiles with an explicit f32 hint and TensorRT (native, or ONNX Runtime's provider) builds in explicit
quantization: the int8 kernels come from the graph; int8+bf16 is that int8 graph on OpenVINO with a bf16
hint, so what the graph leaves in float runs bf16 (``graph_precision`` and
``session_options``, used by bench; ``precision_options`` for ``open_session(precision=)`` on a given graph).
"""

from __future__ import annotations

from typing import Any

from edgemem import hardware
from edgemem.errors import UnsupportedError
from edgemem.precision import Precision

F32, BF16, FP16, INT8, INT8_BF16 = Precision.F32, Precision.BF16, Precision.FP16, Precision.INT8, Precision.INT8_BF16
Support = dict[Precision, str | None]
_NO_BF16_ORT = "ONNX Runtime has no bf16 mode (OpenVINO has, on CPUs with AVX512-BF16 or AMX)"


def f32_only(name: str) -> Any:
    """The support function of a runtime that runs f32 only (``name`` says which)."""

    def support(device: str) -> Support:
        only = f"{name} runs in f32 only"
        return {F32: None, BF16: only, FP16: only, INT8: only, INT8_BF16: only}

    return support


def ort_cpu(device: str) -> Support:
    # fp16: an fp16-compute graph behind f32 I/O (`export --precision fp16`); int8: the quantised graph.
    return {F32: None, BF16: _NO_BF16_ORT, FP16: None, INT8: None, INT8_BF16: _NO_BF16_ORT}


def ort_cuda(device: str) -> Support:
    no_int8 = "ONNX Runtime's CUDA provider has no fused int8 kernels for QDQ graphs; use ort-tensorrt or tensorrt"
    return {F32: None, BF16: _NO_BF16_ORT, FP16: None, INT8: no_int8, INT8_BF16: _NO_BF16_ORT}


def ort_tensorrt(device: str) -> Support:
    # int8: the QDQ graph, built by TensorRT in explicit quantization (``trt_int8_enable``, no calibration table).
    return {F32: None, BF16: _NO_BF16_ORT, FP16: None, INT8: None, INT8_BF16: _NO_BF16_ORT}


def tensorrt(device: str) -> Support:
    # int8: the QDQ graph, built strongly typed (explicit quantization: the graph's Q/DQ decide).
    only = "edgemem builds TensorRT engines in f32, fp16 or int8 only"
    return {F32: None, BF16: only, FP16: None, INT8: None, INT8_BF16: only}


# OpenVINO precision -> the OPTIMIZATION_CAPABILITIES entry it needs, and what provides it on a CPU.
_OV_NEEDS = {
    F32: ("FP32", ""),
    BF16: ("BF16", " (a CPU with AVX512-BF16 or AMX)"),
    FP16: ("FP16", " (a CPU with AVX512-FP16 or AMX-FP16)"),
    INT8: ("INT8", ""),
}


def openvino_support(device: str = "CPU", caps: frozenset[str] | None = None) -> Support:
    """From OpenVINO's ``OPTIMIZATION_CAPABILITIES`` of ``device`` (``caps`` to simulate a device)."""
    caps = hardware.openvino_capabilities(device) if caps is None else caps
    if caps is None:
        return dict.fromkeys(Precision, f"OpenVINO has no {device} device here")
    out: Support = {
        p: None if cap in caps else f"OpenVINO's {device} plugin lacks {cap} in OPTIMIZATION_CAPABILITIES{why}"
        for p, (cap, why) in _OV_NEEDS.items()
    }
    out[INT8_BF16] = out[INT8] or out[BF16]  # int8 kernels, and bf16 for what the graph leaves in float
    return out


def support(runtime: str, device: str = "CPU") -> Support:
    """Every precision of ``runtime``: None where it runs here, else the reason."""
    from edgemem.runtimes.registry import entry  # the registry holds each runtime's support function

    return entry(runtime).precisions(device)


def supported_precisions(runtime: str, device: str = "CPU") -> list[str]:
    """The precisions ``runtime`` really runs on this machine."""
    return [p.value for p, why in support(runtime, device).items() if why is None]


def check_precision(runtime: str, precision: str | Precision, device: str = "CPU") -> Precision:
    """The precision if ``runtime`` runs it here; else UnsupportedError with the reason."""
    p = Precision.parse(precision)
    why = support(runtime, device).get(p, f"no {p} mode")
    if why is not None:
        raise UnsupportedError(f"{runtime} cannot run {p} here: {why}")
    return p


def _openvino(runtime: str) -> bool:
    return runtime.startswith("openvino")


def _ov_hint(p: Precision) -> Precision:
    """OpenVINO's inference precision hint for ``p`` (an int8 graph's float remainder: f32, or bf16
    for int8+bf16)."""
    return {INT8: F32, INT8_BF16: BF16}.get(p, p)


def precision_options(runtime: str, precision: str | Precision, device: str = "CPU") -> dict[str, object]:
    """The session options that make ``runtime`` run ``precision`` on a given graph
    (``open_session(precision=)``); UnsupportedError when it cannot here, or when the precision is the
    graph's to choose."""
    p = check_precision(runtime, precision, device)
    if _openvino(runtime):
        return {} if p == INT8 else {"precision": _ov_hint(p).value}
    if p == FP16 and runtime in ("tensorrt", "ort-tensorrt"):
        return {"fp16": True}
    if p != F32:
        raise UnsupportedError(f"{p} on {runtime} comes from the graph: export it with that precision")
    return {}


def graph_precision(runtime: str, precision: str | Precision) -> Precision:
    """The precision of the exported graph that runs ``precision`` on ``runtime`` (f32, fp16 or int8)."""
    p = Precision.parse(precision)
    if p == BF16 or (p == FP16 and runtime == "ort-tensorrt"):
        return F32
    return INT8 if p == INT8_BF16 else p


def session_options(runtime: str, precision: str | Precision) -> dict[str, Any]:
    """Options for ``open_session`` on the ``graph_precision`` graph; UnsupportedError when the runtime
    cannot run ``precision`` here (the reason names the missing capability). OpenVINO always gets an
    explicit inference precision (never its device default)."""
    p = check_precision(runtime, precision)
    if _openvino(runtime):
        return {"precision": _ov_hint(p).value}
    if p == FP16 and runtime == "ort-tensorrt":
        return {"fp16": True}
    return {}


def run_graph_options(runtime: str, have: Precision, asked: str | Precision | None) -> tuple[Precision, dict[str, Any]]:
    """(the precision run, the ``open_session`` options) for a ``have`` graph on ``runtime`` when the
    user asks for ``asked`` (None: the graph's own). A graph computes in its exported precision (bf16:
    an OpenVINO hint on an f32 graph), so asking for another one is refused, never ignored; so is
    one this machine cannot run."""
    p = have if asked is None else Precision.parse(asked)
    want = graph_precision(runtime, p)
    if want != have:
        raise UnsupportedError(
            f"--precision {p} on {runtime} needs a graph exported in {want}, this one is {have}"
            + ("" if want == F32 else f" (export one with --precision {want})")
        )
    return p, session_options(runtime, p)

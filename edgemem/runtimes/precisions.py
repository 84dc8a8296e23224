"""Which precisions each runtime really runs on this machine, and why not.

One function per runtime returns ``{precision: None if it runs here, else the reason}``; add a
precision (or a runtime) by extending its function. ``check_precision`` turns a reason into a
one-line ``UnsupportedError`` naming the missing capability: asking for a precision the device
cannot run is never a silent fallback. Precision names: f32, bf16, fp16, int8 (aliases fp32, f16).
"""

from __future__ import annotations

from collections.abc import Callable

from edgemem import hardware
from edgemem.errors import UnsupportedError

PRECISIONS = ("f32", "bf16", "fp16", "int8")
_ALIASES = {"fp32": "f32", "f16": "fp16"}

Support = dict[str, str | None]


def canonical(precision: str) -> str:
    """``f32``/``bf16``/``fp16``/``int8`` for any accepted spelling; UnsupportedError otherwise."""
    p = _ALIASES.get(precision, precision)
    if p not in PRECISIONS:
        raise UnsupportedError(f"unknown precision '{precision}'; use one of {', '.join(PRECISIONS)}")
    return p


def _torch(device: str) -> Support:
    only = "the torch runtime runs the PyTorch model in f32 only"
    return {"f32": None, "bf16": only, "fp16": only, "int8": only}


def _ort_cpu(device: str) -> Support:
    return {
        "f32": None,
        "bf16": "ONNX Runtime has no bf16 mode (OpenVINO has, on CPUs with AVX512-BF16 or AMX)",
        "fp16": None,  # an fp16-compute graph behind fp32 I/O (`export --precision fp16`)
        "int8": None,  # the dynamically quantised graph (`export --quantize int8`)
    }


def _ort_gpu(device: str) -> Support:
    return {
        "f32": None,
        "bf16": "ONNX Runtime has no bf16 mode (OpenVINO has, on CPUs with AVX512-BF16 or AMX)",
        "fp16": None,
        "int8": "no int8 path on the CUDA/TensorRT providers in edgemem",
    }


def _tensorrt(device: str) -> Support:
    return {
        "f32": None,
        "bf16": "edgemem builds TensorRT engines in f32 or fp16 only",
        "fp16": None,
        "int8": "no int8 path for TensorRT in edgemem",
    }


# OpenVINO precision -> the OPTIMIZATION_CAPABILITIES entry it needs, and what provides it on a CPU.
_OV_NEEDS = {
    "f32": ("FP32", ""),
    "bf16": ("BF16", " (a CPU with AVX512-BF16 or AMX)"),
    "fp16": ("FP16", " (a CPU with AVX512-FP16 or AMX-FP16)"),
    "int8": ("INT8", ""),
}


def openvino_support(device: str = "CPU", caps: frozenset[str] | None = None) -> Support:
    """From OpenVINO's ``OPTIMIZATION_CAPABILITIES`` of ``device`` (``caps`` to simulate a device)."""
    caps = hardware.openvino_capabilities(device) if caps is None else caps
    if caps is None:
        return dict.fromkeys(PRECISIONS, f"OpenVINO has no {device} device here")
    return {
        p: None if cap in caps else f"OpenVINO's {device} plugin lacks {cap} in OPTIMIZATION_CAPABILITIES{why}"
        for p, (cap, why) in _OV_NEEDS.items()
    }


def _openvino(device: str) -> Support:
    return openvino_support(device)


_SUPPORT: dict[str, Callable[[str], Support]] = {
    "torch": _torch,
    "ort-cpu": _ort_cpu,
    "ort-cuda": _ort_gpu,
    "ort-tensorrt": _ort_gpu,
    "openvino": _openvino,
    "openvino-stateful": _openvino,
    "tensorrt": _tensorrt,
}


def support(runtime: str, device: str = "CPU") -> Support:
    """Every precision of ``runtime``: None where it runs here, else the reason."""
    if runtime not in _SUPPORT:
        raise UnsupportedError(f"unknown runtime '{runtime}'")
    return _SUPPORT[runtime](device)


def supported_precisions(runtime: str, device: str = "CPU") -> list[str]:
    """The precisions ``runtime`` really runs on this machine."""
    return [p for p, why in support(runtime, device).items() if why is None]


def check_precision(runtime: str, precision: str, device: str = "CPU") -> str:
    """The canonical precision if ``runtime`` runs it here; else UnsupportedError with the reason."""
    p = canonical(precision)
    why = support(runtime, device).get(p, f"no {p} mode")
    if why is not None:
        raise UnsupportedError(f"{runtime} cannot run {p} here: {why}")
    return p


def precision_options(runtime: str, precision: str, device: str = "CPU") -> dict[str, object]:
    """The session options that make ``runtime`` run ``precision`` (``open_session(precision=)``);
    UnsupportedError when it cannot here, or when the precision is the graph's to choose."""
    p = check_precision(runtime, precision, device)
    if runtime.startswith("openvino") and p != "int8":
        return {"precision": p}
    if p == "fp16" and runtime in ("tensorrt", "ort-tensorrt"):
        return {"fp16": True}
    if p != "f32":
        raise UnsupportedError(f"{p} on {runtime} comes from the graph: export it with that precision")
    return {}

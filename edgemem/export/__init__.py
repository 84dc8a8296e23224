"""Export of streaming models to stateful ONNX graphs, and their verification.

``to_onnx`` (``edgemem.export.onnx``), ``verify_graph`` (``edgemem.export.verify``) and
``reference_model`` (``edgemem.export.reference``) are imported lazily, so that the CLI starts fast.
"""

from __future__ import annotations

from typing import Any

_LAZY = {
    "to_onnx": "edgemem.export.onnx",
    "ExportResult": "edgemem.export.onnx",
    "VerificationError": "edgemem.export.onnx",
    "verify_graph": "edgemem.export.verify",
    "VerifyReport": "edgemem.export.verify",
    "Tolerance": "edgemem.export.verify",
    "TOLERANCES": "edgemem.export.verify",
    "reference_model": "edgemem.export.reference",
    "make_stream": "edgemem.export.stream",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'edgemem.export' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_LAZY[name]), name)

"""Export of streaming models to stateful ONNX graphs, and their verification.

``to_onnx`` (``edgemem.export.onnx``), ``verify_graph`` (``edgemem.export.verify``) and
``reference_model`` (``edgemem.export.reference``) are imported lazily, so that the CLI starts fast.

Importing this package registers the PyTorch runtimes ``torch`` and ``torch-cuda`` (``TorchSession``,
which builds models) in the graph-only runtime registry below it (``edgemem.runtimes.registry``).
"""

from __future__ import annotations

from typing import Any

from edgemem.runtimes.base import Session
from edgemem.runtimes.precisions import f32_only
from edgemem.runtimes.registry import register_runtime

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
    "TorchSession": "edgemem.export.torch_session",
    "resolve_graph": "edgemem.export.model_source",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'edgemem.export' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_LAZY[name]), name)


def _torch_session(model: Any, **options: Any) -> Session:
    from edgemem.export.torch_session import TorchSession

    return TorchSession(model, **options)


def _torch_cuda_session(model: Any, **options: Any) -> Session:
    from edgemem.errors import InputError
    from edgemem.export.torch_session import TorchSession

    if "device" in options:
        raise InputError("torch-cuda runs on the CUDA device; use the runtime 'torch' with device=... for another")
    _torch_cuda_probe()  # no CUDA device: UnsupportedError with the reason (a bench cell is skipped, not failed)
    return TorchSession(model, device="cuda", **options)


def _torch_probe() -> str:
    import torch

    return f"torch {torch.__version__}"


def _torch_cuda_probe() -> str:
    import torch

    from edgemem.errors import UnsupportedError

    if not torch.cuda.is_available():
        build = f"built for CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        raise UnsupportedError(f"torch {torch.__version__} ({build}) sees no CUDA device")
    return f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name(0)}"


register_runtime(
    "torch",
    _torch_session,
    "PyTorch reference (StreamingModel.step); batch, threads, checkpoint, device",
    _torch_probe,
    precisions=f32_only("the torch runtime (the PyTorch model)"),
    takes_model=True,
)
register_runtime(
    "torch-cuda",
    _torch_cuda_session,
    "PyTorch eager on the CUDA device, fp32 without TF32, state on device; batch, checkpoint",
    _torch_cuda_probe,
    device="gpu",
    precisions=f32_only("the torch-cuda runtime (the PyTorch model)"),
    takes_model=True,
)

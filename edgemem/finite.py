"""NaN/inf checks for state files, checkpoints and step outputs: a non-finite value is an error, never passed on."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from edgemem.errors import NonFiniteError


def count_nonfinite(value: Any) -> int:
    """How many NaN/inf values a numpy array or torch tensor holds (0 for integer and bool ones)."""
    if hasattr(value, "is_floating_point"):  # a torch tensor, without importing torch here
        if not (value.is_floating_point() or value.is_complex()):
            return 0
        finite = value.isfinite()
        return 0 if bool(finite.all()) else int((~finite).sum())
    arr = np.asarray(value)
    if arr.dtype.kind not in "fc":
        return 0
    finite = np.isfinite(arr)
    return 0 if finite.all() else int(arr.size - np.count_nonzero(finite))


def check_finite(tensors: Mapping[str, Any], where: str) -> None:
    """Raise ``NonFiniteError`` naming ``where`` and every tensor of ``tensors`` holding NaN or inf."""
    bad = {name: n for name, v in tensors.items() if (n := count_nonfinite(v))}
    if bad:
        shown = ", ".join(f"'{k}' ({n} of {_size(tensors[k])})" for k, n in list(bad.items())[:4])
        more = f" and {len(bad) - 4} more tensors" if len(bad) > 4 else ""
        raise NonFiniteError(f"{where}: NaN or infinite values in {shown}{more}")


def _size(value: Any) -> int:
    return int(value.numel()) if hasattr(value, "numel") else int(np.asarray(value).size)

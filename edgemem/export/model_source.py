"""Turn the MODEL a user gives ``edgemem stream`` into what ``open_session`` takes.

An ``.onnx`` path is used as is. A preset name or YAML config is built (with its checkpoint, if
given) and, for every runtime but ``torch``, exported once into a cache directory keyed by the
model, checkpoint and batch, then reused.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from edgemem.errors import InputError

DEFAULT_CACHE = Path("~/.cache/edgemem/graphs")


def resolve_graph(
    model: str, runtime: str, *, batch: int, checkpoint: str | None = None, cache_dir: Path | None = None
) -> Any:
    """An ONNX path for ``open_session`` (a model object for ``torch``)."""
    path = Path(model)
    if path.suffix.lower() == ".onnx":
        if not path.is_file():
            raise InputError(f"model file not found: {path}")
        if checkpoint:
            raise InputError("--checkpoint applies to presets and configs, not to ONNX graphs")
        return path
    from edgemem.models.resolve import resolve_model

    built = resolve_model(model, checkpoint)
    if runtime == "torch":
        return built
    key = hashlib.sha256(f"{model}|{checkpoint}|{batch}".encode())
    if checkpoint:
        key.update(str(Path(checkpoint).stat().st_mtime_ns).encode())
    out = (cache_dir or DEFAULT_CACHE).expanduser() / f"{path.stem}-b{batch}-{key.hexdigest()[:12]}.onnx"
    if not out.is_file():
        from edgemem.export.onnx import to_onnx

        out.parent.mkdir(parents=True, exist_ok=True)
        to_onnx(built, out, batch=batch)
    return out

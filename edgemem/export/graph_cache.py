"""The one graph cache: exported graphs of presets/configs, reused while nothing that made them changed.

A graph is cached under a ``GraphKey``: the model (a preset or shipped-weights name, or a YAML
config with the sha256 of its text), the weights (the sha256 of the checkpoint's *content*, or of the
shipped file, or ``random``), the export options (batch, precision, frame scale, opset) and the edgemem
version. Editing a checkpoint in place, upgrading edgemem or asking for another precision gives
another file; the file name starts with what it holds (``<model>-b<batch>-<precision>-fs<k>-<key>.onnx``).
``edgemem stream`` (``model_source.resolve_graph``) and ``edgemem bench`` (``bench.harness.graph_file``)
both use it.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import edgemem
from edgemem.export.onnx import DEFAULT_OPSET
from edgemem.models.pretrained import sha256_of
from edgemem.precision import Precision

DEFAULT_CACHE = Path("~/.cache/edgemem/graphs")
_YAML = (".yaml", ".yml")


def weights_id(checkpoint: str | Path | None = None, shipped: dict[str, Any] | None = None) -> str:
    """What a graph's weights are: ``sha256:<hex>`` of the checkpoint file's content or of the shipped
    weights file (its zoo card's checksum), else ``random``."""
    if checkpoint is not None:
        return "sha256:" + sha256_of(checkpoint)
    if shipped is not None:
        return "sha256:" + (shipped.get("sha256") or sha256_of(shipped["path"]))
    return "random"


@dataclass(frozen=True)
class GraphKey:
    """Everything an exported graph depends on."""

    model: str  # preset / shipped-weights name, or a YAML config path
    weights: str  # weights_id(...)
    batch: int | None  # None: dynamic
    precision: str = Precision.F32.value
    frame_scale: int = 1
    opset: int = DEFAULT_OPSET
    config_sha256: str | None = None  # a YAML config's text
    edgemem: str = edgemem.__version__

    @classmethod
    def of(cls, model: str, weights: str, *, batch: int | None, precision: str | Precision = Precision.F32,
           frame_scale: int = 1, opset: int = DEFAULT_OPSET) -> GraphKey:  # fmt: skip
        config = sha256_of(model) if model.lower().endswith(_YAML) and Path(model).is_file() else None
        return cls(model, weights, batch, Precision.parse(precision).value, frame_scale, opset, config)

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()

    def filename(self) -> str:
        name = Path(self.model).stem if self.model.lower().endswith(_YAML) else self.model
        slug = re.sub(r"[^A-Za-z0-9_.]+", "-", name).strip("-")
        batch = "dyn" if self.batch is None else self.batch
        return f"{slug}-b{batch}-{self.precision}-fs{self.frame_scale}-{self.digest()[:16]}.onnx"


def cached_graph(key: GraphKey, cache_dir: str | Path, export: Callable[[Path], Any]) -> Path:
    """The cached graph of ``key`` in ``cache_dir``; ``export(path)`` writes it (atomically) when absent."""
    path = Path(cache_dir).expanduser() / key.filename()
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        export(path)
    return path

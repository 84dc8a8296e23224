"""``--init``: start training from another checkpoint's weights.

- CM (the paper's stage-wise training): a clip-level checkpoint of the *backbone* (e.g. a
  ``slow_tiny`` run) initialises ``model.backbone``; the CM module starts fresh. A CM checkpoint of
  the same architecture initialises everything.
- MeMViT: a checkpoint of the memory-less MViT of the same architecture initialises everything but
  the memory parameters (compression, memory position tables); a MeMViT checkpoint, everything.
- other models: a checkpoint of the same architecture.

Anything else is a CheckpointError naming the mismatching keys; nothing is loaded then.
"""

from __future__ import annotations

import os
from typing import Any

from torch import nn

from edgemem.errors import CheckpointError
from edgemem.models.checkpoint import load_state_strict, read_pyth
from edgemem.models.cm_model import CMModel

# Parameter names that exist only in a model with memory (MeMViT's compression and memory tables).
_MEMORY_KEYS = ("compress", "_mem", "mem_")


def _strip(state: dict[str, Any]) -> dict[str, Any]:
    return {k.removeprefix("module."): v for k, v in state.items()}


def init_from_checkpoint(model: nn.Module, path: str | os.PathLike[str], family: str) -> str:
    """Load ``path`` into ``model`` as described above; returns a one-line note of what was loaded."""
    state = _strip(read_pyth(path)["model_state"])
    own = model.state_dict()
    if set(state) == set(own):
        load_state_strict(model, state)
        return f"all weights from {path}"
    if family == "cm":
        if not isinstance(model, CMModel):
            raise CheckpointError(f"--init {path}: family 'cm' needs a CM model, got {type(model).__name__}")
        backbone = model.backbone
        if set(state) == set(backbone.state_dict()):
            try:
                load_state_strict(backbone, state)
            except CheckpointError as e:
                raise CheckpointError(f"--init {path}: not a clip-level checkpoint of this backbone: {e}") from None
            return f"backbone from the clip-level checkpoint {path} (stage-wise), CM fresh"
        raise CheckpointError(
            f"--init {path}: neither a checkpoint of this CM model nor of its backbone "
            f"({_diff(state, backbone.state_dict())})"
        )
    if family == "memvit":
        memory_only = {k for k in set(own) - set(state) if any(m in k for m in _MEMORY_KEYS)}
        if memory_only and set(state) == set(own) - memory_only:
            full = dict(model.state_dict())
            full.update(state)
            try:
                load_state_strict(model, full)
            except CheckpointError as e:
                raise CheckpointError(f"--init {path}: {e}") from None
            return f"all but {len(memory_only)} memory tensors from {path}"
    raise CheckpointError(f"--init {path}: checkpoint of another model ({_diff(state, own)})")


def _diff(state: dict[str, Any], own: dict[str, Any]) -> str:
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    parts = []
    if missing:
        parts.append(f"missing {len(missing)} keys, e.g. {missing[0]}")
    if extra:
        parts.append(f"{len(extra)} unexpected keys, e.g. {extra[0]}")
    return "; ".join(parts) or "same keys"

"""Turn what a user types as MODEL (a preset name or a PySlowFast/MeMViT YAML) into a model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from edgemem.errors import EdgememError
from edgemem.models.registry import create_model, is_model

_YAML = (".yaml", ".yml")


def resolve_model(
    spec: str,
    checkpoint: str | None = None,
    *,
    device: str | torch.device = "cpu",
    view: str | None = None,
    **overrides: Any,
) -> Any:
    """Build the model named by ``spec``: a registered preset, or a PySlowFast/MeMViT YAML config.

    ``checkpoint`` (a PySlowFast ``.pyth``) is loaded all-or-nothing. ``device="meta"`` builds
    without allocating weights (for FLOP counting); checkpoints cannot be loaded on meta.
    ``view`` (``train``/``test``, YAML configs only): the input size, ``DATA.TRAIN_CROP_SIZE`` or
    ``DATA.TEST_CROP_SIZE`` (the official test-time view); default ``train``.
    """
    if checkpoint is not None and str(device) == "meta":
        raise EdgememError("a checkpoint cannot be loaded on the meta device")
    path = Path(spec)
    with torch.device(device):
        if path.suffix.lower() in _YAML:
            if not path.is_file():
                raise EdgememError(f"config not found: {path}")
            if overrides:
                raise EdgememError(f"options {sorted(overrides)} apply to presets, not to YAML configs")
            from edgemem.models.pyslowfast import load_pyslowfast

            return load_pyslowfast(path, checkpoint, view=view or "train")
        if view not in (None, "train"):
            raise EdgememError(f"--view {view} applies to PySlowFast YAML configs (their DATA.TEST_CROP_SIZE)")
        if not is_model(spec):
            create_model(spec)  # raises the "unknown model" error listing the presets
        model = create_model(spec, **overrides)
    if checkpoint is not None:
        load_checkpoint(model, checkpoint)
    return model


def load_checkpoint(model: Any, checkpoint: str) -> None:
    """Load a checkpoint all-or-nothing: PySlowFast ``.pyth`` for every family; for clip backbones
    and CM models also Caffe2 ``.pkl`` and PyTorchVideo-named ``.pyth`` (see clip_checkpoint)."""
    from edgemem.models.clip_base import ClipBackbone
    from edgemem.models.cm_model import CMModel

    if isinstance(model, ClipBackbone | CMModel):
        from edgemem.models.clip_checkpoint import load_clip_checkpoint

        load_clip_checkpoint(model, checkpoint)
        return
    from edgemem.models.checkpoint import load_state_strict, read_pyth

    load_state_strict(model, read_pyth(checkpoint)["model_state"])

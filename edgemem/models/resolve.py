"""Turn what a user types as MODEL (a preset name or a PySlowFast/MeMViT YAML) into a model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from edgemem.errors import CheckpointError, EdgememError
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

    ``checkpoint`` (a PySlowFast ``.pyth``) is loaded all-or-nothing; one edgemem wrote (a training
    run's or a shipped zoo file) carries its model card, which sets the head size and class names
    (a card of another preset is an error naming the MODEL to use). ``device="meta"`` builds
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
        check_view(spec, view)
        if not is_model(spec):
            create_model(spec)  # raises the "unknown model" error listing the presets
        if checkpoint is not None and (trained := _edgemem_checkpoint(spec, checkpoint, overrides)) is not None:
            return trained
        model = create_model(spec, **overrides)
    if checkpoint is not None:
        load_checkpoint(model, checkpoint)
    return model


def check_view(spec: str, view: str | None) -> None:
    """Refuse a ``view`` other than ``train`` for anything but a PySlowFast YAML config."""
    if view not in (None, "train") and Path(spec).suffix.lower() not in _YAML:
        raise EdgememError(f"--view {view} applies to PySlowFast YAML configs (their DATA.TEST_CROP_SIZE)")


def _edgemem_checkpoint(preset: str, checkpoint: str, overrides: dict[str, Any]) -> Any:
    """``preset`` with the weights of a checkpoint edgemem wrote (training runs, shipped zoo files): the
    model its card describes (head size, class names, frame scale), or with ``overrides`` (e.g. a
    frame-scaled baseline of the same weights) the preset at the card's head size. None for a
    checkpoint without an edgemem card (official and foreign files load as they are)."""
    from edgemem.models.checkpoint import card_of, load_state_strict, model_from_checkpoint, read_pyth

    if Path(checkpoint).suffix.lower() == ".pkl":
        return None
    ckpt = read_pyth(checkpoint)
    card = card_of(ckpt, checkpoint, required=False)
    if card is None:
        return None
    trained_as = card.name or card.source
    if trained_as != preset:
        zoo = _zoo_name_of(checkpoint)
        hint = f"`{trained_as}`" + (f" or the shipped weights' name `{zoo}` (no --checkpoint)" if zoo else "")
        raise CheckpointError(
            f"{checkpoint} holds a '{trained_as}' model ({card.num_classes} classes), not '{preset}': use MODEL {hint}"
        )
    if not overrides:
        return model_from_checkpoint(ckpt, checkpoint, card)
    model = create_model(preset, **({"num_classes": card.num_classes} | overrides))
    load_state_strict(model, ckpt["model_state"])
    if card.class_names:
        model.class_names = list(card.class_names)
    return model


def _zoo_name_of(checkpoint: str) -> str | None:
    """The shipped zoo entry whose weights are this file (by sha256), if any."""
    from edgemem.models.pretrained import sha256_of, zoo_cards

    digest = sha256_of(checkpoint)
    return next((name for name, c in zoo_cards().items() if c.get("sha256") == digest), None)


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

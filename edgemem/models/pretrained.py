"""Shipped weights: ``<name>.yaml`` model cards next to ``<name>.pyth`` checkpoints in ``edgemem/zoo/``.

The zoo is package data: it is installed with the package (wheel or editable) and found with
``importlib.resources``, never by a path relative to a source checkout. A zoo card names the
``preset`` it was trained from, the checkpoint ``file`` and its ``sha256``, the data it was trained
on and its ``metrics``. ``create_model(preset, pretrained=True)`` loads the zoo entry marked
``default: true`` for that preset; ``create_model(zoo_name)`` loads that entry.
"""

from __future__ import annotations

import hashlib
import os
from importlib.resources import files
from pathlib import Path
from typing import Any

import yaml

from edgemem import strict_yaml
from edgemem.errors import CheckpointError, EdgememError


def zoo_dir() -> Path:
    """The folder of the shipped cards and weights inside the installed ``edgemem`` package."""
    root = files("edgemem") / "zoo"
    if not isinstance(root, Path):  # a zipped install: torch.load and the sha256 check need real files
        raise CheckpointError(f"edgemem's shipped weights are not plain files ({root}); install edgemem unzipped")
    return root


def zoo_cards(folder: str | os.PathLike[str] | None = None) -> dict[str, dict[str, Any]]:
    """Every zoo card by name (the YAML file's stem); cards without a checkpoint file are skipped."""
    root = Path(folder) if folder is not None else zoo_dir()
    cards: dict[str, dict[str, Any]] = {}
    if not root.is_dir():
        return cards
    for path in sorted(root.glob("*.yaml")):
        try:
            card = strict_yaml.load(path.read_text())
        except yaml.YAMLError as e:
            raise CheckpointError(f"malformed zoo card {path}: {e}") from None
        if not isinstance(card, dict) or "file" not in card or "preset" not in card:
            continue
        card = dict(card, name=path.stem, path=str(root / card["file"]))
        cards[path.stem] = card
    return cards


def is_zoo_name(name: str) -> bool:
    return name in zoo_cards()


def default_entry(preset: str) -> dict[str, Any]:
    """The zoo card holding the default weights of ``preset``."""
    matches = [c for c in zoo_cards().values() if c["preset"] == preset]
    if not matches:
        raise EdgememError(f"no shipped weights for '{preset}' in {zoo_dir()}")
    defaults = [c for c in matches if c.get("default")]
    return (defaults or matches)[0]


def sha256_of(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_zoo(entry: dict[str, Any], **overrides: Any) -> Any:
    """Build the zoo entry's model with its weights (checksum verified), in eval mode."""
    from edgemem.models.checkpoint import card_of, model_from_checkpoint, read_pyth

    path = Path(entry["path"])
    if not path.is_file():
        raise CheckpointError(f"zoo weights '{entry['name']}' missing: {path}")
    want = entry.get("sha256")
    if want and sha256_of(path) != want:
        raise CheckpointError(f"zoo weights {path} do not match the sha256 of {entry['name']}.yaml")
    ckpt = read_pyth(path)
    card = card_of(ckpt, path)
    assert card is not None
    if overrides:
        trained = {**card.config, "clip": card.clip, "frame_scale": card.frame_scale, "num_classes": card.num_classes}
        bad = {k: v for k, v in overrides.items() if trained.get(k) != v}
        if bad:
            raise EdgememError(f"shipped weights '{entry['name']}' were trained with other settings than {bad}")
    model = model_from_checkpoint(ckpt, path, card)
    # The zoo entry names the shipped memory-less model it is compared with (its card predates contract 2).
    model.backbone_preset = entry.get("backbone") or card.backbone
    if not card.class_names and (names := (entry.get("dataset") or {}).get("class_names")):
        model.class_names = list(names)
    return model.eval()

"""The shipped weights (``edgemem/zoo``): a preset's default entry is that preset's architecture."""

from __future__ import annotations

import pytest

from edgemem.models import create_model
from edgemem.models.pretrained import load_zoo, zoo_cards

DEFAULTS = sorted(n for n, c in zoo_cards().items() if c.get("default"))


def test_every_default_is_found():
    assert "memvit_tiny_long_cuematch12" in DEFAULTS and "memvit_tiny_cuematch" in DEFAULTS


@pytest.mark.parametrize("name", DEFAULTS)
def test_default_weights_build_their_preset(name):
    """``create_model(preset, pretrained=True)`` must give the preset's layout with trained weights, not
    the layout of an older preset that the checkpoint's card still holds."""
    card = zoo_cards()[name]
    shipped = load_zoo(card).model_card()
    scale = {"frame_scale": card["frame_scale"]} if card.get("frame_scale", 1) != 1 else {}
    preset = create_model(card["preset"], num_classes=shipped.num_classes, **scale).model_card()
    assert shipped.config == preset.config

"""Imports every model family so that their presets register (see registry._load_all)."""

from edgemem.models import (  # noqa: F401  (CM and its clip backbones)
    cm_model,
    mvit,  # noqa: F401  (MViTv2 / MeMViT)
    resnet3d,
    x3d,
)

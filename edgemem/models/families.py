"""Imports every model family so that their presets register (see registry._load_all)."""

from edgemem.models import cm_model, mvit, mvit_presets, resnet3d, x3d  # noqa: F401

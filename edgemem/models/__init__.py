"""Models: MViT/MeMViT, ResNet3D/X3D clip backbones, Collaborative Memory; registry; importers."""

from edgemem.models.pyslowfast import load_pyslowfast
from edgemem.models.registry import create_model, from_card, is_model, list_models, register_model
from edgemem.models.streaming import State, StreamingModel

__all__ = [
    "State",
    "StreamingModel",
    "create_model",
    "from_card",
    "is_model",
    "list_models",
    "load_pyslowfast",
    "register_model",
]

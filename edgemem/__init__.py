"""edgemem: memory-augmented video models (MeMViT, Collaborative Memory) as stateful graphs."""

from edgemem.errors import EdgememError

__version__ = "0.1.0"
__all__ = ["EdgememError", "__version__"]

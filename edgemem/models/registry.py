"""timm-style model registry: ``register_model``, ``create_model``, ``list_models``, ``from_card``."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from typing import Any

from edgemem.contract import ModelCard
from edgemem.errors import EdgememError

_PRESETS: dict[str, Callable[..., Any]] = {}
_FAMILIES: dict[str, Callable[[ModelCard], Any]] = {}


def register_model(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Decorator: register a preset builder under its function name (a name taken is refused)."""
    if fn.__name__ in _PRESETS:
        raise EdgememError(f"model '{fn.__name__}' is already registered (by {_PRESETS[fn.__name__].__module__})")
    _PRESETS[fn.__name__] = fn
    return fn


def register_family(name: str) -> Callable[[Callable[[ModelCard], Any]], Callable[[ModelCard], Any]]:
    """Decorator: register the builder that rebuilds a model of ``family`` from its model card."""

    def deco(fn: Callable[[ModelCard], Any]) -> Callable[[ModelCard], Any]:
        if name in _FAMILIES:
            raise EdgememError(f"model family '{name}' is already registered (by {_FAMILIES[name].__module__})")
        _FAMILIES[name] = fn
        return fn

    return deco


def _load_all() -> None:
    # Importing the model modules runs their @register_model decorators.
    from edgemem.models import families  # noqa: F401


def list_models(pattern: str = "*") -> list[str]:
    _load_all()
    return sorted(n for n in _PRESETS if fnmatch.fnmatch(n, pattern))


def is_model(name: str) -> bool:
    _load_all()
    return name in _PRESETS


def create_model(name: str, pretrained: bool = False, **overrides: Any) -> Any:
    """Build preset ``name`` (random init); keyword overrides go to the preset's builder.

    ``pretrained=True`` loads the preset's shipped weights, and a shipped weights name
    (``edgemem/zoo/<name>.yaml``, e.g. ``memvit_tiny_cuematch``) builds that model with its weights
    (see ``edgemem.models.pretrained``).
    """
    _load_all()
    if name not in _PRESETS:
        from edgemem.models.pretrained import load_zoo, zoo_cards

        cards = zoo_cards()
        if name in cards:
            return load_zoo(cards[name], **overrides)
        raise EdgememError(f"unknown model '{name}'; available: {', '.join(list_models())}")
    if pretrained:
        from edgemem.models.pretrained import default_entry, load_zoo

        return load_zoo(default_entry(name), **overrides)
    return _PRESETS[name](**overrides)


def from_card(card: ModelCard) -> Any:
    """Rebuild a model (random init) from its model card, as written by ``model.model_card()``."""
    _load_all()
    if card.family not in _FAMILIES:
        raise EdgememError(f"model card of unknown family '{card.family}'")
    model = _FAMILIES[card.family](card)
    model.backbone_preset = card.backbone
    if card.class_names is not None:
        model.class_names = list(card.class_names)
    return model

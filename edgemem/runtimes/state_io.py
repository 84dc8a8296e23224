"""Save and load a session's state with its spec (``.npz`` or ``.safetensors``), atomically.

A state file lets a stream resume in another process or on another runtime: ``save_state(path,
session.get_state(), session.state_spec, session.model_card)`` then ``session.set_state(
load_state(path).state)``. The spec (and the model card, when given) travel in the file.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgemem import contract as C
from edgemem.atomic import atomic_path
from edgemem.errors import StateError, UnsupportedError
from edgemem.finite import check_finite

_SPEC_KEY = "__edgemem_state_spec__"
_CARD_KEY = "__edgemem_model_card__"
FORMATS = (".npz", ".safetensors")


@dataclass(frozen=True)
class SavedState:
    state: dict[str, np.ndarray]
    specs: list[C.TensorSpec]
    card: C.ModelCard | None


def check_suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise UnsupportedError(f"state file must end in {' or '.join(FORMATS)}, got '{path.name}'")
    return suffix


def _safetensors() -> None:
    try:
        import safetensors  # noqa: F401
    except ImportError:
        raise UnsupportedError("safetensors is not installed (pip install safetensors); use a .npz file") from None


def save_state(
    path: str | os.PathLike[str],
    state: dict[str, np.ndarray],
    specs: list[C.TensorSpec],
    card: C.ModelCard | None = None,
) -> Path:
    """Write ``state`` (validated against ``specs``) and its spec to ``path`` (temp file + rename)."""
    path = Path(path)
    fmt = check_suffix(path)
    arrays = {k: np.ascontiguousarray(np.asarray(v)) for k, v in state.items()}
    batch = next(iter(arrays.values())).shape[0] if arrays else None
    C.check_state(arrays, specs, batch=batch)
    check_finite(arrays, f"state to save in {path.name}")
    spec_json = C.specs_to_json(list(specs))
    card_json = json.dumps(card.to_json()) if card is not None else ""
    with atomic_path(path, error=StateError) as tmp:
        if fmt == ".npz":
            with open(tmp, "wb") as f:
                np.savez(f, **arrays, **{_SPEC_KEY: np.array(spec_json), _CARD_KEY: np.array(card_json)})  # type: ignore[arg-type]
        else:
            _safetensors()
            from safetensors.numpy import save_file

            save_file(arrays, str(tmp), metadata={C.META_STATE: spec_json, C.META_MODEL: card_json})
    return path


def load_state(path: str | os.PathLike[str]) -> SavedState:
    """Read a state file written by ``save_state``; the arrays are checked against the stored spec."""
    path = Path(path)
    fmt = check_suffix(path)
    if not path.is_file():
        raise StateError(f"state file not found: {path}")
    try:
        if fmt == ".npz":
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
            spec_json = str(arrays.pop(_SPEC_KEY, ""))
            card_json = str(arrays.pop(_CARD_KEY, ""))
        else:
            _safetensors()
            from safetensors import safe_open

            with safe_open(str(path), framework="numpy") as f:
                meta = f.metadata() or {}
                arrays = {k: f.get_tensor(k) for k in f.keys()}
            spec_json, card_json = meta.get(C.META_STATE, ""), meta.get(C.META_MODEL, "")
    except (OSError, ValueError, KeyError) as e:
        raise StateError(f"cannot read state file {path.name}: {e}") from None
    except Exception as e:  # safetensors raises its own SafetensorError
        raise StateError(f"cannot read state file {path.name}: {type(e).__name__}: {e}") from None
    if not spec_json:
        raise StateError(f"{path.name} carries no state spec: not written by edgemem")
    specs = C.specs_from_json(spec_json)
    batch = next(iter(arrays.values())).shape[0] if arrays else None
    C.check_state(arrays, specs, batch=batch)
    check_finite(arrays, f"state file {path.name}")
    try:
        card = C.stored_card(json.loads(card_json)) if card_json else None
    except (StateError, json.JSONDecodeError) as e:
        raise StateError(f"state file {path.name} carries a malformed model card: {e}") from None
    return SavedState(arrays, specs, card)


# Card fields that say which model (head, classes, clip length) a state was carried by.
_IDENTITY = ("name", "num_classes", "class_names", "frame_scale")


def check_same_model(saved: SavedState, card: C.ModelCard | None, path: str | os.PathLike[str]) -> None:
    """StateError when the model that saved ``saved`` differs from ``card`` in a field both record."""
    if saved.card is None or card is None:
        return
    for k in _IDENTITY:
        mine, theirs = getattr(saved.card, k), getattr(card, k)
        if mine is not None and theirs is not None and mine != theirs:
            raise StateError(
                f"state file {Path(path).name} was saved by another model: {k}={mine!r}, this model has {theirs!r}"
            )

"""The one checkpoint reader: PySlowFast-layout ``.pyth`` files (``read_pyth``), the edgemem card they may
carry (``card_of``), the model such a card describes with its weights (``model_from_checkpoint``), and
all-or-nothing state dict loading (``load_state_strict``). Every other loader (zoo, training runs,
``--checkpoint``, official configs, Caffe2/PyTorchVideo clip weights) goes through these."""

from __future__ import annotations

import json
import os
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, overload

import torch
from torch import Tensor, nn

from edgemem.atomic import atomic_path
from edgemem.contract import ModelCard, stored_card
from edgemem.errors import CheckpointError, StateError
from edgemem.finite import check_finite

if TYPE_CHECKING:
    from edgemem.models.streaming import StreamingModel


def read_pyth(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a PySlowFast ``.pyth`` (``{"model_state", "optimizer_state", "epoch", "cfg"}``).

    Uses ``torch.load(weights_only=True)``, which accepts tensors, numbers, strings and plain
    containers only: official checkpoints contain nothing else, so arbitrary code in a
    foreign pickle is never run (such a file is refused, and the error never suggests
    turning the safe loader off). A bare state dict (a mapping of tensors) is accepted too.
    Weights holding NaN or inf are refused (``NonFiniteError``).
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"checkpoint not found: {p}")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(f"refused checkpoint {p}: {_unsafe_reason(str(e))}") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"cannot read checkpoint {p}: {first}") from None
    if isinstance(obj, Mapping) and "model_state" in obj:
        ckpt = dict(obj)
    elif isinstance(obj, Mapping) and obj and all(isinstance(v, Tensor) for v in obj.values()):
        ckpt = {"model_state": dict(obj)}
    else:
        raise CheckpointError(f"{p} is not a PySlowFast checkpoint (no 'model_state')")
    if not isinstance(ckpt["model_state"], Mapping):
        raise CheckpointError(f"{p}: 'model_state' is not a state dict")
    check_finite(ckpt["model_state"], f"checkpoint {p}")
    return ckpt


@overload
def card_of(ckpt: Mapping[str, Any], where: str | os.PathLike[str]) -> ModelCard: ...
@overload
def card_of(ckpt: Mapping[str, Any], where: str | os.PathLike[str], *, required: Literal[True]) -> ModelCard: ...
@overload
def card_of(ckpt: Mapping[str, Any], where: str | os.PathLike[str], *, required: bool) -> ModelCard | None: ...
def card_of(ckpt: Mapping[str, Any], where: str | os.PathLike[str], *, required: bool = True) -> ModelCard | None:
    """The edgemem model card stored in a checkpoint, typed (``contract.stored_card``: the flat card of
    checkpoints written before contract 2 is read too); a checkpoint without one (official, foreign)
    is a CheckpointError, or None when not ``required``. A malformed card is always an error."""
    text = ckpt.get("edgemem_card")
    if not isinstance(text, str):
        if required:
            raise CheckpointError(f"{where} is not an edgemem checkpoint (no model card)")
        return None
    try:
        card = json.loads(text)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{where}: malformed edgemem model card: {e}") from None
    try:
        return stored_card(card)
    except StateError as e:
        raise CheckpointError(f"{where}: malformed edgemem model card: {e}") from None


def model_from_checkpoint(
    ckpt: Mapping[str, Any], where: str | os.PathLike[str], card: ModelCard | None = None
) -> StreamingModel:
    """The model an edgemem checkpoint's card (or ``card``) describes, with the checkpoint's weights and
    class names."""
    from edgemem.models.registry import from_card

    card = card if card is not None else card_of(ckpt, where)
    model: StreamingModel = from_card(card)  # class names included
    load_state_strict(model, ckpt["model_state"])
    return model


def _unsafe_reason(message: str) -> str:
    """What torch's safe loader refused, without torch's advice to load the file unsafely."""
    lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
    found = [ln for ln in lines if "GLOBAL" in ln or "Unsupported" in ln or "unsupported" in ln]
    what = found[0].rstrip(".") if found else "objects other than tensors, numbers, strings and containers"
    if "weights_only" in what or "Weights only" in what:
        what = "objects other than tensors, numbers, strings and containers"
    return f"it holds Python code or objects edgemem does not load ({what}); only plain weights are read"


def load_state_strict(model: nn.Module, state: Mapping[str, Tensor], *, ignore: tuple[str, ...] = ()) -> None:
    """Load ``state`` into ``model`` only if keys and shapes match exactly (else nothing is loaded).

    ``ignore`` lists key prefixes of the checkpoint to drop (e.g. a detection head edgemem
    does not build). The error lists every missing, unexpected and mis-shaped key.
    """
    state = {k.removeprefix("module."): v for k, v in state.items() if not (ignore and k.startswith(ignore))}
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    misshaped = sorted(
        f"{k} {list(state[k].shape)} vs model {list(own[k].shape)}"
        for k in set(own) & set(state)
        if tuple(state[k].shape) != tuple(own[k].shape)
    )
    problems = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)):
        if keys:
            shown = ", ".join(keys[:8]) + (f", ... ({len(keys)} in all)" if len(keys) > 8 else "")
            problems.append(f"{label}: {shown}")
    if problems:
        raise CheckpointError("checkpoint does not match the model; " + "; ".join(problems))
    model.load_state_dict(dict(state), strict=True)


def save_pyth(path: str | os.PathLike[str], payload: dict[str, Any]) -> None:
    """Write a ``.pyth`` atomically (temp file in the same folder, then rename). Saved through a file
    object, so the archive's inner folder is ``archive`` and not the temp file's random name: the
    same payload gives the same bytes."""
    with atomic_path(path, error=CheckpointError) as tmp, open(tmp, "wb") as f:
        torch.save(payload, f)

"""Run checkpoints in the PySlowFast ``.pyth`` layout, written atomically; resume; rebuilding a trained model.

A run folder holds ``checkpoints/checkpoint_epoch_XXXXX.pyth`` (1-based epoch, as PySlowFast names
them), ``checkpoints/last.pyth`` and ``checkpoints/best.pyth``. Each file is
``{"model_state", "optimizer_state", "epoch", "cfg"}`` (``cfg``: YAML text, as PySlowFast's
``cfg.dump()``) plus ``edgemem_card`` (the model card as JSON, enough to rebuild the model) and
``edgemem_train`` (JSON: the training options, global step, best top-1).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from edgemem.contract import ModelCard
from edgemem.errors import CheckpointError
from edgemem.models.checkpoint import card_of, load_state_strict, model_from_checkpoint, read_pyth, save_pyth
from edgemem.models.streaming import StreamingModel

CKPT_DIR = "checkpoints"
LAST = "last.pyth"
BEST = "best.pyth"
_EPOCH_RE = re.compile(r"checkpoint_epoch_(\d+)\.pyth$")


def epoch_path(run: Path, epoch: int) -> Path:
    return run / CKPT_DIR / f"checkpoint_epoch_{epoch:05d}.pyth"


def make_payload(
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    epoch: int,
    card: ModelCard,
    train_state: dict[str, Any],
) -> dict[str, Any]:
    """The ``.pyth`` dict; ``model`` may be DDP-wrapped (the ``module.`` prefix is dropped)."""
    model_state = {k.removeprefix("module."): v.detach().cpu() for k, v in model.state_dict().items()}
    card_json = card.to_json()
    return {
        "model_state": model_state,
        "optimizer_state": optimizer.state_dict() if optimizer is not None else None,
        "epoch": epoch,
        "cfg": config_text(card_json, train_state),
        "edgemem_card": json.dumps(card_json),
        "edgemem_train": json.dumps(train_state),
    }


def config_text(card_json: dict[str, Any], train_state: dict[str, Any]) -> str:
    """The PySlowFast-style ``cfg`` YAML of a checkpoint: the model card and the training state."""
    return yaml.safe_dump({"EDGEMEM": {"MODEL_CARD": card_json, "TRAIN": train_state}}, sort_keys=False)


# Training options that hold paths of the machine that trained (shipped as their last component).
LOCAL_PATH_OPTIONS = ("data", "out", "init")


def without_local_paths(train_state: dict[str, Any]) -> dict[str, Any]:
    """``train_state`` with each path option cut to its last component (``/tmp/x/d_cm12`` ->
    ``d_cm12``): shipped weights carry no machine's folders (the card's ``dataset.generate`` says how
    to make the data)."""
    options = dict(train_state.get("options") or {})
    for key in LOCAL_PATH_OPTIONS:
        if isinstance(options.get(key), str):
            options[key] = Path(options[key]).name
    return train_state | ({"options": options} if "options" in train_state else {})


def save_epoch(run: Path, payload: dict[str, Any], *, best: bool, keep_epoch: bool = True) -> None:
    """Write the epoch checkpoint (if ``keep_epoch``), then ``last.pyth`` (and ``best.pyth``), each
    atomically."""
    folder = run / CKPT_DIR
    folder.mkdir(parents=True, exist_ok=True)
    if keep_epoch:
        save_pyth(epoch_path(run, int(payload["epoch"])), payload)
    save_pyth(folder / LAST, payload)
    if best:
        save_pyth(folder / BEST, payload)


def resolve_checkpoint(path: str | os.PathLike[str], prefer: str = BEST) -> Path:
    """A checkpoint file, or a run folder (its ``best.pyth``/``last.pyth``, else the newest epoch)."""
    p = Path(path)
    if p.is_file():
        return p
    folder = p / CKPT_DIR if (p / CKPT_DIR).is_dir() else p
    if not folder.is_dir():
        raise CheckpointError(f"no checkpoint or run folder at {p}")
    for name in (prefer, LAST, BEST):
        if (folder / name).is_file():
            return folder / name
    epochs = sorted(f for f in folder.iterdir() if _EPOCH_RE.search(f.name))
    if not epochs:
        raise CheckpointError(f"{p} holds no checkpoint")
    return epochs[-1]


def train_state_of(ckpt: dict[str, Any]) -> dict[str, Any]:
    text = ckpt.get("edgemem_train")
    return json.loads(text) if isinstance(text, str) else {}


def load_trained(path: str | os.PathLike[str]) -> tuple[StreamingModel, dict[str, Any]]:
    """Rebuild the model of a training checkpoint (file or run folder) with its weights, in eval mode."""
    file = resolve_checkpoint(path)
    ckpt = read_pyth(file)
    return model_from_checkpoint(ckpt, file).eval(), ckpt


def card_of_run(run: Path) -> ModelCard:
    """The model card of ``run``'s last checkpoint: the model a ``--resume`` continues."""
    file = run / CKPT_DIR / LAST
    return card_of(read_pyth(file), file)


def read_checkpoint_for_resume(
    run: Path,
    model: StreamingModel,
    make_optimizer: Callable[[], torch.optim.Optimizer],
    prepare: Callable[[dict[str, Any]], None] | None = None,
) -> tuple[dict[str, Any], torch.optim.Optimizer]:
    """Load ``run``'s ``last.pyth`` into ``model`` and a new optimizer; the model must be the same one
    (after ``prepare(checkpoint)``, which may set it to the phase of training the checkpoint is in and
    settle options the optimizer is made with, e.g. its parameter groups)."""
    from edgemem.models.registry import from_card

    file = run / CKPT_DIR / LAST
    ckpt = read_pyth(file)
    if prepare is not None:
        prepare(ckpt)
    with torch.device("meta"):  # the stored config as this edgemem writes it (older files hold older forms)
        card = from_card(card_of(ckpt, file)).model_card()
    own = model.model_card()
    if card.family != own.family or card.config != own.config:
        raise CheckpointError(
            f"--resume: {file} holds a different model ({card.display_name}, frames {card.clip.frames}, "
            f"{card.num_classes} classes) than requested ({own.display_name}, frames {own.clip.frames}, "
            f"{own.num_classes} classes){_config_diff(card.config, own.config)}; without model options"
            " --resume continues the run's own model"
        )
    load_state_strict(model, ckpt["model_state"])
    optimizer = make_optimizer()
    if ckpt.get("optimizer_state") is not None:
        optimizer.load_state_dict(ckpt["optimizer_state"])
    return ckpt, optimizer


def _config_diff(run: dict[str, Any], asked: dict[str, Any]) -> str:
    """``: KEY R in the run, A asked`` for the top-level config entries that differ (at most 3 shown)."""
    keys = sorted(k for k in set(run) | set(asked) if run.get(k) != asked.get(k))
    if not keys:
        return ""

    def short(v: Any) -> str:
        text = repr(v)
        return text if len(text) <= 60 else text[:57] + "..."

    shown = "; ".join(f"{k} {short(run.get(k))} in the run, {short(asked.get(k))} asked" for k in keys[:3])
    return f": {shown}" + (f" (and {len(keys) - 3} more)" if len(keys) > 3 else "")

"""Turn the MODEL a user gives ``edgemem stream`` or ``edgemem export`` into a model with weights, or
into what ``open_session`` takes.

An ``.onnx`` path is used as is. A preset name, shipped-weights name or YAML config is built and, for
every runtime but ``torch``, exported once into the graph cache (``graph_cache``: keyed on the model,
the weights' content, the export options and the edgemem version), then reused.

Weights, never silently random: a checkpoint edgemem wrote given as MODEL (its card builds the model);
``--checkpoint`` when given (a .pyth, or shipped weights of MODEL's preset by name); else a
shipped-weights name's own weights, or the preset's shipped default weights (``edgemem/zoo``); a preset
or config without either is refused unless ``random_weights`` is asked for (its classes then mean
nothing, and ``note`` says so).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgemem.errors import InputError
from edgemem.export.graph_cache import DEFAULT_CACHE, GraphKey, cached_graph, weights_id
from edgemem.runtimes.registry import takes_model


def build_model(
    model: str,
    checkpoint: str | None,
    random_weights: bool,
    note: Callable[[str], None],
    view: str | None = None,
) -> tuple[Any, str]:
    """The model MODEL names and its ``weights_id``: ``checkpoint``'s weights, a shipped-weights name's
    own, the preset's shipped default, or (only with ``random_weights``) its initialisation. A preset or
    config without weights is built first, so its own errors come before the refusal."""
    from edgemem.models.pretrained import default_entry, zoo_cards
    from edgemem.models.registry import create_model, is_model
    from edgemem.models.resolve import check_view, resolve_model

    if model.lower().endswith(".pyth"):
        return _from_pyth(model, checkpoint, random_weights, view), weights_id(model)
    cards = zoo_cards()
    if checkpoint is not None:
        if random_weights:
            raise InputError("--random-weights and --checkpoint exclude each other")
        if checkpoint not in cards or Path(checkpoint).exists():
            return resolve_model(model, checkpoint, view=view), weights_id(checkpoint)
        preset = cards[checkpoint]["preset"]  # shipped weights by name, as `verify` takes them: MODEL's own
        if preset != model:
            raise InputError(f"--checkpoint {checkpoint}: shipped weights of {preset}, not of {model}")
        model = checkpoint  # from here on, the shipped-weights name given as MODEL
    if model in cards:  # a shipped-weights name: its own weights
        if random_weights:
            raise InputError(f"--random-weights: {model} names shipped weights; give its preset instead")
        check_view(model, view)
        return create_model(model), weights_id(shipped=cards[model])
    shipped = is_model(model) and any(c["preset"] == model for c in cards.values())
    if shipped and not random_weights:
        check_view(model, view)
        entry = default_entry(model)
        note(f"{model}: the shipped weights {entry['name']} ({Path(entry['path']).name})")
        return create_model(model, pretrained=True), weights_id(shipped=entry)
    built = resolve_model(model, None, view=view)
    if not random_weights:
        raise InputError(
            f"{model} has no shipped weights: pass --checkpoint, or --random-weights for an untrained model "
            "(its classes mean nothing)"
        )
    note(f"{model}: RANDOM weights (--random-weights): its classes mean nothing")
    return built, weights_id()


def _from_pyth(path: str, checkpoint: str | None, random_weights: bool, view: str | None) -> Any:
    """MODEL given as a checkpoint edgemem wrote (a run's ``checkpoints/*.pyth``): the model its card
    describes. An official checkpoint has no card, so it needs its config."""
    from edgemem.models.checkpoint import card_of, model_from_checkpoint, read_pyth
    from edgemem.models.resolve import check_view

    if checkpoint is not None or random_weights:
        raise InputError(f"{path} is a checkpoint: --checkpoint and --random-weights apply to presets and configs")
    check_view(path, view)
    if not Path(path).is_file():
        raise InputError(f"checkpoint not found: {path}")
    ckpt = read_pyth(path)
    card = card_of(ckpt, path, required=False)
    if card is None:
        raise InputError(
            f"{path} carries no edgemem model card (an official checkpoint?): give its config, MODEL.yaml --checkpoint {path}"
        )
    return model_from_checkpoint(ckpt, path, card)


def resolve_graph(
    model: str,
    runtime: str,
    *,
    batch: int,
    checkpoint: str | None = None,
    cache_dir: Path | None = None,
    random_weights: bool = False,
    note: Callable[[str], None] = lambda line: None,
) -> Any:
    """An ONNX path for ``open_session`` (a model object for the torch runtimes)."""
    path = Path(model)
    if path.suffix.lower() == ".onnx":
        if not path.is_file():
            raise InputError(f"model file not found: {path}")
        if checkpoint or random_weights:
            raise InputError("--checkpoint and --random-weights apply to presets and configs, not to ONNX graphs")
        return path
    built, weights = build_model(model, checkpoint, random_weights, note)
    if takes_model(runtime):
        return built

    def export(out: Path) -> None:
        from edgemem.export.onnx import to_onnx

        to_onnx(built, out, batch=batch)

    return cached_graph(GraphKey.of(model, weights, batch=batch), cache_dir or DEFAULT_CACHE, export)

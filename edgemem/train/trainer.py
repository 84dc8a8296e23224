"""``edgemem train``: options, checks before anything is written, model/recipe setup, resume."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from edgemem.atomic import write_json
from edgemem.errors import CheckpointError, EdgememError, InputError
from edgemem.hardware import resolve_threads
from edgemem.models.cm import CollaborativeMemory
from edgemem.models.mvit import MViT
from edgemem.models.streaming import StreamingModel
from edgemem.train import checkpoints as ckpts
from edgemem.train.distributed import DistInfo, init_distributed, shutdown, wrap_ddp
from edgemem.train.loop import LoopConfig, LoopState, train
from edgemem.train.memory_layout import memory_layout
from edgemem.train.optim import build_optimizer

if TYPE_CHECKING:
    from edgemem.data.video_dir import VideoRecord

log = logging.getLogger(__name__)

# Defaults that train the tiny presets from scratch on a long-range task (docs/TRAINING.md).
DEFAULT_EPOCHS = 30
# A small dataset trains for more epochs: until DEFAULT_VIDEOS_SEEN training videos have been seen, at most
# MAX_DEFAULT_EPOCHS. Memory's late start on 160-video sets is counted in videos seen (docs/TRAINING.md).
DEFAULT_VIDEOS_SEEN = 9600
MAX_DEFAULT_EPOCHS = 60
DEFAULT_LR = {"adamw": 2e-3, "sgd": 0.1}
DEFAULT_WD = {"adamw": 0.05, "sgd": 1e-4}
DEFAULT_BATCH = {"clip": 16, "memvit": 8, "cm": 8}
DEFAULT_WARMUP = 2.0
DEFAULT_LR_HOLD = 0.0  # fraction of the epochs at the peak lr before the cosine (docs/TRAINING.md)
DEFAULT_CURRICULUM = 0.0
DEFAULT_MEMORY_DROP = 0.0
DEFAULT_MEMORY_GRAD = "bptt"
DEFAULT_MEMORY_LR_SCALE = 10.0  # MeMViT: learning rate of the memory's own parameters (docs/TRAINING.md)
DEFAULT_INFUSION_WARMUP_DIV = 3  # CM gating: residual infusion for epochs // 3 first (docs/CM.md)


@dataclass
class TrainOptions:
    model: str
    data: str
    out: str
    epochs: int | None = None  # default: default_epochs(training videos), or the run's own on --resume
    batch_size: int | None = None
    lr: float | None = None
    optimizer: str = "adamw"
    weight_decay: float | None = None
    warmup_epochs: float | None = None
    lr_hold: float | None = None  # fraction of the epochs at the peak lr (default DEFAULT_LR_HOLD)
    frame_scale: int = 1
    no_flip: bool | None = None  # augment without horizontal flips (default: flip; on --resume the run's own)
    init: str | None = None
    clips_per_video: int | None = None
    alpha: float | None = None  # CM: weight of the video-level loss (default 1)
    multi_iteration: bool = False
    no_batch_reduction: bool = False
    infusion: str | None = None
    infusion_warmup: int | None = None  # CM: residual-infusion epochs before gating (default: epochs // 3)
    curriculum: float | None = None
    memory_drop: float | None = None
    stream_loss: str = "last"
    memory_grad: str | None = None  # MeMViT: "bptt" (default) or "pipelined"
    memory_lr_scale: float | None = None  # MeMViT: x the lr for memory_parameters() (default 10)
    memory_sampler: str | None = None  # MeMViT: sampler of blocks without a per_block layout (default: preset's)
    memory_block: list[str] | None = None  # MeMViT: "BLOCK:ATTN_MAX_LEN:SAMPLER" per_block entries
    memory_compression: str | None = None  # MeMViT: "KTxKHxKW/STxSHxSW" or "none" per memory block (or preset's)
    memory_positions: str | None = None  # MeMViT: "own" or "clip" position tables for memory keys (default: preset's)
    drop_path: float | None = None  # MViT backbones: stochastic depth of the last block (default: preset's)
    head_dropout: float | None = None  # dropout before the classifier (default: preset's)
    resume: bool = False
    workers: int = 0
    precision: str = "auto"
    clip_grad: float = 1.0
    eval_every: int = 5
    checkpoint_every: int = 1
    seed: int = 0
    device: str = "auto"
    threads: int | None = None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> TrainOptions:
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in vars(args).items() if k in names})

    def check(self) -> None:
        if self.epochs is not None and self.epochs < 1:
            raise InputError(f"--epochs must be >= 1, got {self.epochs}")
        if self.batch_size is not None and self.batch_size < 1:
            raise InputError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.frame_scale < 1:
            raise InputError(f"--frame-scale must be >= 1, got {self.frame_scale}")
        if self.clips_per_video is not None and self.clips_per_video < 1:
            raise InputError(f"--clips-per-video must be >= 1, got {self.clips_per_video}")
        if self.curriculum is not None and not 0 <= self.curriculum <= 1:
            raise InputError(f"--curriculum must be in [0, 1], got {self.curriculum}")
        if self.memory_drop is not None and not 0 <= self.memory_drop <= 1:
            raise InputError(f"--memory-drop must be in [0, 1], got {self.memory_drop}")
        if self.memory_grad not in (None, "bptt", "pipelined"):
            raise InputError(f"--memory-grad must be bptt or pipelined, got {self.memory_grad}")
        if self.lr_hold is not None and not 0 <= self.lr_hold < 1:
            raise InputError(f"--lr-hold must be in [0, 1), got {self.lr_hold}")
        for flag, p in (("--drop-path", self.drop_path), ("--head-dropout", self.head_dropout)):
            if p is not None and not 0 <= p < 1:
                raise InputError(f"{flag} must be in [0, 1), got {p}")
        if self.infusion_warmup is not None and self.infusion_warmup < 0:
            raise InputError(f"--infusion-warmup must be >= 0, got {self.infusion_warmup}")
        if self.workers < 0:
            raise InputError(f"--workers must be >= 0, got {self.workers}")
        for flag, value, least, strict in (
            ("--lr", self.lr, 0.0, True), ("--weight-decay", self.weight_decay, 0.0, False),
            ("--warmup-epochs", self.warmup_epochs, 0.0, False), ("--alpha", self.alpha, 0.0, False),
            ("--memory-lr-scale", self.memory_lr_scale, 0.0, True), ("--clip-grad", self.clip_grad, 0.0, False),
        ):  # fmt: skip
            if value is not None and not (math.isfinite(value) and (value > least if strict else value >= least)):
                raise InputError(f"{flag} must be a finite number {'>' if strict else '>='} {least:g}, got {value}")
        if self.eval_every < 0:
            raise InputError(f"--eval-every must be >= 0 (0: never), got {self.eval_every}")
        if self.checkpoint_every < 0:
            raise InputError(f"--checkpoint-every must be >= 0 (0: last and best only), got {self.checkpoint_every}")


def default_epochs(train_videos: int) -> int:
    """Epochs when ``--epochs`` is not given: 30, or enough for 9,600 training videos seen on a smaller
    set (fewer than 320 videos), at most 60."""
    needed = math.ceil(DEFAULT_VIDEOS_SEEN / max(train_videos, 1))
    return min(max(DEFAULT_EPOCHS, needed), MAX_DEFAULT_EPOCHS)


def _default_epochs_of(records: Sequence[VideoRecord]) -> int:
    """``default_epochs`` of the videos training will see: on a set small enough for the count to
    matter, the unreadable ones (skipped in training) are not counted."""
    from edgemem.data.video_dir import readable_count

    listed = len(records)
    readable = listed if listed * DEFAULT_EPOCHS >= DEFAULT_VIDEOS_SEEN else readable_count(records)
    epochs = default_epochs(readable)
    if readable < listed:
        log.warning("%d of %d training videos are unreadable: --epochs defaults to %d for the other %d",
                    listed - readable, listed, epochs, readable)  # fmt: skip
    return epochs


def _epochs_of_run(run: Path) -> int | None:
    """The ``--epochs`` a run was started with (its config.json), for ``--resume`` without the option."""
    try:
        epochs = json.loads((run / "config.json").read_text())["options"]["epochs"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return int(epochs) if isinstance(epochs, int) and epochs >= 1 else None


def _epochs(opts: TrainOptions) -> int:
    if opts.epochs is None:
        raise TypeError("TrainOptions.epochs is resolved by run_training")
    return opts.epochs


def family_of(model: StreamingModel) -> str:
    """``clip`` (memory-less), ``memvit`` or ``cm``, from the model card's memory entry."""
    mem = model.model_card().memory
    if mem is None:
        return "clip"
    kind = mem.kind
    if kind not in ("memvit", "cm"):
        raise EdgememError(f"cannot train a model with memory of kind {kind!r}")
    return str(kind)


def _build_model(opts: TrainOptions, num_classes: int, extra: dict[str, Any]) -> StreamingModel:
    from edgemem.models.registry import create_model, is_model

    if not is_model(opts.model):
        create_model(opts.model)  # raises "unknown model" listing the presets
    overrides: dict[str, Any] = {"num_classes": num_classes, **extra}
    if opts.frame_scale != 1:
        overrides["frame_scale"] = opts.frame_scale
    try:
        model = create_model(opts.model, **overrides)
    except TypeError as e:
        raise InputError(f"{opts.model} does not accept these options ({e})") from None
    return model


# The options that shape the model (its config in the run's card); a --resume given none continues the run's own.
_MODEL_OPTIONS = (
    "frame_scale",
    "clips_per_video",
    "alpha",
    "no_batch_reduction",
    "infusion",
    "memory_sampler",
    "memory_block",
    "memory_compression",
    "memory_positions",
    "drop_path",
    "head_dropout",
)


def _model_options_given(opts: TrainOptions) -> bool:
    """Whether a model-shaping option is given (``frame_scale`` 1 and switches off count as not given)."""
    defaults = {"frame_scale": 1, "no_batch_reduction": False}
    return any(getattr(opts, k) not in (None, [], defaults.get(k)) for k in _MODEL_OPTIONS)


def _model_of_run(run: Path, name: str, num_classes: int) -> StreamingModel:
    """The model ``run`` trains, rebuilt from its last checkpoint's card (memory layout, dropout, CM options)."""
    from edgemem.models.registry import from_card

    card = ckpts.card_of_run(run)
    if card.name != name:
        raise CheckpointError(f"--resume: {run} trains {card.name}, not {name}")
    if card.num_classes != num_classes:
        raise CheckpointError(f"--resume: {run} trains {card.num_classes} classes, the dataset has {num_classes}")
    return from_card(card.with_(class_names=None))


def _regularisers(opts: TrainOptions, model: StreamingModel, family: str) -> dict[str, Any]:
    """``--drop-path`` / ``--head-dropout`` as the preset's config fields (CM: its backbone's)."""
    net = getattr(model, "backbone", model) if family == "cm" else model
    fields = getattr(getattr(net, "cfg", None), "__dataclass_fields__", {})
    out: dict[str, Any] = {}
    if opts.drop_path is not None:
        if "drop_path_rate" not in fields:
            raise InputError(f"--drop-path applies to MViT / MeMViT backbones, not {type(net).__name__}")
        out["drop_path_rate"] = opts.drop_path
    if opts.head_dropout is not None:
        key = next((k for k in ("head_dropout", "dropout") if k in fields), None)
        if key is None:
            raise InputError(f"--head-dropout: {type(net).__name__} has no head dropout to set")
        out[key] = opts.head_dropout
    return out


def _precision(opts: TrainOptions, device: torch.device) -> str:
    if opts.precision != "auto":
        if opts.precision == "fp16" and device.type != "cuda":
            raise InputError("--precision fp16 needs a GPU (use bf16 on CPU)")
        return opts.precision
    # On CPU, bf16 autocast made the tiny presets slower (casts dominate tiny kernels; docs/TRAINING.md).
    return "fp16" if device.type == "cuda" else "f32"


def _infusion_warmup(opts: TrainOptions, infusion: str) -> int:
    """Epochs of residual infusion before gating: the option, or by default a third of the epochs."""
    if opts.infusion_warmup is not None:
        return opts.infusion_warmup
    return _epochs(opts) // DEFAULT_INFUSION_WARMUP_DIV if infusion == "gating" else 0


def _cm_of(model: StreamingModel) -> CollaborativeMemory:
    """The CM module of a CM-family model."""
    cm = getattr(model, "cm", None)
    if not isinstance(cm, CollaborativeMemory):
        raise TypeError(f"{type(model).__name__} has no CollaborativeMemory")
    return cm


def _resume_phase(
    model: StreamingModel, resolved: dict[str, Any], opts: TrainOptions
) -> Callable[[dict[str, Any]], None]:
    """For --resume: the run's learning-rate hold, memory learning-rate scale and flips (an option given
    must be the run's; runs from before an option had none), and for a CM run the same warm-up and the
    model in the infusion of its last epoch."""

    def prepare(ckpt: dict[str, Any]) -> None:
        trained = ckpts.train_state_of(ckpt).get("options", {})
        memory_scale = 1.0 if resolved["family"] == "memvit" else None
        for key, given, before in (
            ("lr_hold", opts.lr_hold, 0.0),
            ("memory_lr_scale", opts.memory_lr_scale, memory_scale),
            ("no_flip", opts.no_flip, False),
        ):
            held = trained.get(key, before)
            if given is not None and given != held:
                flag = "--" + key.replace("_", "-")
                if isinstance(held, bool):  # a switch: only ever given on (or by the dataset's task.json)
                    raise InputError(f"--resume: the run was trained without {flag} (given, or asked by the dataset)")
                raise InputError(f"--resume: the run was trained with {flag} {held}, not {given}")
            resolved[key] = held
        if resolved["family"] != "cm":
            return
        from edgemem.train.cm_train import infusion_at

        was = trained.get("infusion_warmup", 0)
        if was != resolved["infusion_warmup"]:
            raise InputError(
                f"--resume: the run was trained with --infusion-warmup {was}, not {resolved['infusion_warmup']}"
            )
        _cm_of(model).infusion = infusion_at(int(ckpt["epoch"]) - 1, was, resolved["infusion"])

    return prepare


def run_training(opts: TrainOptions) -> dict[str, Any] | None:
    """Train as ``opts`` says; returns a summary on rank 0 (None on other ranks)."""
    from edgemem.data.datasets import VideoDir

    opts.check()
    # Default: the usable CPUs (affinity, cgroup quota) shared by this node's torchrun processes.
    torch.set_num_threads(resolve_threads(opts.threads, int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))
    # Everything a user can get wrong is checked before RUN is touched.
    data = VideoDir(opts.data)
    train_items, val_items = data.split("train"), data.split("val")
    if not data.flip and not opts.no_flip:
        opts = dataclasses.replace(opts, no_flip=True)
        log.warning('no horizontal flips: %s/task.json says "flip": false', data.root)
    num_classes = data.num_classes
    classes = data.class_names or [str(i) for i in range(num_classes)]
    run = Path(opts.out)
    last = run / ckpts.CKPT_DIR / ckpts.LAST
    if opts.resume and not last.is_file():
        raise CheckpointError(f"--resume: {run} holds no checkpoint to resume from")
    if not opts.resume and run.exists() and any(run.iterdir()):
        raise InputError(f"{run} already holds a run: use --resume, or another --out")
    if opts.epochs is None:
        if not opts.resume:
            opts = dataclasses.replace(opts, epochs=_default_epochs_of(train_items))
        elif (own := _epochs_of_run(run)) is not None:
            opts = dataclasses.replace(opts, epochs=own)
        else:
            raise InputError(f"--resume: {run}/config.json does not say the run's --epochs: give --epochs")
    torch.manual_seed(opts.seed)  # the initial weights (DDP broadcasts rank 0's anyway)
    model = _build_model(opts, num_classes, {})
    family = family_of(model)
    extra: dict[str, Any] = {}
    if family == "cm":
        extra["alpha"] = 1.0 if opts.alpha is None else opts.alpha
        if opts.clips_per_video:
            extra["clips"] = opts.clips_per_video
        if opts.no_batch_reduction:
            extra["batch_reduction"] = False
        if opts.infusion:
            extra["infusion"] = opts.infusion
    layout = (opts.memory_sampler, opts.memory_block, opts.memory_compression, opts.memory_positions)
    if any(v is not None for v in layout):
        if not isinstance(model, MViT) or model.cfg.memory is None:
            raise InputError(
                "--memory-sampler, --memory-block, --memory-compression and --memory-positions apply to "
                "MeMViT models only"
            )
        extra["memory"] = memory_layout(model.cfg.memory, *layout)
    extra |= _regularisers(opts, model, family)
    if extra:  # the same initial weights as a model built with these options in the first place
        torch.manual_seed(opts.seed)
        model = _build_model(opts, num_classes, extra)
    if opts.resume and not _model_options_given(opts):
        model = _model_of_run(run, opts.model, num_classes)  # its options need not be repeated
    if opts.multi_iteration and family != "cm":
        raise InputError("--multi-iteration applies to CM models only")
    if opts.no_batch_reduction and family != "cm":
        raise InputError("--no-batch-reduction applies to CM models only")
    if opts.infusion and family != "cm":
        raise InputError("--infusion applies to CM models only")
    if opts.infusion_warmup is not None and family != "cm":
        raise InputError("--infusion-warmup applies to CM models only")
    if opts.infusion_warmup and family == "cm" and _cm_of(model).infusion != "gating":
        raise InputError("--infusion-warmup warms up a gating model with the residual infusion; this one is residual")
    if opts.infusion_warmup is not None and opts.infusion_warmup >= _epochs(opts):
        raise InputError(f"--infusion-warmup {opts.infusion_warmup} leaves no gating epoch of --epochs {_epochs(opts)}")
    if opts.alpha is not None and family != "cm":
        raise InputError("--alpha applies to CM models only")
    if opts.clips_per_video is not None and family != "cm":
        raise InputError("--clips-per-video applies to CM models only")
    if opts.memory_grad is not None and family != "memvit":
        raise InputError("--memory-grad applies to MeMViT models only")
    if opts.memory_lr_scale is not None and family != "memvit":
        raise InputError("--memory-lr-scale applies to MeMViT models only")
    if opts.memory_lr_scale is not None and family == "memvit" and not _has_memory_parameters(model):
        raise InputError(
            "--memory-lr-scale: this model's memory has no parameters of its own (uncompressed, on the clip's "
            "position tables)"
        )
    if family == "memvit" and opts.memory_grad in (None, "bptt") and opts.stream_loss == "all":
        raise InputError("--stream-loss all needs --memory-grad pipelined (BPTT steps once per video)")
    if family == "cm" and opts.frame_scale != 1:
        raise InputError("--frame-scale applies to memory-less models only")
    init_note = None
    if opts.init and not opts.resume:
        from edgemem.train.init_weights import init_from_checkpoint

        init_note = init_from_checkpoint(model, opts.init, family)

    info = init_distributed(None if opts.device == "auto" else opts.device)
    try:
        return _train(opts, model, family, train_items, val_items, classes, run, info, init_note)
    finally:
        shutdown(info)


def _has_memory_parameters(model: StreamingModel) -> bool:
    """Whether ``--memory-lr-scale`` has parameters to act on (MeMViT's ``memory_parameters()``)."""
    return isinstance(model, MViT) and bool(model.memory_parameters())


def _train(
    opts: TrainOptions,
    model: StreamingModel,
    family: str,
    train_items: list,
    val_items: list,
    classes: list[str],
    run: Path,
    info: DistInfo,
    init_note: str | None,
) -> dict[str, Any] | None:
    from edgemem.train.recipes import build_recipe

    precision = _precision(opts, info.device)
    batch = opts.batch_size or DEFAULT_BATCH[family]
    lr = opts.lr if opts.lr is not None else DEFAULT_LR[opts.optimizer]
    wd = opts.weight_decay if opts.weight_decay is not None else DEFAULT_WD[opts.optimizer]
    epochs = _epochs(opts)
    warmup = opts.warmup_epochs if opts.warmup_epochs is not None else min(DEFAULT_WARMUP, epochs / 5)
    resolved = asdict(opts) | {
        "family": family,
        "batch_size": batch,
        "lr": lr,
        "weight_decay": wd,
        "warmup_epochs": warmup,
        "lr_hold": opts.lr_hold if opts.lr_hold is not None else DEFAULT_LR_HOLD,
        "no_flip": bool(opts.no_flip),
        "precision": precision,
        "world_size": info.world,
        "curriculum": opts.curriculum if opts.curriculum is not None else DEFAULT_CURRICULUM,
        "memory_drop": opts.memory_drop if opts.memory_drop is not None else DEFAULT_MEMORY_DROP,
        "memory_grad": (opts.memory_grad or DEFAULT_MEMORY_GRAD) if family == "memvit" else None,
        "memory_lr_scale": (opts.memory_lr_scale or DEFAULT_MEMORY_LR_SCALE) if _has_memory_parameters(model) else None,
        "num_classes": len(classes),
    }
    if family == "cm":
        resolved["infusion"] = _cm_of(model).infusion
        resolved["infusion_warmup"] = _infusion_warmup(opts, _cm_of(model).infusion)
    model.to(info.device)

    def make_optimizer() -> torch.optim.Optimizer:
        memory = model.memory_parameters() if isinstance(model, MViT) else []
        return build_optimizer(
            model, opts.optimizer, lr, wd, memory=memory, memory_lr_scale=resolved["memory_lr_scale"] or 1.0
        )

    state = LoopState()
    if not opts.resume:
        optimizer = make_optimizer()
    else:
        ckpt, optimizer = ckpts.read_checkpoint_for_resume(
            run, model, make_optimizer, prepare=_resume_phase(model, resolved, opts)
        )
        ts = ckpts.train_state_of(ckpt)
        state = LoopState(
            epoch=int(ckpt["epoch"]),
            step=int(ts.get("step", 0)),
            best_top1=float(ts.get("best_top1", -1.0)),
            history=list(ts.get("history", [])),
        )
        if state.epoch >= epochs:
            raise InputError(f"{run} already finished {state.epoch} epochs (--epochs {epochs})")
    torch.manual_seed(opts.seed + 1000 * info.rank)
    card = model.model_card()
    if card.class_names is None:
        card = card.with_(class_names=classes)
    recipe = build_recipe(family, model, resolved, train_items, val_items, info)
    wrapped = wrap_ddp(recipe.trainable(model), info, find_unused=family == "memvit")
    if info.main:
        run.mkdir(parents=True, exist_ok=True)
        config = {"options": resolved, "model_card": card.to_json(), "init": init_note, "dataset": str(Path(opts.data))}
        write_json(run / "config.json", config)
    loop_cfg = LoopConfig(
        epochs=epochs,
        base_lr=lr,
        warmup_epochs=warmup,
        hold_epochs=resolved["lr_hold"] * epochs,
        clip_grad=opts.clip_grad or None,
        precision=precision,
        eval_every=opts.eval_every,
        checkpoint_every=opts.checkpoint_every,
        seed=opts.seed,
    )
    t0 = time.perf_counter()
    state = train(recipe, wrapped, optimizer, loop_cfg, state, info, run, card, resolved, model)
    if not info.main:
        return None
    last = state.history[-1] if state.history else {}
    return {
        "run": str(run),
        "epochs": state.epoch,
        "train_time_s": round(time.perf_counter() - t0, 1),
        "val_top1": last.get("val_top1"),
        "val_top5": last.get("val_top5"),
        "best_top1": state.best_top1,
        "skipped_videos": recipe.skipped(),
    }

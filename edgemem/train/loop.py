"""The generic training loop: autocast, gradient clipping, LR schedule, progress, metrics, checkpoints.

Family specifics (what a batch is, how the loss is computed, how memory is carried) live in a
:class:`Recipe`; this loop only drives it.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from edgemem.contract import ModelCard
from edgemem.errors import EdgememError, UnsupportedError
from edgemem.models.streaming import StreamingModel
from edgemem.precision import Precision
from edgemem.train import checkpoints as ckpts
from edgemem.train.distributed import DistInfo, all_sum, average_gradients, barrier
from edgemem.train.optim import CosineSchedule, set_lr


@dataclass(frozen=True)
class StepResult:
    """What one training iteration of a recipe gives the loop.

    ``loss`` is back-propagated by the loop, unless ``backward_done`` (the recipe accumulated the
    gradients itself; ``loss`` is then only logged). ``forward_only()``: no loss and no optimizer
    step this iteration (it must be the same on every rank).
    """

    loss: Tensor | None
    stats: dict[str, float] = field(default_factory=dict)
    backward_done: bool = False

    def __post_init__(self) -> None:
        if self.loss is None and self.backward_done:
            raise ValueError("a step with its backward done needs the loss it minimised")

    @classmethod
    def forward_only(cls) -> StepResult:
        return cls(None)

    @property
    def is_forward_only(self) -> bool:
        return self.loss is None


class Recipe(Protocol):
    """What the loop needs from a model family's training scheme."""

    def steps_per_epoch(self, epoch: int) -> int:
        """Optimizer steps of ``epoch`` (0-based) on this rank (the same on every rank)."""

    def batches(self, epoch: int) -> Iterable[Any]:
        """The batches of ``epoch`` on this rank, ``steps_per_epoch(epoch)`` of them."""

    def loss(self, model: nn.Module, batch: Any, epoch: int) -> StepResult:
        """The loss of one batch and additive statistics (e.g. ``correct``, ``count``)."""

    def evaluate(self, model: StreamingModel) -> dict[str, Any]:
        """Validation metrics (``top1`` at least) with the family's inference scheme."""

    def skipped(self) -> int:
        """Unreadable videos skipped so far."""

    def start_epoch(self, epoch: int, optimizer: torch.optim.Optimizer) -> dict[str, Any] | None:
        """Prepare the model for ``epoch`` before its first step; a note when the model changed
        (logged; the best score restarts and checkpoints take the model's new card), else None."""


@dataclass
class LoopConfig:
    epochs: int
    base_lr: float
    warmup_epochs: float
    hold_epochs: float
    clip_grad: float | None
    precision: str  # "f32" | "bf16" | "fp16"
    eval_every: int
    checkpoint_every: int = 1  # epoch checkpoints every N epochs and after the last (0: none)
    seed: int = 0
    log_every: int = 10


@dataclass
class LoopState:
    epoch: int = 0  # epochs completed
    step: int = 0  # optimizer steps done
    best_top1: float = -1.0
    history: list[dict[str, Any]] = field(default_factory=list)


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast on CPU, fp16/bf16 AMP on GPU, nothing for f32 (a run's old "fp32" reads as f32)."""
    p = Precision.parse(precision)
    if p == Precision.F32:
        return contextlib.nullcontext()
    if p == Precision.INT8:
        raise UnsupportedError("training runs in f32, bf16 or fp16, not int8")
    dtype = torch.bfloat16 if p == Precision.BF16 else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


class MetricsLog:
    """``metrics.jsonl``: one JSON object per line, each written whole and flushed."""

    def __init__(self, path: Path, enabled: bool) -> None:
        self.path, self.enabled = path, enabled

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        line = json.dumps(record, sort_keys=False) + "\n"
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()


class _Progress:
    """A rich progress bar on a terminal; one line per epoch in a log file."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.bar = None
        if enabled and sys.stderr.isatty():
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"),
                TimeRemainingColumn(),
                transient=False,
            )

    def __enter__(self) -> _Progress:
        if self.bar is not None:
            self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()

    def epoch(self, epoch: int, total: int, steps: int) -> Any:
        if self.bar is None:
            return None
        return self.bar.add_task(f"epoch {epoch + 1}/{total}", total=steps, info="")

    def advance(self, task: Any, info: str) -> None:
        if self.bar is not None and task is not None:
            self.bar.update(task, advance=1, info=info)

    def line(self, text: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.console.print(text)
        else:
            print(text, file=sys.stderr, flush=True)


def train(
    recipe: Recipe,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    cfg: LoopConfig,
    state: LoopState,
    info: DistInfo,
    run: Path,
    card: ModelCard,
    options: dict[str, Any],
    bare_model: StreamingModel,
) -> LoopState:
    """Train from ``state.epoch`` to ``cfg.epochs``; checkpoint each epoch (rank 0 writes)."""
    schedule = CosineSchedule(
        base_lr=cfg.base_lr, total_epochs=cfg.epochs, warmup_epochs=cfg.warmup_epochs, hold_epochs=cfg.hold_epochs
    )
    use_scaler = cfg.precision == "fp16" and info.device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda") if use_scaler else None
    log = MetricsLog(run / "metrics.jsonl", info.main)
    params = [p for p in model.parameters() if p.requires_grad]
    with _Progress(info.main) as progress:
        for epoch in range(state.epoch, cfg.epochs):
            steps = recipe.steps_per_epoch(epoch)
            if steps <= 0:
                raise EdgememError("the training set yields no batch: use more videos or a smaller --batch-size")
            model.train()
            # Reseeded per epoch and rank: a resumed run draws the same numbers as an uninterrupted one.
            torch.manual_seed(cfg.seed * 100_003 + epoch * 1_009 + info.rank)
            change = recipe.start_epoch(epoch, optimizer)
            if change is not None:
                # Scores of the model before the change do not rank the one after it (CM infusion warm-up).
                state.best_top1 = -1.0
                card = bare_model.model_card().with_(class_names=card.class_names)
                log.write({"kind": "change", "epoch": epoch + 1, **change})
                progress.line(f"epoch {epoch + 1}: " + ", ".join(f"{k} {v}" for k, v in change.items()))
            task = progress.epoch(epoch, cfg.epochs, steps)
            t0, c0 = time.perf_counter(), time.process_time()
            sums: dict[str, float] = {}
            loss_sum, n_steps, n_iter = 0.0, 0, 0
            for batch in recipe.batches(epoch):
                lr = schedule.lr_at(epoch + n_iter / steps)
                set_lr(optimizer, lr)
                optimizer.zero_grad(set_to_none=True)
                with autocast(info.device, cfg.precision):
                    result = recipe.loss(model, batch, epoch)
                n_iter += 1
                for k, v in result.stats.items():
                    sums[k] = sums.get(k, 0.0) + float(v)
                if result.loss is None:  # a forward-only iteration (MeMViT: no clip with a loss in it)
                    progress.advance(task, f"loss {loss_sum / max(1, n_steps):.3f} lr {lr:.2e}")
                    continue
                loss = result.loss
                if not math.isfinite(float(loss.detach())):
                    raise EdgememError(f"loss became {float(loss.detach())} at step {state.step}: lower --lr")
                if result.backward_done:
                    # The recipe back-propagated itself (CM multi-iteration): average over ranks here.
                    average_gradients(params, info)
                elif scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.unscale_(optimizer)
                else:
                    loss.backward()
                gnorm = float(torch.nn.utils.clip_grad_norm_(params, cfg.clip_grad)) if cfg.clip_grad else float("nan")
                if scaler is not None:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
                state.step += 1
                n_steps += 1
                loss_sum += float(loss.detach())
                acc = sums.get("correct", 0.0) / max(1.0, sums.get("count", 0.0))
                progress.advance(task, f"loss {loss_sum / n_steps:.3f} acc {acc:.3f} lr {lr:.2e}")
                if cfg.log_every and state.step % cfg.log_every == 0:
                    log.write(
                        {
                            "kind": "step",
                            "epoch": epoch + 1,
                            "step": state.step,
                            "lr": lr,
                            "loss": float(loss.detach()),
                            "grad_norm": gnorm,
                        }
                    )
            totals = all_sum([loss_sum, float(n_steps), sums.get("correct", 0.0), sums.get("count", 0.0)], info)
            record: dict[str, Any] = {
                "kind": "epoch",
                "epoch": epoch + 1,
                "step": state.step,
                "train_loss": totals[0] / max(1.0, totals[1]),
                "train_acc": totals[2] / max(1.0, totals[3]),
                "epoch_time_s": round(time.perf_counter() - t0, 2),
                # CPU seconds of this process: the cost on a shared machine, whatever the load.
                "epoch_cpu_s": round(time.process_time() - c0, 2),
                "skipped_videos": recipe.skipped(),
            }
            last = epoch + 1 == cfg.epochs
            is_best = False
            if cfg.eval_every and ((epoch + 1) % cfg.eval_every == 0 or last):
                metrics = recipe.evaluate(bare_model)
                record.update({f"val_{k}": v for k, v in metrics.items() if isinstance(v, (int, float))})
                if metrics["top1"] > state.best_top1:
                    state.best_top1 = float(metrics["top1"])
                    is_best = True
            state.epoch = epoch + 1
            state.history.append(record)
            log.write(record)
            progress.line(
                f"epoch {epoch + 1}/{cfg.epochs} loss {record['train_loss']:.4f} "
                f"acc {record['train_acc']:.3f}"
                + (f" val top1 {record['val_top1']:.3f}" if "val_top1" in record else "")
                + f" ({record['epoch_time_s']:.1f}s)"
            )
            if info.main:
                train_state = {
                    "step": state.step,
                    "best_top1": state.best_top1,
                    "options": options,
                    "history": state.history,
                }
                payload = ckpts.make_payload(bare_model, optimizer, state.epoch, card, train_state)
                every = cfg.checkpoint_every
                keep = bool(every) and ((epoch + 1) % every == 0 or last)
                ckpts.save_epoch(run, payload, best=is_best or state.best_top1 < 0, keep_epoch=keep)
            barrier(info)
    return state

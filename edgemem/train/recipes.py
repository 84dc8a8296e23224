"""Training recipes: what a batch is and how its loss is computed, per family.

- ``clip``: one random clip per video (temporal jitter, scale/crop/flip), cross-entropy; the
  memory-less presets and their frame-scaled baselines.
- ``memvit``: streaming, see :mod:`edgemem.train.memvit_stream`.
- ``cm``: N clips per video, see :mod:`edgemem.train.cm_train`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.utils.data import DataLoader, DistributedSampler

from edgemem.data.datasets import ClipDataset, SkipTally, VideoRecord, stack_batch
from edgemem.models.streaming import StreamingModel
from edgemem.train.distributed import DistInfo
from edgemem.train.evaluate import evaluate_model
from edgemem.train.loop import StepResult


def masked_ce(logits: Tensor, labels: Tensor, valid: Tensor) -> tuple[Tensor, dict[str, float]]:
    """Mean cross-entropy over valid items (0 with a graph when none is), and hit counts."""
    ce = F.cross_entropy(logits.float(), labels.clamp(min=0), reduction="none")
    w = valid.to(ce.dtype)
    loss = (ce * w).sum() / w.sum().clamp(min=1.0)
    hits = ((logits.argmax(-1) == labels) & valid).sum()
    return loss, {"correct": float(hits), "count": float(valid.sum())}


class RecipeBase(ABC):
    """Shared parts: geometry, loaders over a per-epoch distributed sampler, skip tally, evaluation;
    a family's recipe adds the rest of :class:`edgemem.train.loop.Recipe`."""

    family = "clip"

    def __init__(
        self,
        model: StreamingModel,
        options: dict[str, Any],
        train_items: Sequence[VideoRecord],
        val_items: Sequence[VideoRecord],
        info: DistInfo,
    ) -> None:
        self.model = model
        self.options = options
        self.train_items = list(train_items)
        self.val_items = list(val_items)
        self.info = info
        self.geometry = model.model_card().clip
        self.batch_size = int(options["batch_size"])
        self.workers = int(options.get("workers", 0))
        self.seed = int(options.get("seed", 0))
        self.flip = not options.get("no_flip", False)
        self.tally = SkipTally()

    @abstractmethod
    def steps_per_epoch(self, epoch: int) -> int: ...

    @abstractmethod
    def batches(self, epoch: int) -> Iterator[dict[str, Any]]: ...

    @abstractmethod
    def loss(self, model: nn.Module, batch: dict[str, Any], epoch: int) -> StepResult: ...

    def trainable(self, model: nn.Module) -> nn.Module:
        """The module DDP wraps: its ``forward`` is what ``loss`` calls."""
        return model

    def skipped(self) -> int:
        return len(self.tally.skipped)

    def start_epoch(self, epoch: int, optimizer: Optimizer) -> dict[str, Any] | None:
        return None

    def _sampler(self, ds: Any, epoch: int) -> DistributedSampler:
        s: DistributedSampler = DistributedSampler(
            ds, num_replicas=self.info.world, rank=self.info.rank, shuffle=True, seed=self.seed, drop_last=True
        )
        s.set_epoch(epoch)
        return s

    def _loader(self, ds: Any, epoch: int) -> DataLoader:
        ds.set_epoch(epoch)
        return DataLoader(
            ds,
            batch_size=self.batch_size,
            sampler=self._sampler(ds, epoch),
            num_workers=self.workers,
            collate_fn=stack_batch,
            drop_last=True,
        )

    def evaluate(self, model: StreamingModel) -> dict[str, Any]:
        return evaluate_model(
            model,
            self.family,
            self.val_items,
            batch_size=self.batch_size,
            workers=self.workers,
            info=self.info,
        )


class ShuffledRecipe(RecipeBase):
    """A recipe whose batches are drawn, shuffled per epoch, from the dataset ``self.ds`` its subclass builds."""

    ds: Any

    def steps_per_epoch(self, epoch: int) -> int:
        return len(self._sampler(self.ds, epoch)) // self.batch_size

    def batches(self, epoch: int) -> Iterator[dict[str, Any]]:
        for batch in self._loader(self.ds, epoch):
            self.tally.update(batch)
            yield batch


class ClipRecipe(ShuffledRecipe):
    """Clip-level training: one random, augmented clip per video and step slot."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.ds = ClipDataset(self.train_items, self.geometry, train=True, seed=self.seed, flip=self.flip)

    def loss(self, model: nn.Module, batch: dict[str, Any], epoch: int) -> StepResult:
        dev = self.info.device
        logits = model(batch["frames"].to(dev))
        return StepResult(*masked_ce(logits, batch["label"].to(dev), batch["valid"].to(dev)))


def build_recipe(
    family: str,
    model: StreamingModel,
    options: dict[str, Any],
    train_items: Sequence[VideoRecord],
    val_items: Sequence[VideoRecord],
    info: DistInfo,
) -> RecipeBase:
    if family == "memvit":
        from edgemem.train.memvit_stream import StreamRecipe

        return StreamRecipe(model, options, train_items, val_items, info)
    if family == "cm":
        from edgemem.train.cm_train import CMRecipe

        return CMRecipe(model, options, train_items, val_items, info)
    return ClipRecipe(model, options, train_items, val_items, info)

"""Collaborative Memory training (Yang et al., Sec. 3.3 and 4): N clips per video, video-level loss.

A batch holds B videos x N clips covering each video in order (``MultiClipDataset``: clips jittered
within their segments, one spatial augmentation per video). Two implementations, as the paper:

- batch reduction (default): all B*N clips in one forward; in training mode the backbone runs N
  times, each on one clip of each of the B *different* videos, each video's clips taken in a random
  order (so a batch-norm batch mixes clip positions, as the running statistics do);
- multi-iteration (``multi_iteration``): two scans, one clip's activations alive at a time
  (``CMModel.multi_iteration_backward``), for memory-bound settings.

Loss: eq. 1, ``mean_n CE(h_n) + alpha * CE(mean_n h_n)``. Stage-wise training: ``--init`` a
clip-level checkpoint of the backbone (see :mod:`edgemem.train.init_weights`).

Infusion warm-up (``infusion_warmup`` W > 0, for a gating model): the first W epochs train with the
residual infusion (a video-level signal for the backbone where a clip-level stage has none), then
the model's own infusion takes over with ``o`` re-initialised and its optimizer state dropped; the
trained model, its checkpoints after the switch and its card are the gating model.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from edgemem.data.datasets import MultiClipDataset
from edgemem.models.cm_model import CMModel
from edgemem.train.loop import StepResult
from edgemem.train.recipes import ShuffledRecipe


def cm_clip_logits(model: CMModel, clips: Tensor, two_scan: bool = True) -> Tensor:
    """Clip logits ``[B, N, classes]`` of ``[B, N, 3, T, H, W]`` (two-scan: memory of all N clips)."""
    return model.two_scan(clips) if two_scan else model(clips)


def infusion_at(epoch: int, warmup: int, final: str) -> str:
    """The infusion that trains ``epoch`` (0-based) with a warm-up of ``warmup`` epochs."""
    return "residual" if epoch < warmup else final


class CMRecipe(ShuffledRecipe):
    family = "cm"
    model: CMModel

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        if not isinstance(self.model, CMModel):
            raise TypeError(f"the cm recipe trains a CMModel, got {type(self.model).__name__}")
        self.clips = int(self.model.clips)
        self.alpha = float(self.model.alpha)
        self.multi_iteration = bool(self.options.get("multi_iteration"))
        self.ds = MultiClipDataset(
            self.train_items, self.geometry, self.clips, train=True, seed=self.seed, flip=self.flip
        )
        self.warmup = int(self.options.get("infusion_warmup") or 0)
        self.final_infusion = str(self.options.get("infusion") or self.model.cm.infusion)

    def start_epoch(self, epoch: int, optimizer: Optimizer) -> dict[str, Any] | None:
        """Infusion warm-up: residual before epoch W, then the final infusion with a fresh ``o``."""
        cm = self.model.cm
        want = infusion_at(epoch, self.warmup, self.final_infusion)
        if self.warmup == 0 or cm.infusion == want:
            return None
        cm.infusion = want
        if want == "residual":
            return {"infusion": want, "warmup_epochs": self.warmup}
        with torch.random.fork_rng():  # the same fresh o on every rank (the loop seeds per rank)
            torch.manual_seed(self.seed * 100_003 + epoch)
            cm.o.reset_parameters()
        for p in cm.o.parameters():
            optimizer.state.pop(p, None)
        return {"infusion": want, "o": "re-initialised, optimizer state reset"}

    def loss(self, model: nn.Module, batch: dict[str, Any], epoch: int) -> StepResult:
        dev = self.info.device
        valid = batch["valid"].to(dev)
        keep = valid if bool(valid.any()) else ~valid  # an all-unreadable batch still steps (weight 0)
        frames, labels = batch["frames"].to(dev)[keep], batch["label"].to(dev)[keep].clamp(min=0)
        weight = 1.0 if bool(valid.any()) else 0.0
        bare = model.module if hasattr(model, "module") else model
        if not isinstance(bare, CMModel):
            raise TypeError(f"the cm recipe trains a CMModel, got {type(bare).__name__}")
        if self.multi_iteration:
            loss = bare.multi_iteration_backward(frames, labels, self.alpha)
            if weight == 0.0:
                for p in bare.parameters():
                    p.grad = None
            return StepResult(loss * weight, backward_done=True)
        logits = model(frames)  # [B, N, classes]
        loss = bare.video_loss(logits.float(), labels, self.alpha) * weight
        hits = float((logits.float().mean(1).argmax(-1) == labels).sum()) if weight else 0.0
        return StepResult(loss, {"correct": hits, "count": float(len(labels)) if weight else 0.0})

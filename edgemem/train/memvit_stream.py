"""MeMViT training the official way: streaming consecutive clips with memory carried across iterations.

Each of the B batch slots walks the consecutive clips of its videos in order
(``StreamingBatchSampler``); iteration i feeds clip i of every slot to ``MViT.train_step`` with
``reset`` where a slot starts a new video, and the state it returns (compressed memory, plus the
previous clip's raw K-bar/V-bar) is carried to iteration i + 1, detached. ``train_step`` compresses
the previous clip's raw memory inside the current step, so the current loss trains the compression
modules without back-propagation through time (the paper's pipelined compression, Sec. 4.2).

Appendix A.2: the video length grows progressively (``curriculum``: over that fraction of the
epochs, from one clip to the full video, in equal stages; the sampler keeps the *last* clips of each
video), and memory clips are dropped at random during training (``memory_drop``: the model's
``MemoryConfig.mem_drop``, per attended clip and iteration; all memory is used at inference).

Loss (``stream_loss``): ``"last"`` (default), cross-entropy of each video's last clip, the clip
evaluation reads, whose memory has seen the whole video; iterations where no slot ends a video
run forward only (no graph, no optimizer step) and just carry the memory. ``"all"``: every valid
clip against its video's label, as the paper's Kinetics training.

With ``"last"`` the sampler deals the videos in groups that end on the same iteration
(``align_ends``: shorter videos start later), so every optimizer step sees a full batch of videos,
and back-propagation through time (``memory_grad="bptt"``, the default), which keeps each video's
graph from its first clip to the step at its last, is never cut: an optimizer step detaches every
slot's memory, and on videos of unequal length a step at the end of one slot's video would cut the
others' history, so their cue clips would get no gradient.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from edgemem.data.datasets import StreamingDataset, stack_batch
from edgemem.data.samplers import StreamingBatchSampler
from edgemem.errors import InputError
from edgemem.models.mvit import MViT
from edgemem.models.streaming import State
from edgemem.train.distributed import all_sum
from edgemem.train.loop import StepResult
from edgemem.train.recipes import RecipeBase, masked_ce

STREAM_LOSSES = ("all", "last")


class TrainStep(nn.Module):
    """``forward(frames, state, reset) = model.train_step(...)``, so DDP can wrap the streaming step."""

    def __init__(self, model: MViT, bptt: bool = False) -> None:
        super().__init__()
        self.model = model
        self.bptt = bptt

    def forward(self, frames: Tensor, state: State, reset: Tensor) -> tuple[Tensor, State]:
        return self.model.train_step(frames, state, reset, bptt=self.bptt)


def curriculum_clips(epoch: int, epochs: int, fraction: float, full: int) -> int | None:
    """Clips per video in ``epoch``: 1, 2, ... ``full`` in equal stages over ``fraction`` of the epochs,
    then the full videos (None)."""
    ramp = fraction * epochs
    if full <= 1 or epoch >= ramp:
        return None
    return min(full, 1 + math.floor(epoch * full / ramp))


class StreamRecipe(RecipeBase):
    family = "memvit"
    model: MViT

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        if not isinstance(self.model, MViT):
            raise TypeError(f"the memvit recipe trains an MViT, got {type(self.model).__name__}")
        mem = self.model.cfg.memory
        if mem is None:
            raise InputError("the memvit recipe trains an MViT with memory; this one has none")
        drop = float(self.options.get("memory_drop") or 0.0)
        if drop != mem.mem_drop:
            self.model.cfg = self.model.cfg.replace(memory=dataclasses.replace(mem, mem_drop=drop))
        self.stream_loss = self.options.get("stream_loss") or "last"
        if self.stream_loss not in STREAM_LOSSES:
            raise InputError(f"stream loss '{self.stream_loss}' not in {STREAM_LOSSES}")
        self.ds = StreamingDataset(self.train_items, self.geometry, train=True, seed=self.seed, flip=self.flip)
        for video, error in self.ds.skipped.items():
            self.tally.add(video, error)
        if not self.ds.readable_videos:
            raise InputError("no readable training video")
        self.full = max(self.ds.clips_per_video)
        self.epochs = int(self.options["epochs"])
        self.fraction = float(self.options.get("curriculum") or 0.0)
        self.bptt = (self.options.get("memory_grad") or "bptt") == "bptt"
        if self.bptt and self.stream_loss != "last":
            raise InputError("--stream-loss all needs --memory-grad pipelined (BPTT steps once per video)")
        self.state: State = {}

    def trainable(self, model: nn.Module) -> nn.Module:
        if not isinstance(model, MViT):
            raise TypeError(f"the memvit recipe trains an MViT, got {type(model).__name__}")
        return TrainStep(model, bptt=self.bptt)

    def _batch_sampler(self, epoch: int) -> StreamingBatchSampler:
        s = StreamingBatchSampler(
            self.ds.clips_per_video,
            self.batch_size,
            shuffle=True,
            seed=self.seed,
            num_replicas=self.info.world,
            rank=self.info.rank,
            max_clips=curriculum_clips(epoch, self.epochs, self.fraction, self.full),
            videos=self.ds.readable_videos,
            align_ends=self.stream_loss == "last",
        )
        s.set_epoch(epoch)
        return s

    def steps_per_epoch(self, epoch: int) -> int:
        return len(self._batch_sampler(epoch))

    def batches(self, epoch: int) -> Iterator[dict[str, Any]]:
        self.ds.set_epoch(epoch)
        self.state = {k: v.to(self.info.device) for k, v in self.model.init_train_state(self.batch_size).items()}
        loader = DataLoader(
            self.ds, batch_sampler=self._batch_sampler(epoch), num_workers=self.workers, collate_fn=stack_batch
        )
        for batch in loader:
            self.tally.update(batch)
            yield batch

    def loss(self, model: nn.Module, batch: dict[str, Any], epoch: int) -> StepResult:
        dev = self.info.device
        reset = batch["first"].to(dev)
        valid = batch["valid"].to(dev)
        if self.stream_loss == "last":
            valid = valid & batch["last"].to(dev)
            # No video ends in this iteration on any rank: carry the memory forward, without a graph
            # (pipelined) or with it (BPTT, through the unwrapped step: DDP sees one forward per step).
            if all_sum([float(valid.any())], self.info)[0] == 0.0:
                if self.bptt:
                    _, self.state = getattr(model, "module", model)(batch["frames"].to(dev), self.state, reset)
                    return StepResult.forward_only()
                with torch.no_grad():
                    _, new = model(batch["frames"].to(dev), self.state, reset)
                self.state = {k: v.detach().float() for k, v in new.items()}
                return StepResult.forward_only()
        logits, new = model(batch["frames"].to(dev), self.state, reset)
        # Carried to the next iteration without gradient (and in float32 whatever autocast did).
        self.state = {k: v.detach().float() for k, v in new.items()}
        return StepResult(*masked_ce(logits, batch["label"].to(dev), valid))

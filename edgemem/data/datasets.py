"""The torch Datasets that sample clips from a dataset directory (``edgemem.data.video_dir``).

Every item is a dict with ``frames`` (float, normalised), ``label``, ``video`` (index in the split),
``valid`` and ``error``. A video that cannot be decoded gives ``valid = False``, zero frames and
the reason in ``error`` instead of raising, so a run never crashes on one bad file: mask the loss
with ``valid`` and count with ``SkipTally``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from edgemem.contract import ClipSpec
from edgemem.data.augment import EvalTransform, TrainAugment, to_frames, train_scales
from edgemem.data.samplers import (
    PADDING,
    StreamIndex,
    consecutive_clip_count,
    consecutive_clip_start,
    multi_clip_starts,
    random_clip_start,
    uniform_clip_starts,
)
from edgemem.data.video import VideoInfo, VideoReader, probe
from edgemem.data.video_dir import DECODE_ERRORS, SPLITS, VideoDir, VideoRecord, check_dataset, decode_error
from edgemem.errors import InputError

# The directory layout lives in ``video_dir``; its names stay importable from here.
__all__ = [
    "SPLITS",
    "ClipDataset",
    "MultiClipDataset",
    "SkipTally",
    "StreamingDataset",
    "VideoDir",
    "VideoRecord",
    "check_dataset",
    "eval_transform",
    "stack_batch",
    "train_augment",
]

log = logging.getLogger(__name__)


def train_augment(clip: ClipSpec, flip: bool = True) -> TrainAugment:
    """The training augmentation of a model's clip (scale jitter around its crop size, ``flip``)."""
    lo, hi = train_scales(clip.crop_size)
    return TrainAugment(clip.crop_size, lo, hi, clip.mean, clip.std, flip)


def eval_transform(clip: ClipSpec, num_crops: int = 1) -> EvalTransform:
    """The evaluation preprocessing of a model's clip (``num_crops`` spatial crops)."""
    return EvalTransform(clip.crop_size, clip.crop_size, clip.mean, clip.std, num_crops)


@dataclass
class SkipTally:
    """Counts videos skipped as unreadable, from the ``valid``/``error`` fields of batches."""

    skipped: dict[int, str] = field(default_factory=dict)

    def update(self, batch: dict[str, Any]) -> None:
        valid = batch["valid"].reshape(-1)
        videos = batch["video"].reshape(-1)
        errors = batch["error"]
        for i in torch.nonzero(~valid).flatten().tolist():
            if errors[i] and int(videos[i]) >= 0:
                self.skipped.setdefault(int(videos[i]), errors[i])

    def add(self, video: int, error: str) -> None:
        self.skipped.setdefault(video, error)

    def summary(self) -> str:
        if not self.skipped:
            return "no unreadable videos"
        first = next(iter(self.skipped.values()))
        return f"skipped {len(self.skipped)} unreadable video(s); first: {first}"


class _ClipSource(Dataset):
    """Shared decoding: clips at given start positions, with skip-on-error."""

    def __init__(self, records: Sequence[VideoRecord], geometry: ClipSpec, seed: int = 0) -> None:
        self.records = list(records)
        self.geometry = geometry
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Change the random augmentation (workers must be re-created: ``persistent_workers=False``)."""
        self.epoch = epoch

    def _gen(self, *key: int) -> torch.Generator:
        h = 0
        for k in (self.seed, self.epoch, *key):
            h = (h * 1_000_003 + k + 1) % (2**63 - 1)
        return torch.Generator().manual_seed(h)

    def _length(self, info: VideoInfo) -> int:
        """Video length in target-rate frames."""
        return max(1, math.floor(info.num_frames * self.geometry.target_fps / info.fps + 1e-6))

    def _decode(self, reader: VideoReader, starts: Sequence[int]) -> np.ndarray:
        """Frames of the clips at ``starts`` (target-rate), concatenated in time: ``[n*T, H, W, 3]``. A
        clip running past the video's end repeats its last sampled frame (as ``edgemem stream`` pads a
        source shorter than one clip)."""
        g = self.geometry
        scale = reader.info.fps / g.target_fps
        last = reader.info.num_frames - 1
        length = self._length(reader.info)
        idx = []
        for s in starts:
            inside = max(0, (length - 1 - s) // g.sampling_rate)  # the last sample before the end
            idx += [min(last, round((s + min(j, inside) * g.sampling_rate) * scale)) for j in range(g.frames)]
        return reader.get_frames(idx)

    def _invalid(self, video: int, error: str, shape: tuple[int, ...]) -> dict[str, Any]:
        log.warning("skipping unreadable video: %s", error)
        return {
            "frames": torch.zeros(shape),
            "label": torch.tensor(-1),
            "video": torch.tensor(video),
            "valid": torch.tensor(False),
            "error": error,
        }

    def _clip_shape(self) -> tuple[int, int, int, int]:
        g = self.geometry
        return (3, g.frames, g.crop_size, g.crop_size)


class ClipDataset(_ClipSource):
    """Clip-level sampling. Train: one random clip per video (temporal jitter) with augmentation.
    Eval: ``temporal_views`` x ``spatial_crops`` test views per video (item ``video * views + view``),
    ``clip`` = temporal view, ``crop`` = spatial crop; average the views' scores per video."""

    def __init__(
        self,
        records: Sequence[VideoRecord],
        geometry: ClipSpec,
        train: bool,
        temporal_views: int = 1,
        spatial_crops: int = 1,
        seed: int = 0,
        flip: bool = True,
    ) -> None:
        super().__init__(records, geometry, seed)
        self.train = train
        self.temporal_views = 1 if train else temporal_views
        self.spatial_crops = 1 if train else spatial_crops
        self.augment = train_augment(geometry, flip)
        self.transform = eval_transform(geometry, self.spatial_crops)

    @property
    def views(self) -> int:
        return self.temporal_views * self.spatial_crops

    def __len__(self) -> int:
        return len(self.records) * self.views

    def __getitem__(self, index: int) -> dict[str, Any]:
        video, view = divmod(int(index), self.views)
        t_view, s_view = divmod(view, self.spatial_crops)
        rec = self.records[video]
        try:
            with VideoReader(rec.path) as reader:
                length = self._length(reader.info)
                if self.train:
                    start = random_clip_start(length, self.geometry.span, self._gen(video))
                else:
                    start = uniform_clip_starts(length, self.geometry.span, self.temporal_views)[t_view]
                clip = to_frames(self._decode(reader, [start]))
        except DECODE_ERRORS as e:
            return self._invalid(video, decode_error(rec.path, e), self._clip_shape()) | {
                "clip": torch.tensor(t_view),
                "crop": torch.tensor(s_view),
            }
        frames = self.augment(clip, self._gen(video, 1)) if self.train else self.transform(clip, s_view)
        return {
            "frames": frames,
            "label": torch.tensor(rec.label),
            "video": torch.tensor(video),
            "clip": torch.tensor(t_view),
            "crop": torch.tensor(s_view),
            "valid": torch.tensor(True),
            "error": "",
        }


class MultiClipDataset(_ClipSource):
    """N clips per video covering it in order (CM): ``frames`` is ``[N, 3, T, H, W]``.

    Train: clips jittered within the gaps between them, one augmentation (scale, crop, flip) for the
    whole video. Eval: evenly spread clips, ``spatial_crops`` views per video (item
    ``video * spatial_crops + crop``).
    """

    def __init__(
        self,
        records: Sequence[VideoRecord],
        geometry: ClipSpec,
        num_clips: int,
        train: bool,
        spatial_crops: int = 1,
        seed: int = 0,
        flip: bool = True,
    ) -> None:
        super().__init__(records, geometry, seed)
        if num_clips < 1:
            raise InputError(f"clips per video must be >= 1, got {num_clips}")
        self.num_clips = num_clips
        self.train = train
        self.spatial_crops = 1 if train else spatial_crops
        self.augment = train_augment(geometry, flip)
        self.transform = eval_transform(geometry, self.spatial_crops)

    def __len__(self) -> int:
        return len(self.records) * self.spatial_crops

    def __getitem__(self, index: int) -> dict[str, Any]:
        video, s_view = divmod(int(index), self.spatial_crops)
        rec = self.records[video]
        g = self.geometry
        try:
            with VideoReader(rec.path) as reader:
                gen = self._gen(video) if self.train else None
                starts = multi_clip_starts(self._length(reader.info), g.span, self.num_clips, gen)
                clip = to_frames(self._decode(reader, starts))
        except DECODE_ERRORS as e:
            shape = (self.num_clips, *self._clip_shape())
            return self._invalid(video, decode_error(rec.path, e), shape) | {"crop": torch.tensor(s_view)}
        x = self.augment(clip, self._gen(video, 1)) if self.train else self.transform(clip, s_view)
        frames = x.reshape(3, self.num_clips, g.frames, *x.shape[-2:]).transpose(0, 1).contiguous()
        return {
            "frames": frames,
            "label": torch.tensor(rec.label),
            "video": torch.tensor(video),
            "crop": torch.tensor(s_view),
            "valid": torch.tensor(True),
            "error": "",
        }


class StreamingDataset(_ClipSource):
    """Consecutive clips of each video in order (MeMViT streaming); a partial last clip ends at the
    video's end, overlapping the clip before (``consecutive_clip_start``), as ``edgemem stream`` forms it.

    Index it with the ``StreamIndex`` items of ``StreamingBatchSampler(dataset.clips_per_video, B)``:
    each item is one clip with ``video``, ``clip``, ``first`` (reset the slot's memory before it),
    ``last`` (the video's final clip: classify it) and ``valid`` (false for padding and unreadable
    videos). Videos are probed on construction; unreadable ones get 0 clips, are listed in
    ``skipped`` and never sampled. Train augmentation is drawn once per video, so a video's clips
    stay spatially consistent.
    """

    def __init__(
        self, records: Sequence[VideoRecord], geometry: ClipSpec, train: bool, seed: int = 0, flip: bool = True
    ) -> None:
        super().__init__(records, geometry, seed)
        self.train = train
        self.augment = train_augment(geometry, flip)
        self.transform = eval_transform(geometry, 1)
        self.clips_per_video: list[int] = []
        self.skipped: dict[int, str] = {}
        for i, rec in enumerate(self.records):
            try:
                info = probe(rec.path)
            except DECODE_ERRORS as e:
                log.warning("skipping unreadable video: %s", e)
                self.skipped[i] = decode_error(rec.path, e)
                self.clips_per_video.append(0)
                continue
            self.clips_per_video.append(consecutive_clip_count(self._length(info), geometry.span))

    @property
    def readable_videos(self) -> list[int]:
        return [i for i, n in enumerate(self.clips_per_video) if n > 0]

    def __len__(self) -> int:
        return sum(self.clips_per_video)

    def __getitem__(self, index: StreamIndex) -> dict[str, Any]:
        if not isinstance(index, StreamIndex):
            raise TypeError("index a StreamingDataset with StreamingBatchSampler's StreamIndex items")
        flags = {"clip": torch.tensor(index.clip), "first": torch.tensor(index.first)}
        flags["last"] = torch.tensor(index.last)
        if index.is_padding:
            return self._padding() | flags
        rec = self.records[index.video]
        g = self.geometry
        try:
            with VideoReader(rec.path) as reader:
                start = consecutive_clip_start(index.clip, self._length(reader.info), g.frames, g.sampling_rate)
                clip = to_frames(self._decode(reader, [start]))
        except DECODE_ERRORS as e:
            return self._invalid(index.video, decode_error(rec.path, e), self._clip_shape()) | flags
        frames = self.augment(clip, self._gen(index.video)) if self.train else self.transform(clip)
        return {
            "frames": frames,
            "label": torch.tensor(rec.label),
            "video": torch.tensor(index.video),
            "valid": torch.tensor(True),
            "error": "",
        } | flags

    def _padding(self) -> dict[str, Any]:
        return {
            "frames": torch.zeros(self._clip_shape()),
            "label": torch.tensor(-1),
            "video": torch.tensor(PADDING.video),
            "valid": torch.tensor(False),
            "error": "",
        }


def stack_batch(items: Sequence[dict[str, Any]]) -> dict[str, Tensor | list[str]]:
    """Collate dataset items: tensors stacked, ``error`` strings kept as a list."""
    out: dict[str, Any] = {}
    for k in items[0]:
        vals = [it[k] for it in items]
        out[k] = vals if isinstance(vals[0], str) else torch.stack(vals)
    return out

"""Training augmentation and test-view crops on clips, in torch.

Clips are float tensors ``[3, T, H, W]`` with values in [0, 1] (``to_clip`` makes them from decoded
uint8 frames); normalisation by the model card's mean/std comes last.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


def to_clip(frames: np.ndarray | Tensor) -> Tensor:
    """uint8 ``[T, H, W, 3]`` frames to a float ``[3, T, H, W]`` clip in [0, 1]."""
    x = torch.as_tensor(frames)
    return x.permute(3, 0, 1, 2).float().div_(255.0)


def short_side_resize(clip: Tensor, size: int) -> Tensor:
    """Resize so the shorter side is ``size`` (bilinear, antialiased when shrinking)."""
    _, _, h, w = clip.shape
    if min(h, w) == size:
        return clip
    if h <= w:
        nh, nw = size, max(size, round(w * size / h))
    else:
        nh, nw = max(size, round(h * size / w)), size
    x = clip.permute(1, 0, 2, 3)  # T as batch
    x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False, antialias=nh < h)
    return x.permute(1, 0, 2, 3).clamp_(0.0, 1.0)


def crop(clip: Tensor, top: int, left: int, size: int) -> Tensor:
    return clip[:, :, top : top + size, left : left + size]


def random_crop(clip: Tensor, size: int, gen: torch.Generator | None = None) -> Tensor:
    """A ``size`` x ``size`` crop at a uniformly random position."""
    _, _, h, w = clip.shape
    top = int(torch.randint(h - size + 1, (1,), generator=gen))
    left = int(torch.randint(w - size + 1, (1,), generator=gen))
    return crop(clip, top, left, size)


def spatial_crop(clip: Tensor, size: int, index: int = 1, num_crops: int = 3) -> Tensor:
    """Crop ``index`` of ``num_crops`` spread along the longer side (1 of 3, or 0 of 1: the centre)."""
    _, _, h, w = clip.shape
    top, left = (h - size) // 2, (w - size) // 2
    if num_crops > 1:
        pos = round(index * (max(h, w) - size) / (num_crops - 1))
        if h > w:
            top = pos
        else:
            left = pos
    return crop(clip, top, left, size)


def normalize(clip: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    m = torch.tensor(mean, dtype=clip.dtype).view(3, 1, 1, 1)
    s = torch.tensor(std, dtype=clip.dtype).view(3, 1, 1, 1)
    return (clip - m) / s


@dataclass(frozen=True)
class TrainAugment:
    """Short-side scale jitter in ``[min_scale, max_scale]``, random crop, horizontal flip, normalise."""

    crop_size: int
    min_scale: int
    max_scale: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    flip: bool = True

    def __call__(self, clip: Tensor, gen: torch.Generator | None = None) -> Tensor:
        size = int(torch.randint(self.min_scale, self.max_scale + 1, (1,), generator=gen))
        clip = random_crop(short_side_resize(clip, size), self.crop_size, gen)
        if self.flip and float(torch.rand(1, generator=gen)) < 0.5:
            clip = clip.flip(-1)
        return normalize(clip, self.mean, self.std)


@dataclass(frozen=True)
class EvalTransform:
    """Short-side resize, one of ``num_crops`` spatial crops (the centre for 1), normalise."""

    crop_size: int
    short_side: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    num_crops: int = 1

    def __call__(self, clip: Tensor, crop_index: int = 0) -> Tensor:
        clip = short_side_resize(clip, self.short_side)
        return normalize(spatial_crop(clip, self.crop_size, crop_index, self.num_crops), self.mean, self.std)


def default_scales(crop_size: int) -> tuple[int, int, int]:
    """(eval short side, train min scale, train max scale) in PySlowFast's Kinetics proportions
    (crop 224: test 256, jitter 256-320)."""
    short = round(crop_size * 256 / 224)
    return short, short, round(crop_size * 320 / 224)

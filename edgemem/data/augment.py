"""Training augmentation and test-view crops, in torch, on top of the inference preprocessing.

Decoded uint8 frames become float ``[T, 3, H, W]`` in [0, 1] (``edgemem.data.transforms``); the
transforms here return model clips ``[3, T, S, S]``, normalised by the model card's mean/std.
Evaluation resizes the short side to the crop size like ``transforms.ClipTransform`` (what the
runtimes see), so accuracy measured here is accuracy on the runtimes' input.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from edgemem.data import transforms


def to_frames(frames: np.ndarray) -> Tensor:
    """Decoded uint8 ``[T, H, W, 3]`` frames -> float ``[T, 3, H, W]`` in [0, 1]."""
    return transforms.to_tensor(list(frames))


def random_crop(x: Tensor, size: int, gen: torch.Generator | None = None) -> Tensor:
    """A ``size`` x ``size`` crop of ``[..., H, W]`` at a uniformly random position."""
    h, w = x.shape[-2:]
    top = int(torch.randint(h - size + 1, (1,), generator=gen))
    left = int(torch.randint(w - size + 1, (1,), generator=gen))
    return x[..., top : top + size, left : left + size]


def spatial_crop(x: Tensor, size: int, index: int, num_crops: int) -> Tensor:
    """Crop ``index`` of ``num_crops`` spread along the longer side (one crop: the centre)."""
    if num_crops == 1:
        return transforms.center_crop(x, size)
    h, w = x.shape[-2:]
    top, left = (h - size) // 2, (w - size) // 2
    pos = round(index * (max(h, w) - size) / (num_crops - 1))
    if h > w:
        top = pos
    else:
        left = pos
    return x[..., top : top + size, left : left + size]


def _to_clip(x: Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> Tensor:
    return transforms.normalize(x, mean, std).permute(1, 0, 2, 3).contiguous()


@dataclass(frozen=True)
class TrainAugment:
    """Short-side scale jitter in ``[min_scale, max_scale]``, random crop, horizontal flip, normalise."""

    crop_size: int
    min_scale: int
    max_scale: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    flip: bool = True

    def __call__(self, x: Tensor, gen: torch.Generator | None = None) -> Tensor:
        """``[T, 3, H, W]`` in [0, 1] -> ``[3, T, S, S]``."""
        size = int(torch.randint(self.min_scale, self.max_scale + 1, (1,), generator=gen))
        x = random_crop(transforms.short_side_resize(x, size), self.crop_size, gen)
        if self.flip and float(torch.rand(1, generator=gen)) < 0.5:
            x = x.flip(-1)
        return _to_clip(x, self.mean, self.std)


@dataclass(frozen=True)
class EvalTransform:
    """Short-side resize to ``short_side``, crop ``index`` of ``num_crops`` (1: centre), normalise."""

    crop_size: int
    short_side: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    num_crops: int = 1

    def __call__(self, x: Tensor, crop_index: int = 0) -> Tensor:
        """``[T, 3, H, W]`` in [0, 1] -> ``[3, T, S, S]``."""
        x = spatial_crop(transforms.short_side_resize(x, self.short_side), self.crop_size, crop_index, self.num_crops)
        return _to_clip(x, self.mean, self.std)


def train_scales(crop_size: int) -> tuple[int, int]:
    """Short-side jitter range for training: from the crop size (the eval scale) to 1.25x it."""
    return crop_size, round(crop_size * 1.25)

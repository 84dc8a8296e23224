"""Inference preprocessing as a model card prescribes: short-side resize, centre crop, normalise.

Frames are uint8 RGB ``H x W x 3`` arrays; a clip of T of them becomes float32 ``[3, T, S, S]``
(``S`` = the card's ``crop_size``), values ``(x / 255 - mean) / std`` per channel. ``ClipTransform``
binds these to a card; ``stack_clips`` makes the ``[B, 3, T, S, S]`` batch a session steps.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from edgemem.contract import ClipSpec
from edgemem.errors import InputError


def to_tensor(images: Sequence[np.ndarray]) -> torch.Tensor:
    """T uint8 ``H x W x 3`` arrays -> float ``[T, 3, H, W]`` in [0, 1]."""
    if not images:
        raise InputError("a clip needs at least one frame")
    shape = images[0].shape
    if len(shape) != 3 or shape[2] != 3 or any(im.shape != shape for im in images):
        raise InputError(f"frames must be H x W x 3 arrays of one size, got {[im.shape for im in images[:3]]}")
    x = torch.from_numpy(np.stack(images))
    return x.permute(0, 3, 1, 2).float().div_(255.0)


def short_side_resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """Resize ``[T, 3, H, W]`` so that its shorter side is ``size`` (bilinear, antialiased)."""
    h, w = x.shape[-2:]
    if min(h, w) == size:
        return x
    if h <= w:
        nh, nw = size, int(math.floor(w * size / h))
    else:
        nh, nw = int(math.floor(h * size / w)), size
    return F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False, antialias=True)


def center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    if h < size or w < size:
        raise InputError(f"cannot crop {size}x{size} out of {h}x{w}")
    top, left = (h - size) // 2, (w - size) // 2
    return x[..., top : top + size, left : left + size]


def normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """``(x - mean) / std`` per channel of ``[T, 3, H, W]``."""
    m = torch.tensor(mean, dtype=x.dtype).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype).view(1, -1, 1, 1)
    return (x - m) / s


class ClipTransform:
    """A model's inference preprocessing (``card.clip``): T frames -> float32 ``[3, T, S, S]``."""

    def __init__(self, clip: ClipSpec) -> None:
        self.frames = clip.frames
        self.size = clip.crop_size
        self.mean = list(clip.mean)
        self.std = list(clip.std)

    def __call__(self, images: Sequence[np.ndarray]) -> np.ndarray:
        if len(images) != self.frames:
            raise InputError(f"a clip of this model has {self.frames} frames, got {len(images)}")
        x = center_crop(short_side_resize(to_tensor(images), self.size), self.size)
        x = normalize(x, self.mean, self.std)
        return np.ascontiguousarray(x.permute(1, 0, 2, 3).numpy(), dtype=np.float32)


def stack_clips(clips: Sequence[np.ndarray]) -> np.ndarray:
    """``[3, T, S, S]`` clips -> the ``[B, 3, T, S, S]`` float32 batch."""
    return np.ascontiguousarray(np.stack(clips), dtype=np.float32)

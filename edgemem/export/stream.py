"""Deterministic test streams for verification: several videos per batch slot, boundaries at
different steps in different slots, clips of one video correlated (a base clip plus noise)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgemem.errors import InputError


@dataclass(frozen=True)
class Stream:
    """``frames[t]`` [B,C,T,H,W] float32 and ``reset[t]`` [B] bool per step; ``boundaries[b]`` lists
    the steps where slot b starts a new video (step 0 excluded: every slot starts one there)."""

    frames: list[np.ndarray]
    reset: list[np.ndarray]
    boundaries: list[list[int]]

    @property
    def steps(self) -> int:
        return len(self.frames)

    @property
    def batch(self) -> int:
        return int(self.frames[0].shape[0])


def boundary_steps(clips: int, boundaries: int, slot: int) -> list[int]:
    """``boundaries`` evenly spread steps in [1, clips), shifted by ``slot`` so slots differ."""
    if clips < 1:
        raise InputError(f"--clips must be >= 1, got {clips}")
    if boundaries < 0:
        raise InputError(f"--boundaries must be >= 0, got {boundaries}")
    if clips < boundaries + 1:
        raise InputError(f"{clips} clips cannot hold {boundaries} video boundaries")
    base = [round((i + 1) * clips / (boundaries + 1)) for i in range(boundaries)]
    steps = sorted({1 + (s - 1 + slot) % (clips - 1) for s in base})
    return steps


def make_stream(
    input_shape: tuple[int, ...], *, batch: int = 1, clips: int = 16, boundaries: int = 2, seed: int = 0
) -> Stream:
    """A stream of ``clips`` steps for ``batch`` slots with clips shaped ``input_shape`` (C,T,H,W)."""
    rng = np.random.default_rng(seed)
    bounds = [boundary_steps(clips, boundaries, b) for b in range(batch)]
    frames = np.empty((clips, batch, *input_shape), dtype=np.float32)
    reset = np.zeros((clips, batch), dtype=bool)
    for b in range(batch):
        base = np.empty(input_shape, dtype=np.float32)  # replaced at t == 0
        for t in range(clips):
            if t == 0 or t in bounds[b]:
                base = rng.standard_normal(input_shape, dtype=np.float32) * 0.8
                reset[t, b] = True
            frames[t, b] = base + 0.5 * rng.standard_normal(input_shape, dtype=np.float32)
    return Stream(list(frames), list(reset), bounds)

"""How much of each video's first cue a streamed MeMViT attends directly, from the generator's timing.

Used by docs/TRAINING.md ("Where the first cue is"). The video is streamed as edgemem does
(docs/DATA.md): `memvit_tiny`'s clips from the first frame, the partial last clip moved back to end
at the video's last sample (or, `dropped`, the handling before the nineteenth session: not
streamed). The last clip's memory blocks attend the 3 (or 4) clips before it directly; anything
older reaches them only through memory of memory. Prints, over a set's training and validation
videos, the share of videos whose first cue is not in that window at all, in part and (at least half)
whole, for 3 and 4 memory clips:

    python docs/foreign/reach.py TASK DISTANCE TRAIN_VIDEOS VAL_VIDEOS SEED [MAX_TAIL]

with the arguments the set was made with (docs/foreign/families.py).
"""

from __future__ import annotations

import math
import sys

import numpy as np
from families import CUE_S, FPS, timing

from edgemem.data.samplers import consecutive_clip_count, consecutive_clip_start
from edgemem.models.registry import create_model

CLIP = create_model("memvit_tiny").cfg.clip


def first_cue_in_memory(starts: list[float], frames: int, memory: int, dropped: bool) -> float:
    """The fraction of the first cue inside the ``memory`` clips before the classified clip: the clips
    edgemem streams (``consecutive_clip_start``) or, ``dropped``, whole clips only."""
    length = math.floor(frames * CLIP.target_fps / FPS + 1e-6)  # target-rate frames, as StreamingDataset
    span = CLIP.frames * CLIP.sampling_rate
    n = length // span if dropped else consecutive_clip_count(length, span)
    if n < 2:
        return 0.0

    def start(i: int) -> float:
        frame = i * span if dropped else consecutive_clip_start(i, length, CLIP.frames, CLIP.sampling_rate)
        return frame / CLIP.target_fps

    low, high = start(max(0, n - 1 - memory)), start(n - 2) + span / CLIP.target_fps
    return max(0.0, min(starts[0] + CUE_S, high) - max(starts[0], low)) / CUE_S


def main(task: str, distance: int, train: int, val: int, seed: int, max_tail: float) -> None:
    videos = [(0, i) for i in range(train)] + [(10**6, i) for i in range(val)]
    timings = [timing(task, distance, np.random.default_rng([seed, offset + i]), max_tail) for offset, i in videos]
    print(f"{task} {distance}, {len(videos)} videos: the first cue in the memory's direct window")
    for dropped in (False, True):
        for memory in (3, 4):
            f = np.array([first_cue_in_memory(s, n, memory, dropped) for s, n in timings])
            handling = "last clip dropped  " if dropped else "last clip moved back"
            print(
                f"  {handling}, {memory} memory clips: none {np.mean(f == 0):.2f}  under half {np.mean((f > 0) & (f < 0.5)):.2f}"
                f"  at least half {np.mean(f >= 0.5):.2f}  mean {f.mean():.2f}"
            )


if __name__ == "__main__":
    a = sys.argv[1:]
    main(a[0], int(a[1]), int(a[2]), int(a[3]), int(a[4]), float(a[5]) if len(a) > 5 else 0.4)

"""How much of each disc edgemem's training crop shows, against the evaluation's centre crop.

Recomputes the discs of a `families.py` size set from its generator draws (no decoding) and, for
every training video, draws CROPS training crops as `edgemem train` does (short side uniform in
`edgemem.data.augment.train_scales`, a uniform random crop of the model's 32 x 32), then prints,
per pair of disc sizes, the share of crops in which the two visible radii (sqrt of the visible
area) differ by more than 22% (about half the step from a medium to a large disc), for training
crops and for the evaluation's centre crop (short side 32):

    python docs/foreign/crop_coverage.py size-match 3 240 17 [CROPS]     # TASK DISTANCE TRAIN_VIDEOS SEED
"""

from __future__ import annotations

import sys

import families as F
import numpy as np

from edgemem.data.augment import train_scales

CROP = 32


def visible(r: float, cx: float, cy: float, short: int, left: int, top: int) -> float:
    """Pixels of a disc (frame coordinates) inside the crop at (left, top) of the frame resized to ``short``."""
    f = short / F.H
    ys, xs = np.mgrid[0:CROP, 0:CROP] + 0.5
    return float((((xs + left - cx * f) ** 2 + (ys + top - cy * f) ** 2) < (r * f) ** 2).sum())


def differ(areas: list[float]) -> bool:
    a, b = max(areas[0], 1.0), max(areas[1], 1.0)
    return abs(np.log(np.sqrt(a / b))) > 0.2


def main(task: str, distance: int, videos: int, seed: int, crops: int) -> None:
    rng = np.random.default_rng(0)
    lo, hi = train_scales(CROP)
    tally: dict[str, list[int]] = {}
    for i in range(videos):
        *_, cues, _, _, geo = F.draw(task, distance, np.random.default_rng([seed, i]), 0.4)
        pair = "".join("SML"[c] for c in cues)
        views = []
        for _ in range(crops):
            short = int(rng.integers(lo, hi + 1))
            width = round(F.W * short / F.H)
            views.append(("train", short, int(rng.integers(width - CROP + 1)), int(rng.integers(short - CROP + 1))))
        views.append(("eval", CROP, (round(F.W * CROP / F.H) - CROP) // 2, 0))
        for kind, short, left, top in views:
            areas = [visible(r, cx, cy, short, left, top) for _, r, _, cx, cy in geo]
            t = tally.setdefault(f"{pair} {kind}", [0, 0])
            t[0] += differ(areas)
            t[1] += 1
    for key in sorted(tally):
        n, total = tally[key]
        print(f"{key}: visible radii differ by > 22% in {n} of {total} crops ({n / total:.0%})")


if __name__ == "__main__":
    task, distance, videos, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    main(task, distance, videos, seed, int(sys.argv[5]) if len(sys.argv) > 5 else 8)

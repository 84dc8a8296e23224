"""Long-range task families written apart from `edgemem data synth`, as stand-ins for a user's own data.

Used by docs/TRAINING.md ("Families edgemem did not make"). Every video: W x H = 64 x 48 (4:3) at
25 fps in H.264 (libx264, yuv420p), a static noise texture of random brightness per video, two grey
blobs wandering through the whole video, a lead of 0-0.4 s before the first cue and a tail of
0-MAX_TAIL s after the last, so cue onsets fall anywhere relative to a model's clip grid and lengths vary.
A cue lasts 0.6 s; the second starts DISTANCE x 16/30 s (edgemem's tiny clip) after the first.

  dir-match  a bright square moving up, down, left or right; label: both cues move the same way
  hue-match  a disc of one of 4 hue bins (hue jittered by +-0.04, brightness 0.7-1, radius 20-35 %
             of the height); label: both discs in the same bin
  size-sum   a disc of one of 3 sizes (12, 24, 38 % of the height) in a random hue; label: sum mod 3
  size-match two discs as in size-sum; label: both the same size
  size-one   one disc as in size-sum (a clip-level control); label: its size
  dir-one    one moving square (a clip-level control); label: its direction
  dir-first  two moving squares as in dir-match; label: the first one's direction (a memory control:
             the second cue says nothing, so the memory must carry the first)

    python docs/foreign/families.py TASK DISTANCE OUT TRAIN_VIDEOS VAL_VIDEOS SEED [MAX_TAIL]

writes OUT/v/*.mp4, OUT/train.csv and OUT/val.csv ("path label"): the dataset layout of docs/DATA.md,
without classes.txt, and OUT/cues.csv ("path,cues": each video's cues in time order, a word each: the
direction, size or hue bin), which `edgemem eval --predictions` copies into its rows; dir-one and
dir-first, whose labels a mirror changes, also write OUT/task.json {"flip": false}, so that training
does not flip them. MAX_TAIL (s, default 0.4) bounds the tail; 0
ends every video with its last cue. A video's draws are the same whatever it is, so a set made with 0
holds the cues, labels and blobs of the default set.
"""

from __future__ import annotations

import os
import sys

import av
import numpy as np

W, H, FPS = 64, 48, 25
CLIP_S = 16 / 30  # edgemem's tiny clip: 16 frames at 30 fps
CUE_S = 0.6


def texture(rng: np.random.Generator) -> np.ndarray:
    base = rng.uniform(20, 70)
    t = rng.normal(0, 10, (H // 4, W // 4, 1)).repeat(4, 0).repeat(4, 1)
    return np.clip(base + t + rng.normal(0, 4, (H, W, 1)), 0, 255).repeat(3, 2)


def hue_at(h: float) -> np.ndarray:
    i = int(h * 6)
    f = h * 6 - i
    v = [(1, f, 0), (1 - f, 1, 0), (0, 1, f), (0, 1 - f, 1), (f, 0, 1), (1, 0, 1 - f)][i % 6]
    return np.array(v) * 255


def labels(task: str, rng: np.random.Generator) -> tuple[int, list[int]]:
    """The label and the cues, drawn so that neither cue alone says anything about the label."""
    if task in ("dir-one", "size-one"):
        a = int(rng.integers(4 if task == "dir-one" else 3))
        return a, [a]
    if task == "size-match":
        same = rng.random() < 0.5
        a = int(rng.integers(3))
        return int(same), [a, a if same else int((a + rng.integers(1, 3)) % 3)]
    if task == "dir-first":
        a = int(rng.integers(4))
        return a, [a, int(rng.integers(4))]
    if task in ("dir-match", "hue-match"):
        same = rng.random() < 0.5
        a = int(rng.integers(4))
        b = a if same else int((a + rng.integers(1, 4)) % 4)
        return int(same), [a, b]
    a, label = int(rng.integers(3)), int(rng.integers(3))
    return label, [a, (label - a) % 3]


def timing(task: str, distance: int, rng: np.random.Generator, max_tail: float = 0.4) -> tuple[list[float], int]:
    """The cues' start times (s) and the video's frame count; the first draws of a video's generator."""
    lead, tail = rng.uniform(0, 0.4), rng.uniform(0, max_tail)
    starts = [lead, lead + distance * CLIP_S]
    duration = starts[-1] + CUE_S + tail
    if task in ("dir-one", "size-one"):
        starts, duration = starts[:1], lead + CUE_S + tail
    return starts, int(round(duration * FPS))


CUE_NAMES = {
    "dir": ("right", "left", "down", "up"),
    "size": ("small", "medium", "large"),
    "hue": ("hue0", "hue1", "hue2", "hue3"),
}


def cue_words(task: str, cues: list[int]) -> str:
    """The cues of a video as words, in time order (cues.csv)."""
    return " ".join(CUE_NAMES[task.split("-")[0]][c] for c in cues)


def draw(task: str, distance: int, rng: np.random.Generator, max_tail: float) -> tuple:
    """Every random draw of a video, in order: (cue starts, frame count, label, cues, texture, blobs,
    cue geometry as (cue, size, colour, cx, cy) in pixels of the W x H frame)."""
    starts, n = timing(task, distance, rng, max_tail)
    label, cues = labels(task, rng)
    bg = texture(rng)
    blobs = [
        [
            rng.uniform(0, W),
            rng.uniform(0, H),
            rng.normal(0, 1.2),
            rng.normal(0, 1.2),
            rng.uniform(90, 160),
            rng.uniform(3, 6),
        ]
        for _ in range(2)
    ]
    geo = []
    for c in cues:
        if task.startswith("dir-"):
            size, colour = rng.uniform(9, 14), np.array([240, 240, 230]) * rng.uniform(0.85, 1)
            geo.append((c, size, colour, rng.uniform(W * 0.3, W * 0.7), rng.uniform(H * 0.3, H * 0.7)))
            continue
        if task == "hue-match":
            r = rng.uniform(0.2, 0.35) * H
            colour = hue_at((c / 4 + 0.1 + rng.uniform(-0.04, 0.04)) % 1) * rng.uniform(0.7, 1.0)
        else:
            r = [0.12, 0.24, 0.38][c] * H * rng.uniform(0.9, 1.1)
            colour = hue_at(rng.uniform(0, 1))
        geo.append((c, r, colour, rng.uniform(r, W - r), rng.uniform(min(r, H / 2), max(H - r, H / 2))))
    return starts, n, label, cues, bg, blobs, geo


def make(
    task: str, distance: int, rng: np.random.Generator, max_tail: float
) -> tuple[list[np.ndarray], int, list[int]]:
    starts, n, label, cues, bg, blobs, geo = draw(task, distance, rng, max_tail)
    yy, xx = np.mgrid[0:H, 0:W]
    frames = []
    for i in range(n):
        t = i / FPS
        f = bg.copy()
        for b in blobs:
            b[0], b[1] = (b[0] + b[2]) % W, (b[1] + b[3]) % H
            f[(abs(xx - b[0]) < b[5]) & (abs(yy - b[1]) < b[5])] = b[4]
        for (c, s, colour, cx, cy), t0 in zip(geo, starts, strict=True):
            if not t0 <= t < t0 + CUE_S:
                continue
            if task.startswith("dir-"):
                u = (t - t0) / CUE_S - 0.5
                dx, dy = [(1, 0), (-1, 0), (0, 1), (0, -1)][c]
                px, py = cx + dx * u * W * 0.5, cy + dy * u * H * 0.5
                f[(abs(xx - px) < s / 2) & (abs(yy - py) < s / 2)] = colour
            else:
                f[(xx - cx) ** 2 + (yy - cy) ** 2 < s**2] = colour
        frames.append(f.astype(np.uint8))
    return frames, label, cues


def write(path: str, frames: list[np.ndarray]) -> None:
    tmp = path + ".tmp.mp4"
    with av.open(tmp, "w") as c:
        st = c.add_stream("libx264", rate=FPS)
        st.width, st.height, st.pix_fmt = W, H, "yuv420p"
        st.options = {"crf": "20", "preset": "veryfast"}
        for f in frames:
            c.mux(st.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        c.mux(st.encode())
    os.replace(tmp, path)


def main(task: str, distance: int, out: str, train: int, val: int, seed: int, max_tail: float) -> None:
    os.makedirs(f"{out}/v", exist_ok=True)
    cue_rows = ["path,cues"]
    for split, count, offset in (("train", train, 0), ("val", val, 10**6)):
        rows = []
        for i in range(count):
            frames, label, cues = make(task, distance, np.random.default_rng([seed, offset + i]), max_tail)
            path = f"v/{split}_{i:05d}.mp4"
            write(f"{out}/{path}", frames)
            rows.append(f"{path} {label}")
            cue_rows.append(f"{path},{cue_words(task, cues)}")
        with open(f"{out}/{split}.csv", "w") as fh:
            fh.write("\n".join(rows) + "\n")
    with open(f"{out}/cues.csv", "w") as fh:
        fh.write("\n".join(cue_rows) + "\n")
    if task in ("dir-one", "dir-first"):
        with open(f"{out}/task.json", "w") as fh:
            fh.write('{"flip": false}\n')


TASKS = ("dir-match", "hue-match", "size-sum", "size-match", "size-one", "dir-one", "dir-first")

if __name__ == "__main__":
    task, distance, out, train, val, seed = sys.argv[1:7]
    if task not in TASKS:
        sys.exit(f"unknown task {task!r}: one of {', '.join(TASKS)}")
    main(task, int(distance), out, int(train), int(val), int(seed), float(sys.argv[7]) if len(sys.argv) > 7 else 0.4)

"""Calibration data for static int8: real videos streamed through the f32 graph with its memory.

A calibration set is a list of videos, each a list of consecutive clips (the model card's clip
geometry, normalised as at inference). ``collect_feeds`` streams them through the f32 graph on ONNX
Runtime with the state fed back, and records every step's full input feed (``frames``, ``reset``,
``state_in.*``): the quantizers therefore see the state inputs as deployment does (empty memory at a
video's first clip, memory of real past clips later), not zeros.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgemem.contract import FRAMES, RESET, ModelCard, state_in_name
from edgemem.errors import InputError
from edgemem.export.stream import Stream

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v")
DEFAULT_VIDEOS = 16
MAX_CLIPS_PER_VIDEO = 8  # enough to fill any preset's memory; longer videos are cut there


@dataclass(frozen=True)
class Calibration:
    """``videos[i]`` = the consecutive clips ``[C, T, H, W]`` float32 of video i; ``source`` says where from."""

    videos: list[list[np.ndarray]]
    source: str

    @property
    def steps(self) -> int:
        return sum(len(v) for v in self.videos)

    def describe(self) -> dict[str, Any]:
        return {"source": self.source, "videos": len(self.videos), "clips": self.steps}


def synthetic_calibration(input_shape: Sequence[int], videos: int = 4, clips: int = 4, seed: int = 0) -> Calibration:
    """Seeded random clips (a base clip plus noise per video). For speed measurements of graphs with
    random weights only: the scales it gives mean nothing for a trained model."""
    if videos < 1:
        raise InputError(f"--calib random: the number of videos must be >= 1, got {videos}")
    rng = np.random.default_rng(seed)
    shape = tuple(int(d) for d in input_shape)
    out = []
    for _ in range(videos):
        base = rng.standard_normal(shape, dtype=np.float32) * 0.8
        out.append([base + 0.5 * rng.standard_normal(shape, dtype=np.float32) for _ in range(clips)])
    return Calibration(out, "random")


def _video_list(source: Path, option: str) -> tuple[list[str], str]:
    """Video paths of ``source``: an edgemem dataset (its train split), a folder of videos, a text file
    with one path per line, or one video file."""
    if source.is_dir():
        if any((source / f"{s}.csv").is_file() for s in ("train", "val", "test")):
            from edgemem.data.datasets import VideoDir

            ds = VideoDir(source)
            split = "train" if "train" in ds.splits else ds.splits[0]
            return [r.path for r in ds.split(split)], f"{source} ({split} split)"
        return sorted(str(p) for p in source.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES), str(source)
    if source.is_file() and source.suffix.lower() in VIDEO_SUFFIXES:
        return [str(source)], str(source)
    if source.is_file():
        try:
            lines = source.read_text().splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise InputError(f"{option} {source}: cannot read the list of videos ({e})") from None
        paths = [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]
        bad = [p for p in paths if Path(p).suffix.lower() not in VIDEO_SUFFIXES]
        if bad:
            raise InputError(f"{option} {source}: not a list of videos ({bad[0]!r} is not a video file name)")
        return [p if os.path.isabs(p) else str(source.parent / p) for p in paths], str(source)
    raise InputError(f"{option} {source}: no such file or directory")


def load_calibration(
    source: str | os.PathLike[str], card: ModelCard, videos: int = DEFAULT_VIDEOS, option: str = "--calib"
) -> Calibration:
    """Decode up to ``videos`` videos of ``source`` into consecutive clips of ``card``'s geometry.

    Raises InputError (CLI exit 2) for a missing source, one without videos, or one where no video
    gives a single clip."""
    from edgemem.data.datasets import StreamingDataset, VideoRecord
    from edgemem.data.samplers import StreamIndex

    if videos < 1:
        raise InputError(f"{option}: the number of videos must be >= 1, got {videos}")
    paths, name = _video_list(Path(source), option)
    if not paths:
        raise InputError(f"{option} {source}: no videos found ({', '.join(VIDEO_SUFFIXES)})")
    geometry = card.clip
    ds = StreamingDataset([VideoRecord(p, 0) for p in paths], geometry, train=False)
    out: list[list[np.ndarray]] = []
    errors = list(ds.skipped.values())  # why videos gave no clip: unreadable, or their first clip failed
    for v in ds.readable_videos:
        n = min(ds.clips_per_video[v], MAX_CLIPS_PER_VIDEO)
        clips = []
        for c in range(n):
            item = ds[StreamIndex(v, c, c == 0, c == n - 1)]
            if not bool(item["valid"]):
                errors.append(str(item["error"]))
                break
            clips.append(np.ascontiguousarray(item["frames"].numpy(), dtype=np.float32))
        if clips:
            out.append(clips)
        if len(out) == videos:
            break
    if not out:
        raise InputError(f"{option} {source}: no usable calibration clip ({errors[0]})")
    return Calibration(out, name)


def _slot_sequences(cal: Calibration, batch: int) -> list[list[tuple[np.ndarray, bool]]]:
    """Slot k streams videos k, k + batch, ...; each clip with its reset flag (a video's first clip)."""
    slots: list[list[tuple[np.ndarray, bool]]] = [[] for _ in range(batch)]
    for i, video in enumerate(cal.videos):
        slots[i % batch].extend((clip, j == 0) for j, clip in enumerate(video))
    return slots


def as_stream(cal: Calibration, batch: int, clips: int) -> Stream:
    """Up to ``clips`` steps of the calibration videos as a verification ``Stream`` (real frames: an
    int8 graph is checked on the distribution it was calibrated for, not on noise)."""
    slots = _slot_sequences(cal, batch)
    steps = min(clips, *(len(s) for s in slots))
    if steps == 0:
        raise InputError(f"calibration has {len(cal.videos)} videos, fewer than the graph's batch {batch}")
    frames = [np.stack([s[t][0] for s in slots]) for t in range(steps)]
    reset = [np.array([s[t][1] for s in slots], dtype=bool) for t in range(steps)]
    bounds = [[t for t in range(1, steps) if s[t][1]] for s in slots]
    return Stream(frames, reset, bounds)


def collect_feeds(graph: str | os.PathLike[str], cal: Calibration, batch: int) -> list[dict[str, np.ndarray]]:
    """Every step's input feed of the f32 ``graph`` run on ONNX Runtime with its state fed back."""
    from edgemem.runtimes.ort import OrtSession

    slots = _slot_sequences(cal, batch)
    steps = min(len(s) for s in slots)
    if steps == 0:
        raise InputError(f"calibration has {len(cal.videos)} videos, fewer than the graph's batch {batch}")
    feeds = []
    with OrtSession(Path(graph), batch=batch) as session:
        for t in range(steps):
            frames = np.stack([s[t][0] for s in slots])
            reset = np.array([s[t][1] for s in slots], dtype=bool)
            state = {state_in_name(k): v for k, v in session.get_state().items()}
            feeds.append({FRAMES: frames, RESET: reset} | state)
            session.step(frames, reset)
    return feeds

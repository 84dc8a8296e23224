"""Video datasets in the PySlowFast/Kinetics layout: the directory, its split lists, and its check.

A dataset directory holds ``train.csv`` and ``val.csv`` (one ``path label`` per line, space
separated, paths relative to the directory or absolute), optionally ``classes.txt`` (one class name
per line), ``task.json`` (the dataset's description: ``edgemem data synth`` writes one; a user's may
hold just ``{"flip": false}``, for labels a mirror changes) and ``cues.csv`` (written by ``edgemem data
synth``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av

from edgemem.data.video import VideoError, VideoReader, probe
from edgemem.errors import InputError

# What reading one video may raise (corrupt streams surface in FFmpeg or as odd frames); a video
# that raises one of these is skipped and counted, anything else is a bug and propagates.
DECODE_ERRORS = (VideoError, av.FFmpegError, OSError, RuntimeError, ValueError)

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class VideoRecord:
    path: str
    label: int


class VideoDir:
    """A dataset directory: its splits, number of classes, class names, task meta and (synthetic
    sets) each video's cue colours."""

    def __init__(self, root: str | os.PathLike[str], num_classes: int | None = None) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise InputError(f"dataset directory {self.root} does not exist")
        present = [s for s in SPLITS if (self.root / f"{s}.csv").is_file()]
        if not present:
            raise InputError(f"{self.root} has no train.csv or val.csv (PySlowFast/Kinetics layout expected)")
        task_file = self.root / "task.json"
        self.task: dict[str, Any] | None = None
        if task_file.is_file():
            try:
                self.task = json.loads(task_file.read_text())
            except json.JSONDecodeError as e:
                raise InputError(f"{task_file}: not valid JSON ({e})") from None
            if not isinstance(self.task, dict):
                raise InputError(f"{task_file}: expected a JSON object")
        flip = (self.task or {}).get("flip", True)
        if not isinstance(flip, bool):
            raise InputError(f'{task_file}: "flip" must be true or false, got {flip!r}')
        # False: a mirrored video's label is not its own (left/right, direction of motion).
        self.flip: bool = flip
        classes_file = self.root / "classes.txt"
        self.class_names: list[str] | None = None
        if classes_file.is_file():
            self.class_names = [c.strip() for c in classes_file.read_text().splitlines() if c.strip()]
        declared = len(self.class_names) if self.class_names else (self.task or {}).get("num_classes")
        if num_classes is not None and declared is not None and num_classes != declared:
            raise InputError(f"{self.root} has {declared} classes, the model expects {num_classes}")
        self._splits = {s: _read_csv(self.root / f"{s}.csv", self.root) for s in present}
        self.cues = _read_cues(self.root / "cues.csv", self.root)
        if num_classes is None:
            num_classes = declared or 1 + max((r.label for rs in self._splits.values() for r in rs), default=0)
        self.num_classes = int(num_classes)
        for s, records in self._splits.items():
            for i, r in enumerate(records):
                if r.label >= self.num_classes:
                    raise InputError(
                        f"{self.root / f'{s}.csv'} line {i + 1}: label {r.label} out of range for "
                        f"{self.num_classes} classes"
                    )

    @property
    def splits(self) -> list[str]:
        return list(self._splits)

    def split(self, name: str) -> list[VideoRecord]:
        if name not in self._splits:
            raise InputError(f"{self.root} has no {name}.csv")
        return self._splits[name]


def _read_csv(path: Path, root: Path) -> list[VideoRecord]:
    records: list[VideoRecord] = []
    for n, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.rsplit(None, 1) if " " in line or "\t" in line else line.rsplit(",", 1)
        if len(parts) != 2:
            raise InputError(f"{path} line {n}: expected 'path label', got {raw!r}")
        rel, label = parts[0].strip().rstrip(","), parts[1].strip()
        try:
            lab = int(label)
        except ValueError:
            if n == 1 and not records:  # a header line
                continue
            raise InputError(f"{path} line {n}: label {label!r} is not an integer") from None
        if lab < 0:
            raise InputError(f"{path} line {n}: negative label {lab}")
        p = Path(rel)
        records.append(VideoRecord(str(p if p.is_absolute() else root / p), lab))
    if not records:
        raise InputError(f"{path} lists no videos")
    return records


def _read_cues(path: Path, root: Path) -> dict[str, str] | None:
    """``cues.csv`` (``edgemem data synth``): each video's cue colours, keyed like ``VideoRecord.path``."""
    if not path.is_file():
        return None
    cues: dict[str, str] = {}
    for n, raw in enumerate(path.read_text().splitlines()[1:], 2):
        rel, sep, colours = raw.partition(",")
        if not sep:
            raise InputError(f"{path} line {n}: expected 'path,cues', got {raw!r}")
        cues[str(root / rel)] = colours
    return cues


def readable_count(records: Sequence[VideoRecord]) -> int:
    """How many of ``records`` open and probe (what training will see, less videos truncated mid-stream)."""
    n = 0
    for rec in records:
        try:
            probe(rec.path)
        except DECODE_ERRORS:
            continue
        n += 1
    return n


def decode_error(path: str, e: BaseException) -> str:
    return str(e) if isinstance(e, VideoError) else f"{path}: {type(e).__name__}: {e}"


def check_dataset(root: str | Path, splits: Sequence[str] | None = None) -> dict[str, Any]:
    """Decode every video of the dataset's splits; counts, frame ranges, labels and errors."""
    vd = VideoDir(root)
    report: dict[str, Any] = {"root": str(vd.root), "num_classes": vd.num_classes, "flip": vd.flip, "splits": {}}
    for split in splits or vd.splits:
        records = vd.split(split)
        errors, frames = [], []
        counts = [0] * vd.num_classes
        for rec in records:
            counts[rec.label] += 1
            try:
                with VideoReader(rec.path) as r:
                    r.get_frames([0, r.info.num_frames - 1])  # decodes every frame in between
                    frames.append(r.info.num_frames)
            except DECODE_ERRORS as e:
                errors.append(decode_error(rec.path, e))
        report["splits"][split] = {
            "videos": len(records),
            "readable": len(frames),
            "unreadable": len(errors),
            "frames_min": min(frames, default=0),
            "frames_max": max(frames, default=0),
            "label_counts": counts,
            "errors": errors,
        }
    return report

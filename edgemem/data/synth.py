"""The synthetic long-range task: the label depends on two cues farther apart than one clip covers.

A video has ``clips`` consecutive windows of ``clip_frames * sampling_rate`` source frames. A big
saturated shape of colour ``a`` fills the first window, one of colour ``b`` the last; in between,
grey squares move about (the same distribution for every label). The label combines ``a`` and
``b`` so that either cue alone says nothing about it (``P(label | a) = P(label | b)`` = the class
prior): a model that sees one clip at a time is at chance, and averaging the scores of several
single-clip views (``f(a) + g(b)``) cannot represent the label either (it is XOR-like); a model that
sees both cues - the whole video at once, or the last clip with the first in memory - can be exact.
See docs/DATA.md.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from edgemem.data.synth_families import (
    RELATIONS,
    RelationTask,
    bouncing_squares,
    ceilings,
    make_task,
    relation_meta,
    render_relation,
)
from edgemem.data.video import check_video_encoder, write_video
from edgemem.errors import InputError

# Saturated colours, far apart in hue, that survive 4:2:0 chroma subsampling at 40x40.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (235, 35, 35),
    "green": (30, 205, 50),
    "blue": (40, 70, 245),
    "yellow": (245, 220, 25),
}


@dataclass(frozen=True)
class SynthTask:
    """A long-range task: the cue colours, how the label combines them, and the clip geometry."""

    name: str
    description: str
    colours: tuple[str, ...]
    class_names: tuple[str, ...]
    label_of: Callable[[int, int], int]  # (first cue, last cue) -> label
    clips: int = 4  # windows per video
    clip_frames: int = 8  # frames per model clip
    sampling_rate: int = 2  # source frames between sampled frames
    fps: int = 30

    @property
    def window(self) -> int:
        """Source frames one clip spans."""
        return self.clip_frames * self.sampling_rate

    @property
    def frames_per_video(self) -> int:
        return self.clips * self.window

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def sample_cues(self, rng: np.random.Generator) -> tuple[int, int]:
        """Cue colour indices (first, last) with a uniform label and P(label | one cue) = prior."""
        k = len(self.colours)
        label = int(rng.integers(self.num_classes))
        a = int(rng.integers(k))
        choices = [b for b in range(k) if self.label_of(a, b) == label]
        return a, int(rng.choice(choices))

    def meta(self, size: int, codec: str) -> dict:
        """The ``task.json`` of a generated dataset: geometry and accuracy ceilings."""
        chance = 1.0 / self.num_classes
        return {
            "task": self.name,
            "description": self.description,
            "num_classes": self.num_classes,
            "class_names": list(self.class_names),
            "colours": {c: list(COLOURS[c]) for c in self.colours},
            "fps": self.fps,
            "frames_per_video": self.frames_per_video,
            "clips_per_video": self.clips,
            "clip_frames": self.clip_frames,
            "sampling_rate": self.sampling_rate,
            "clip_span_frames": self.window,
            "cue_frames": {
                "first": [0, self.window],
                "last": [self.frames_per_video - self.window, self.frames_per_video],
            },
            "cue_gap_frames": self.frames_per_video - 2 * self.window,
            "distance_clips": self.clips - 1,
            "cue_windows": [0, self.clips - 1],
            "width": size,
            "height": size,
            "codec": codec,
            "chance": chance,
            "ceilings": ceilings((0, self.clips - 1), self.clips, self.num_classes),
        }


def _sum_mod(k: int) -> Callable[[int, int], int]:
    return lambda a, b: (a + b) % k


TASKS: dict[str, SynthTask] = {
    t.name: t
    for t in (
        SynthTask(
            name="cue-match",
            description="Do the first and the last clip show the same colour? (4 colours, 2 classes)",
            colours=("red", "green", "blue", "yellow"),
            class_names=("different", "same"),
            label_of=lambda a, b: int(a == b),
        ),
        SynthTask(
            name="cue-sum",
            description="(first colour + last colour) mod 4, colours numbered red, green, blue, yellow "
            "(4 colours, 4 classes)",
            colours=("red", "green", "blue", "yellow"),
            class_names=("sum0", "sum1", "sum2", "sum3"),
            label_of=_sum_mod(4),
        ),
        SynthTask(
            name="cue-xor",
            description="Do the first and the last clip show different colours? (2 colours, 2 classes)",
            colours=("red", "blue"),
            class_names=("same", "different"),
            label_of=lambda a, b: int(a != b),
        ),
    )
}


def get_task(name: str) -> SynthTask:
    if name not in TASKS:
        known = ", ".join([*TASKS, *(f"rel-{r}" for r in RELATIONS)])
        raise InputError(f"unknown synthetic task {name!r}; known: {known}")
    return TASKS[name]


def render_video(task: SynthTask, a: int, b: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """Frames ``[T, size, size, 3]`` uint8 of one video with first cue ``a`` and last cue ``b``."""
    t_total, w = task.frames_per_video, task.window
    bg = int(rng.integers(20, 60))
    frames = np.full((t_total, size, size, 3), bg, dtype=np.uint8)
    yy, xx = np.mgrid[0:size, 0:size]
    for cue, t0 in ((a, 0), (b, t_total - w)):
        colour = np.array(COLOURS[task.colours[cue]], dtype=np.uint8)
        half = rng.uniform(0.28, 0.36) * size  # covers the centre under any 32/40 crop
        cy, cx = size / 2 + rng.uniform(-0.06, 0.06, 2) * size
        if rng.random() < 0.5:
            mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= (half * 1.1) ** 2
        else:
            mask = (np.abs(yy - cy) <= half) & (np.abs(xx - cx) <= half)
        frames[t0 : t0 + w][:, mask] = colour
    bouncing_squares(frames, rng)  # distractors, independent of the label
    return frames


@dataclass(frozen=True)
class TaskOptions:
    """``edgemem data synth`` options beyond the task name (None: the task's default)."""

    distance: int | None = None  # clips between the first and the last cue
    classes: int | None = None  # rel-sum: the modulus
    cues: int | None = None  # rel-count: cue windows
    distractors: int | None = None  # relation tasks: distractor events per video
    lead_clips: int | None = None  # relation tasks: each video draws 0..N more lead clips
    cue_by: str | None = None  # relation tasks: the cues' colour (default) or their shape
    all_intra: bool = False  # every frame a keyframe (gop 1)


def resolve_task(task_name: str, opts: TaskOptions) -> SynthTask | RelationTask:
    """The task to generate: a ``rel-*`` family with its options, or a ``cue-*`` task (distance only)."""
    if task_name.startswith("rel-"):
        return make_task(
            task_name[4:], opts.distance, opts.classes, opts.cues, opts.distractors, opts.lead_clips, opts.cue_by
        )
    task = get_task(task_name)
    extra = [
        f"--{k.replace('_', '-')}"
        for k in ("classes", "cues", "distractors", "lead_clips", "cue_by")
        if getattr(opts, k) is not None
    ]
    if extra:
        raise InputError(
            f"{' and '.join(extra)} {'applies' if len(extra) == 1 else 'apply'} to the rel-* tasks only, not {task_name}"
        )
    if opts.distance is None:
        return task
    if not 2 <= opts.distance <= 32:
        raise InputError(f"--distance for {task_name} must be in [2, 32] clips, got {opts.distance}")
    return replace(task, clips=opts.distance + 1)


def generate(
    task_name: str,
    out: str | os.PathLike[str],
    videos: int,
    val: int | None = None,
    size: int = 40,
    seed: int = 0,
    codec: str = "mpeg4",
    options: TaskOptions | None = None,
) -> dict:
    """Write the task's dataset to ``out`` (train.csv, val.csv, classes.txt, task.json, videos/, and
    cues.csv: each video's cue colours in time order, for reading errors by cue).

    Built in a temporary sibling directory and moved into place, so ``out`` is complete or absent.
    Returns the task meta.
    """
    opts = options or TaskOptions()
    task = resolve_task(task_name, opts)
    val = max(1, videos // 4) if val is None else val
    if videos < 1 or val < 0:
        raise InputError(f"need --videos >= 1 and --val >= 0, got {videos} and {val}")
    if size < 16 or size % 2:
        raise InputError(f"--size must be even and >= 16, got {size}")
    if seed < 0:
        raise InputError(f"--seed must be >= 0, got {seed}")
    check_video_encoder(codec)
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(f"{out} exists and is not an empty directory")
    gop = 1 if opts.all_intra else 16
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        cue_lines = ["path,cues\n"]
        for split_id, (split, n) in enumerate((("train", videos), ("val", val))):
            (tmp / "videos" / split).mkdir(parents=True)
            lines = []
            for i in range(n):
                rng = np.random.default_rng([seed, split_id, i])
                rel = f"videos/{split}/{i:06d}.mp4"
                if isinstance(task, RelationTask):
                    video = task.for_video(rng)
                    cues = video.sample_cues(rng)
                    frames, label = render_relation(video, cues, size, rng), video.label_of(cues)
                    names = video.values
                else:
                    cues = task.sample_cues(rng)
                    frames, label = render_video(task, *cues, size, rng), task.label_of(*cues)
                    names = task.colours
                write_video(tmp / rel, frames, fps=task.fps, codec=codec, gop=gop)
                lines.append(f"{rel} {label}\n")
                cue_lines.append(f"{rel},{' '.join(names[c] for c in cues)}\n")
            (tmp / f"{split}.csv").write_text("".join(lines))
        (tmp / "cues.csv").write_text("".join(cue_lines))
        (tmp / "classes.txt").write_text("".join(f"{c}\n" for c in task.class_names))
        base = relation_meta(task) if isinstance(task, RelationTask) else task.meta(size, codec)
        meta = base | {
            "width": size,
            "height": size,
            "codec": codec,
            "keyframe_interval": gop,
            "seed": seed,
            "videos": {"train": videos, "val": val},
        }
        (tmp / "task.json").write_text(json.dumps(meta, indent=2) + "\n")
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return meta


def synth_command(meta: dict, out: str | os.PathLike[str]) -> str:
    """The ``edgemem data synth`` command that regenerates a dataset from its ``task.json`` ``meta``
    (every option written out, so a later change of a default does not change the dataset)."""
    v = meta["videos"]
    args = [f"--task {meta['task']}", f"--out {out}", f"--videos {v['train']}", f"--val {v['val']}"]
    args += [f"--size {meta['width']}", f"--seed {meta['seed']}", f"--codec {meta['codec']}"]
    args.append(f"--distance {meta['distance_clips']}")
    relation = meta.get("relation")
    if relation == "sum":
        args.append(f"--classes {meta['num_classes']}")
    if relation == "count":
        args.append(f"--cues {len(meta['cue_windows'])}")
    if relation is not None:
        args.append(f"--distractors {meta['distractor_events']}")
    if meta.get("lead_clips"):
        args.append(f"--lead-clips {meta['lead_clips']}")
    if meta.get("cue_by") == "shape":
        args.append("--cue-by shape")
    if meta.get("keyframe_interval") == 1:
        args.append("--all-intra")
    return "edgemem data synth " + " ".join(args)


def task_summary(task: SynthTask) -> dict:
    """Geometry of a task without generating it (for docs and ``--help``)."""
    d = asdict(task)
    d.pop("label_of")
    return d | {"frames_per_video": task.frames_per_video, "num_classes": task.num_classes}

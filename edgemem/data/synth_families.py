"""Relation task families for ``edgemem data synth``: the label relates cues ``distance`` clips apart.

A video is ``lead + distance + 1 + tail`` windows of one clip span each (with ``lead_clips`` L, each
video draws 0..L more lead windows, so videos differ in length and the cues in position from the
start, not from the end). Cue windows (2, or ``cues`` for ``rel-count``) sit between the lead and
tail windows, the first and the last ``distance`` windows apart; each shows a saturated shape of
random size, shape and position for its whole window. Everywhere, grey squares bounce about and
*distractor events* (shapes in colours no cue uses, a few frames long, at random times) appear;
neither depends on the label. Cues are drawn so that the label is uniform and independent of any
single cue (of any ``cues - 1`` cues for ``rel-count``):

- ``rel-match``: do the two cues show the same colour (4 colours, 2 classes)
- ``rel-sum``: (first + last colour index) mod k (k colours, k classes)
- ``rel-order``: one cue is red, the other blue: which came first (2 classes). It has a lead and a
  tail window, so every cue is seen appearing *and* disappearing: a clip that saw only an offset
  (or only an onset) would otherwise know which cue it was.
- ``rel-count``: each of ``cues`` windows shows red or blue: is the number of red ones odd (2 classes)

``cue_by="shape"`` asks each relation of the cues' *shapes* instead (disc, square, triangle, cross; the
first k for ``rel-sum``, disc and square for ``rel-order`` and ``rel-count``): every cue takes a random
cue colour independent of the label, so only the shape tells the cues apart. It tests whether a memory
keeps a cue's spatial structure, not only its colour.

``ceilings`` derives what each kind of model can reach from the cue windows alone (docs/DATA.md).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from edgemem.errors import InputError

# Saturated colours, far apart in hue, that survive 4:2:0 chroma subsampling at 32x32.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (235, 35, 35),
    "green": (30, 205, 50),
    "blue": (40, 70, 245),
    "yellow": (245, 220, 25),
    "magenta": (225, 40, 225),
    "cyan": (30, 220, 225),
}
WHITE = (240, 240, 240)
SHAPES = ("disc", "square", "triangle", "cross")
RELATIONS = ("match", "sum", "order", "count")
CUE_BY = ("colour", "shape")
MAX_DISTANCE = 32


@dataclass(frozen=True)
class RelationTask:
    """A relation task: which cue values (colours, or shapes), how the label combines them, where the cues are."""

    relation: str
    colours: tuple[str, ...]  # the cue values (cue_by colour), or the colours a shape cue takes at random
    class_names: tuple[str, ...]
    distance: int = 3
    cues: int = 2
    lead: int = 0
    tail: int = 0
    lead_clips: int = 0  # each video draws 0..lead_clips more lead windows
    distractors: int = 2
    clip_frames: int = 8
    sampling_rate: int = 2
    fps: int = 30
    shapes: tuple[str, ...] = ()  # the cue values when the relation is of shapes (``cue_by`` "shape")

    @property
    def name(self) -> str:
        return f"rel-{self.relation}"

    @property
    def cue_by(self) -> str:
        return "shape" if self.shapes else "colour"

    @property
    def values(self) -> tuple[str, ...]:
        """The names of the cue values the label relates (colours, or shapes)."""
        return self.shapes or self.colours

    @property
    def description(self) -> str:
        a, b = self.values[:2]
        what = {
            "match": f"do the first and the last cue show the same {self.cue_by}",
            "sum": f"(first + last cue {self.cue_by} index) mod {len(self.values)}",
            "order": f"which came first, the {a} cue or the {b} one",
            "count": f"is the number of {a} cues among the {self.cues} cue windows odd",
        }[self.relation]
        return f"{what}? (cues {self.distance} clips apart, {self.num_classes} classes)"

    @property
    def window(self) -> int:
        return self.clip_frames * self.sampling_rate

    @property
    def clips(self) -> int:
        return self.lead + self.distance + 1 + self.tail

    @property
    def frames_per_video(self) -> int:
        return self.clips * self.window

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def cue_windows(self) -> tuple[int, ...]:
        n = self.cues
        return tuple(self.lead + round(i * self.distance / (n - 1)) for i in range(n))

    @property
    def distractor_colours(self) -> tuple[tuple[int, int, int], ...]:
        rest = tuple(PALETTE[c] for c in PALETTE if c not in self.colours)
        return rest or (WHITE,)

    def for_video(self, rng: np.random.Generator) -> RelationTask:
        """The geometry of one video: the task with its drawn extra lead (no draw without ``lead_clips``)."""
        if not self.lead_clips:
            return self
        return replace(self, lead=self.lead + int(rng.integers(self.lead_clips + 1)), lead_clips=0)

    def label_of(self, cues: tuple[int, ...]) -> int:
        if self.relation == "match":
            return int(cues[0] == cues[-1])
        if self.relation == "sum":
            return (cues[0] + cues[-1]) % len(self.values)
        if self.relation == "order":
            return int(cues[0] != 0)  # 0: red (disc) first, 1: blue (square) first
        return sum(c == 0 for c in cues) % 2  # count: odd number of red (disc) cues

    def sample_cues(self, rng: np.random.Generator) -> tuple[int, ...]:
        """Cue value indices, one per cue window; the label is uniform and independent of any one cue."""
        k = len(self.values)
        if self.relation == "match":
            same = bool(rng.integers(2))
            a = int(rng.integers(k))
            b = a if same else int(rng.choice([c for c in range(k) if c != a]))
            return a, b
        if self.relation == "sum":
            return int(rng.integers(k)), int(rng.integers(k))
        if self.relation == "order":
            return (0, 1) if rng.integers(2) == 0 else (1, 0)
        return tuple(int(rng.integers(2)) for _ in range(self.cues))


def make_task(
    relation: str,
    distance: int | None = None,
    classes: int | None = None,
    cues: int | None = None,
    distractors: int | None = None,
    lead_clips: int | None = None,
    cue_by: str | None = None,
) -> RelationTask:
    """The ``rel-<relation>`` task with its options checked (an option the relation ignores is an error)."""
    if relation not in RELATIONS:
        raise InputError(f"unknown relation {relation!r}; known: {', '.join(RELATIONS)}")
    if cue_by is not None and cue_by not in CUE_BY:
        raise InputError(f"--cue-by must be one of {', '.join(CUE_BY)}, got {cue_by!r}")
    by_shape = cue_by == "shape"
    if classes is not None and relation != "sum":
        raise InputError(f"--classes applies to rel-sum only, not rel-{relation}")
    if cues is not None and relation != "count":
        raise InputError(f"--cues applies to rel-count only, not rel-{relation}")
    d = 3 if distance is None else distance
    n = 3 if (cues is None and relation == "count") else (cues or 2)
    if not 1 <= d <= MAX_DISTANCE:
        raise InputError(f"--distance must be in [1, {MAX_DISTANCE}] clips, got {d}")
    if relation == "count" and not 2 <= n <= d + 1:
        raise InputError(f"--cues must be in [2, distance + 1 = {d + 1}], got {n}")
    if distractors is not None and not 0 <= distractors <= 16:
        raise InputError(f"--distractors must be in [0, 16], got {distractors}")
    if lead_clips is not None and not 0 <= lead_clips <= MAX_DISTANCE:
        raise InputError(f"--lead-clips must be in [0, {MAX_DISTANCE}], got {lead_clips}")
    if relation == "sum":
        k = 3 if classes is None else classes
        most = len(SHAPES) if by_shape else len(PALETTE)
        if not 2 <= k <= most:
            raise InputError(
                f"--classes for rel-sum{' --cue-by shape' if by_shape else ''} must be in [2, {most}], got {k}"
            )
        task = RelationTask("sum", tuple(PALETTE)[:k], tuple(f"sum{i}" for i in range(k)))
    elif relation == "match":
        task = RelationTask("match", ("red", "green", "blue", "yellow"), ("different", "same"))
    elif relation == "order":
        task = RelationTask("order", ("red", "blue"), ("red-first", "blue-first"), lead=1, tail=1)
    else:
        task = RelationTask("count", ("red", "blue"), ("even", "odd"), cues=n)
    if by_shape:  # the same relation of shapes; the cues take any of the four cue colours
        shapes = SHAPES[: len(task.colours)]
        task = replace(task, colours=("red", "green", "blue", "yellow"), shapes=shapes)
        if relation == "order":
            task = replace(task, class_names=("disc-first", "square-first"))
    return replace(task, distance=d, distractors=2 if distractors is None else distractors, lead_clips=lead_clips or 0)


def _shape_mask(size: int, rng: np.random.Generator, shape: str | None = None) -> np.ndarray:
    """A shape (``None``: a disc or a square at random), half-size 14-28 % of the frame, centred in the
    middle 30 % (inside any crop). A triangle points up; a cross is a plus of arms a third as wide."""
    yy, xx = np.mgrid[0:size, 0:size]
    half = rng.uniform(0.14, 0.28) * size
    cy, cx = rng.uniform(0.35, 0.65, 2) * size
    if shape is None:
        shape = "disc" if rng.random() < 0.5 else "square"
    dy, dx = np.abs(yy - cy), np.abs(xx - cx)
    if shape == "disc":
        return dy**2 + dx**2 <= (half * 1.1) ** 2
    if shape == "square":
        return (dy <= half) & (dx <= half)
    if shape == "triangle":
        return (dy <= half) & (dx <= (yy - (cy - half)) / 2)
    arm = half / 3
    return ((dy <= half) & (dx <= arm)) | ((dx <= half) & (dy <= arm))


def bouncing_squares(frames: np.ndarray, rng: np.random.Generator) -> None:
    """Draw 2-3 grey squares bouncing through the whole video (independent of the label), in place."""
    t_total, size = frames.shape[0], frames.shape[1]
    for _ in range(int(rng.integers(2, 4))):
        side = int(rng.integers(size // 8, size // 4 + 1))
        grey = int(rng.integers(110, 230))
        pos = rng.uniform(0, size - side, 2)
        vel = rng.uniform(-1.5, 1.5, 2) * size / 40
        for t in range(t_total):
            y, x = pos.astype(int)
            frames[t, y : y + side, x : x + side] = grey
            pos += vel
            for d in range(2):
                if not 0 <= pos[d] <= size - side:
                    vel[d] = -vel[d]
                    pos[d] = np.clip(pos[d], 0, size - side)


def render_relation(task: RelationTask, cues: tuple[int, ...], size: int, rng: np.random.Generator) -> np.ndarray:
    """Frames ``[T, size, size, 3]`` uint8: background, squares, distractor events, then the cues on top."""
    t_total, w = task.frames_per_video, task.window
    frames = np.full((t_total, size, size, 3), int(rng.integers(20, 60)), dtype=np.uint8)
    bouncing_squares(frames, rng)
    others = task.distractor_colours
    for _ in range(task.distractors):
        dur = int(rng.integers(4, 9))
        t0 = int(rng.integers(0, t_total - dur + 1))
        frames[t0 : t0 + dur][:, _shape_mask(size, rng)] = others[int(rng.integers(len(others)))]
    for cue, win in zip(cues, task.cue_windows, strict=True):
        if task.shapes:
            mask = _shape_mask(size, rng, task.shapes[cue])
            colour = PALETTE[task.colours[int(rng.integers(len(task.colours)))]]
        else:
            mask, colour = _shape_mask(size, rng), PALETTE[task.colours[cue]]
        frames[win * w : (win + 1) * w][:, mask] = colour
    return frames


def ceilings(cue_windows: tuple[int, ...], clips: int, num_classes: int, ordered: bool = False) -> dict:
    """Top-1 a model can reach when the label needs every cue window (docs/DATA.md explains each).

    - a clip model's clip spans one window and, jittered, parts of two neighbours: it sees every cue
      only when the cue windows are at most one apart; averaged views add per-view scores, which cannot
      combine cues seen in different views;
    - a frame-scaled clip of k windows: every cue window whole once k >= span + 1, parts of them only
      at straddling positions when k = span ("partial"), chance below;
    - memory classifying at the last clip with direct reach R clips back: the first cue must be within R;
    - CM: its memory is a mean over clips and every clip is classified alike, so its output is a function
      of the *set* of clips: 1.0 when the clips include every cue window, chance when the label is the
      cues' order (``ordered``: swapping the cues gives the same set of clips).
    """
    chance = 1.0 / num_classes
    span = max(cue_windows) - min(cue_windows)
    needed = clips - 1 - min(cue_windows)

    def fs(k: int) -> float | str:
        return 1.0 if k >= span + 1 else ("partial" if k == span else chance)

    clip = 1.0 if span <= 1 else chance
    return {
        "single_clip": clip,
        "multi_view_of_single_clip_model": clip,
        "frame_scale_covering_video": 1.0,
        "memory_covering_video": 1.0,
        "frame_scaled": {str(k): fs(k) for k in range(1, clips + 1)},
        "memory_reach_needed_clips": needed,
        "memory_direct_reach": {str(r): (1.0 if r >= needed else chance) for r in range(1, max(needed, 16) + 1)},
        "cm_covering_cue_windows": chance if ordered else 1.0,
    }


def relation_meta(task: RelationTask) -> dict:
    """Geometry part of ``task.json`` for a relation task (the caller adds size, codec, seed). With
    ``lead_clips`` the geometry is the shortest video's; the longest has ``clips_per_video_max``
    clips, its cue windows ``lead_clips`` later. The ceilings hold for every length (the cues' distance
    from the end, what memory needs, does not change)."""
    w = task.window
    return {
        "task": task.name,
        "relation": task.relation,
        "description": task.description,
        "num_classes": task.num_classes,
        "class_names": list(task.class_names),
        "colours": {c: list(PALETTE[c]) for c in task.colours},
        "cue_by": task.cue_by,
        **({"shapes": list(task.shapes)} if task.shapes else {}),
        "fps": task.fps,
        "frames_per_video": task.frames_per_video,
        "clips_per_video": task.clips,
        "clip_frames": task.clip_frames,
        "sampling_rate": task.sampling_rate,
        "clip_span_frames": w,
        "distance_clips": task.distance,
        "cue_windows": list(task.cue_windows),
        "cue_frames": [[i * w, (i + 1) * w] for i in task.cue_windows],
        "cue_gap_frames": (task.distance - 1) * w if task.cues == 2 else None,
        "distractor_events": task.distractors,
        "lead_clips": task.lead_clips,
        "clips_per_video_max": task.clips + task.lead_clips,
        "chance": 1.0 / task.num_classes,
        "ceilings": ceilings(task.cue_windows, task.clips, task.num_classes, ordered=task.relation == "order"),
    }

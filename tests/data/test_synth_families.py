"""Relation task families: cue distance, labels from the decoded cues, ceilings, all-intra encoding."""

from __future__ import annotations

import json
from collections import Counter

import av
import numpy as np
import pytest

from edgemem.cli import main
from edgemem.data.synth import TaskOptions, generate
from edgemem.data.synth_families import PALETTE, SHAPES, ceilings, make_task, relation_meta, render_relation
from edgemem.data.video import VideoReader


def _window_colour(frame: np.ndarray, colours: tuple[str, ...]) -> int | None:
    """The task colour covering >= 3 % of the frame (None when none does)."""
    px = frame.reshape(-1, 3).astype(int)
    counts = [int((np.abs(px - PALETTE[c]).sum(1) < 90).sum()) for c in colours]
    best = int(np.argmax(counts))
    return best if counts[best] >= 0.03 * len(px) else None


@pytest.mark.parametrize(
    ("task", "opts"),
    [
        ("rel-match", TaskOptions(distance=5)),
        ("rel-sum", TaskOptions(distance=2, classes=4)),
        ("rel-order", TaskOptions(distance=2)),
        ("rel-count", TaskOptions(distance=4, cues=3, distractors=4)),
    ],
)
def test_cues_at_distance_decode_to_the_label(tmp_path, task, opts):
    meta = generate(task, tmp_path / "d", videos=6, val=2, size=32, seed=3, options=opts)
    t = make_task(task[4:], opts.distance, opts.classes, opts.cues, opts.distractors)
    w = meta["clip_span_frames"]
    assert meta["distance_clips"] == opts.distance == max(t.cue_windows) - min(t.cue_windows)
    assert meta["frames_per_video"] == meta["clips_per_video"] * w == t.clips * w
    assert json.loads((tmp_path / "d" / "task.json").read_text()) == meta
    listed = dict(line.split(",") for line in (tmp_path / "d" / "cues.csv").read_text().splitlines()[1:])
    assert len(listed) == 8  # every video of both splits
    for line in (tmp_path / "d" / "train.csv").read_text().splitlines():
        rel, label = line.split(" ")
        with VideoReader(tmp_path / "d" / rel) as r:
            assert r.info.num_frames == meta["frames_per_video"]
            frames = r.read_all()
        seen = []
        for win in range(t.clips):
            colours = {_window_colour(f, t.colours) for f in frames[win * w + 2 : (win + 1) * w - 2]}
            if win in t.cue_windows:
                assert len(colours) == 1 and None not in colours, (rel, win, colours)
                seen.append(colours.pop())
            else:
                assert colours == {None}, (rel, win, colours)  # distractor events use other colours
        assert t.label_of(tuple(seen)) == int(label)
        assert listed[rel] == " ".join(t.colours[c] for c in seen)  # cues.csv: the decoded colours, in order


@pytest.mark.parametrize("task", ["rel-match", "rel-order"])
def test_lead_clips_vary_the_length_not_the_cues_distance_from_the_end(tmp_path, capsys, task):
    """``--lead-clips 3``: each video starts with 0-3 more distractor-only windows; the cues keep their
    distance and their place counted from the end, the label is still theirs; without the option the
    seed's draws are those of before."""
    out = tmp_path / "d"
    args = ["data", "synth", "--task", task, "--out", str(out), "--videos", "8", "--val", "0", "--size", "32"]
    assert main([*args, "--lead-clips", "3", "--distance", "2"]) == 0
    assert "clips of 8x2" in capsys.readouterr().out
    meta = json.loads((out / "task.json").read_text())
    t = make_task(task[4:], 2)
    w = meta["clip_span_frames"]
    assert meta["lead_clips"] == 3 and meta["clips_per_video_max"] == meta["clips_per_video"] + 3 == t.clips + 3
    lengths = set()
    for line in (out / "train.csv").read_text().splitlines():
        rel, label = line.split(" ")
        with VideoReader(out / rel) as r:
            frames = r.read_all()
        clips = len(frames) // w
        assert len(frames) == clips * w and t.clips <= clips <= t.clips + 3
        lengths.add(clips)
        shift = clips - t.clips
        seen = []
        for win in range(clips):
            colours = {_window_colour(f, t.colours) for f in frames[win * w + 2 : (win + 1) * w - 2]}
            if win - shift in t.cue_windows:
                assert len(colours) == 1 and None not in colours, (rel, win, colours)
                seen.append(colours.pop())
            else:
                assert colours == {None}, (rel, win, colours)
        assert t.label_of(tuple(seen)) == int(label)
    assert len(lengths) > 1
    # Without the option nothing is drawn for it: seed 0's cues are those of the generator before it.
    generate(task, tmp_path / "a", 4, 0, size=32, options=TaskOptions(distance=2))
    cues = [line.split(",")[1] for line in (tmp_path / "a" / "cues.csv").read_text().splitlines()[1:]]
    assert cues == BEFORE_LEAD_CLIPS[task]


# Seed 0's cue colours, 4 training videos, --distance 2, from the generator before --lead-clips existed.
BEFORE_LEAD_CLIPS = {
    "rel-match": ["blue blue", "green green", "blue green", "yellow yellow"],
    "rel-order": ["blue red", "blue red", "red blue", "blue red"],
}


@pytest.mark.parametrize("cue_by", ["colour", "shape"])
@pytest.mark.parametrize("relation", ["match", "sum", "order", "count"])
def test_label_is_independent_of_any_single_cue(relation, cue_by):
    t = make_task(relation, 4, cue_by=cue_by)
    rng = np.random.default_rng(0)
    draws = [t.sample_cues(rng) for _ in range(6000)]
    labels = [t.label_of(c) for c in draws]
    prior = 1 / t.num_classes
    assert all(abs(n / len(draws) - prior) < 0.03 for n in Counter(labels).values())
    # rel-order: a cue's position is the label's other half, and a clip cannot tell the position (lead
    # and tail windows), so the check is over a cue at either position.
    positions = [(0, 1)] if relation == "order" else [(p,) for p in range(len(draws[0]))]
    for pos in positions:
        for colour in range(len(t.values)):
            sub = Counter(lab for c, lab in zip(draws, labels, strict=True) for p in pos if c[p] == colour)
            total = sum(sub.values())
            assert all(abs(sub[k] / total - prior) < 0.06 for k in range(t.num_classes)), (pos, colour, sub)


def _shape_of(mask: np.ndarray) -> str:
    """The shape of an exact (undecoded) cue mask: its fill of the bounding box, and for the two
    half-filled shapes whether its lower half holds most of it (a triangle points up)."""
    ys, xs = np.nonzero(mask)
    box = mask[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    fill = box.mean()
    if fill > 0.9:
        return "square"
    if fill > 0.65:
        return "disc"
    upper, lower = box[: len(box) // 2].sum(), box[(len(box) + 1) // 2 :].sum()
    return "triangle" if upper < 0.6 * lower else "cross"


@pytest.mark.parametrize("relation", ["match", "sum", "order", "count"])
def test_cue_by_shape_draws_the_label_in_shapes_and_the_colour_at_random(relation):
    """``--cue-by shape``: each cue window shows the shape its value names, in a cue colour drawn apart
    from the label, so that colour says nothing (both colours of a "same shape" pair differ at times)."""
    t = make_task(relation, 2, cue_by="shape", distractors=0)
    assert t.cue_by == "shape" and set(t.values) <= set(SHAPES) and t.colours == ("red", "green", "blue", "yellow")
    rng = np.random.default_rng(1)
    w, colour_pairs = t.window, Counter()
    for _ in range(40):
        cues = t.sample_cues(rng)
        frames = render_relation(t, cues, 32, rng)
        seen = []
        for cue, win in zip(cues, t.cue_windows, strict=True):
            frame = frames[win * w + w // 2].reshape(-1, 3)
            colour = next(c for c in t.colours if (frame == PALETTE[c]).all(1).sum() > 20)
            mask = (frame == PALETTE[colour]).all(1).reshape(32, 32)
            assert _shape_of(mask) == t.values[cue], (relation, cues, colour)
            seen.append(colour)
        colour_pairs[(t.label_of(cues), seen[0] == seen[-1])] += 1
    assert all(colour_pairs[(label, False)] > 0 for label in range(t.num_classes)), colour_pairs


def test_ceilings_by_model_kind():
    c = ceilings((0, 3), 4, 2)  # cue-match geometry: cues 3 clips apart in a 4-clip video
    assert c["single_clip"] == c["multi_view_of_single_clip_model"] == 0.5
    assert c["frame_scaled"] == {"1": 0.5, "2": 0.5, "3": "partial", "4": 1.0}
    assert c["memory_reach_needed_clips"] == 3
    assert c["memory_direct_reach"]["2"] == 0.5 and c["memory_direct_reach"]["3"] == 1.0
    assert ceilings((0, 1), 2, 3)["single_clip"] == 1.0  # adjacent cues: a straddling clip sees both
    order = make_task("order", 12)  # lead and tail windows: the classifying clip is 13 clips after cue 1
    c = ceilings(order.cue_windows, order.clips, 2)
    assert order.clips == 15 and c["memory_reach_needed_clips"] == 13
    assert c["memory_direct_reach"]["12"] == 0.5 and c["memory_direct_reach"]["16"] == 1.0
    assert c["frame_scaled"]["13"] == 1.0 and c["frame_scaled"]["12"] == "partial"
    assert c["cm_covering_cue_windows"] == 1.0  # a set of clips: blind to order
    assert relation_meta(order)["ceilings"]["cm_covering_cue_windows"] == 0.5  # written as chance
    assert relation_meta(make_task("sum", 3))["ceilings"]["cm_covering_cue_windows"] == 1.0
    long = make_task("match", 16)
    assert long.clips == 17 and ceilings(long.cue_windows, long.clips, 2)["memory_direct_reach"]["16"] == 1.0


def test_all_intra_every_frame_is_a_keyframe(tmp_path):
    def keyframes(path):
        with av.open(str(path)) as c:
            flags = [p.is_keyframe for p in c.demux(video=0) if p.size]
        return sum(flags), len(flags)

    generate("rel-match", tmp_path / "i", 1, 0, size=32, options=TaskOptions(all_intra=True))
    generate("rel-match", tmp_path / "p", 1, 0, size=32)
    k, n = keyframes(tmp_path / "i" / "videos/train/000000.mp4")
    assert k == n == 64
    k, n = keyframes(tmp_path / "p" / "videos/train/000000.mp4")
    assert n == 64 and k < n
    meta = json.loads((tmp_path / "i" / "task.json").read_text())
    assert meta["keyframe_interval"] == 1
    with VideoReader(tmp_path / "i" / "videos/train/000000.mp4") as r:
        assert len(r.get_frames([5, 40, 63])) == 3


@pytest.mark.parametrize(
    "args",
    [
        ["--task", "rel-match", "--classes", "3"],
        ["--task", "rel-sum", "--distance", "0"],
        ["--task", "rel-sum", "--classes", "9"],
        ["--task", "rel-count", "--distance", "1", "--cues", "3"],
        ["--task", "cue-match", "--distractors", "2"],
        ["--task", "cue-match", "--lead-clips", "2"],
        ["--task", "cue-match", "--cue-by", "shape"],
        ["--task", "rel-sum", "--cue-by", "shape", "--classes", "5"],
        ["--task", "rel-match", "--cue-by", "size"],
        ["--task", "rel-match", "--lead-clips", "-1"],
        ["--task", "rel-nope"],
    ],
)
def test_bad_options_exit_2(tmp_path, capsys, args):
    assert main(["data", "synth", *args, "--out", str(tmp_path / "x"), "--videos", "2"]) == 2
    assert "error" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_legacy_task_takes_a_distance(tmp_path):
    meta = generate("cue-sum", tmp_path / "d", 2, 1, size=32, options=TaskOptions(distance=6))
    assert meta["clips_per_video"] == 7 and meta["cue_windows"] == [0, 6]
    assert meta["ceilings"]["memory_reach_needed_clips"] == 6

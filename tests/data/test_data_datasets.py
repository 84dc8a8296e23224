"""Kinetics-layout datasets: CSV parsing and errors, clip / N-clip / streaming items, skipping bad videos."""

from __future__ import annotations

import shutil

import pytest
import torch
from video_maker import make_video

from edgemem.contract import ClipSpec
from edgemem.data.datasets import (
    ClipDataset,
    MultiClipDataset,
    SkipTally,
    StreamingDataset,
    VideoDir,
    VideoRecord,
    check_dataset,
)
from edgemem.data.loader import make_loader, set_epoch
from edgemem.data.samplers import StreamIndex
from edgemem.data.synth import generate
from edgemem.errors import InputError

GEOM = ClipSpec(frames=8, sampling_rate=2, crop_size=32)


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("data") / "cue"
    generate("cue-sum", root, videos=6, val=3, size=40, seed=0)
    return root


@pytest.fixture
def broken(tmp_path, synth):
    """A copy of the synthetic dataset with a zero-length, a garbage and a missing video in train."""
    root = tmp_path / "broken"
    shutil.copytree(synth, root)
    (root / "videos" / "empty.mp4").write_bytes(b"")
    (root / "videos" / "junk.mp4").write_bytes(b"\x00garbage" * 64)
    lines = (root / "train.csv").read_text()
    lines += "videos/empty.mp4 1\nvideos/junk.mp4 2\nvideos/missing.mp4 0\n"
    (root / "train.csv").write_text(lines)
    return root


def test_video_dir(synth):
    vd = VideoDir(synth)
    assert vd.splits == ["train", "val"]
    assert vd.num_classes == 4 and vd.class_names == ["sum0", "sum1", "sum2", "sum3"]
    assert vd.task["frames_per_video"] == 64
    assert len(vd.split("train")) == 6 and all(r.path.startswith(str(synth)) for r in vd.split("train"))
    with pytest.raises(InputError, match="no test.csv"):
        vd.split("test")
    with pytest.raises(InputError, match="the model expects 10"):
        VideoDir(synth, num_classes=10)


def test_csv_variants(tmp_path, synth):
    video = synth / "videos" / "train" / "000000.mp4"
    (tmp_path / "train.csv").write_text(f"path label\n{video} 1\n\n# comment\nrel dir/a b.mp4 0\n")
    (tmp_path / "val.csv").write_text(f"{video},2\n")
    vd = VideoDir(tmp_path)
    assert [(r.path, r.label) for r in vd.split("train")] == [(str(video), 1), (str(tmp_path / "rel dir/a b.mp4"), 0)]
    assert vd.split("val")[0].label == 2 and vd.num_classes == 3 and vd.class_names is None


@pytest.mark.parametrize(
    "content,match",
    [
        ("a.mp4 1\nb.mp4 x\n", "line 2: label 'x' is not an integer"),
        ("a.mp4 -1\n", "negative label"),
        ("a.mp4\n", "expected 'path label'"),
        ("", "lists no videos"),
        ("a.mp4 7\n", "label 7 out of range for 4 classes"),
    ],
)
def test_bad_csv(tmp_path, content, match):
    (tmp_path / "train.csv").write_text(content)
    (tmp_path / "classes.txt").write_text("a\nb\nc\nd\n")
    with pytest.raises(InputError, match=match):
        VideoDir(tmp_path)


@pytest.mark.parametrize(
    "task, flip",
    [
        (None, True),
        ('{"flip": true}', True),
        ('{"flip": false}', False),
        ('{"flip": "no"}', '"flip" must be'),
        ("[1]", "expected a JSON object"),
        ("{flip", "not valid JSON"),
    ],
)
def test_task_json_says_whether_a_mirror_keeps_the_labels(tmp_path, task, flip, capsys):
    """A dataset whose labels a mirror changes (left/right) says so in ``task.json``; training and
    ``data check`` read it; anything but a JSON boolean is refused, not taken as a default."""
    from edgemem.cli import main

    (tmp_path / "train.csv").write_text("a.mp4 0\nb.mp4 1\n")
    if task is not None:
        (tmp_path / "task.json").write_text(task)
    if isinstance(flip, str):
        with pytest.raises(InputError, match=flip):
            VideoDir(tmp_path)
        return
    assert VideoDir(tmp_path).flip is flip
    assert check_dataset(tmp_path)["flip"] is flip
    assert main(["data", "check", str(tmp_path)]) == 1  # the two videos do not exist
    assert ("no flips in training" in capsys.readouterr().out) is not flip


def test_missing_csv_or_dir(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        VideoDir(tmp_path / "nope")
    with pytest.raises(InputError, match="no train.csv or val.csv"):
        VideoDir(tmp_path)


def test_label_out_of_range_for_model(tmp_path):
    (tmp_path / "train.csv").write_text("a.mp4 0\nb.mp4 5\n")
    with pytest.raises(InputError, match="label 5 out of range for 3 classes"):
        VideoDir(tmp_path, num_classes=3)


def test_clip_dataset_train_and_views(synth):
    records = VideoDir(synth).split("val")
    train = ClipDataset(records, GEOM, train=True, seed=3)
    item = train[1]
    assert item["frames"].shape == (3, 8, 32, 32) and item["frames"].dtype == torch.float32
    assert item["valid"] and item["label"] == records[1].label and item["video"] == 1
    assert torch.equal(train[1]["frames"], item["frames"]), "deterministic for a (seed, epoch, index)"
    train.set_epoch(1)
    assert not torch.equal(train[1]["frames"], item["frames"]), "new augmentation each epoch"

    views = ClipDataset(records, GEOM, train=False, temporal_views=4, spatial_crops=3)
    assert len(views) == 3 * 12
    items = [views[i] for i in range(12)]
    assert {(int(it["clip"]), int(it["crop"])) for it in items} == {(t, s) for t in range(4) for s in range(3)}
    assert all(int(it["video"]) == 0 for it in items)
    # temporal view 0 sees the first cue, view 3 the last: the clips differ
    assert not torch.equal(items[0]["frames"], items[9]["frames"])


def test_multi_clip_dataset(synth):
    records = VideoDir(synth).split("val")
    ds = MultiClipDataset(records, GEOM, num_clips=4, train=False)
    item = ds[0]
    assert item["frames"].shape == (4, 3, 8, 32, 32)
    # clip 0 and clip 3 hold the two cues (saturated), clips 1-2 only grey distractors
    sat = [(c.amax(0) - c.amin(0)).mean().item() for c in item["frames"]]
    assert min(sat[0], sat[3]) > 2 * max(sat[1], sat[2]), sat
    train = MultiClipDataset(records, GEOM, num_clips=4, train=True)
    assert train[0]["frames"].shape == (4, 3, 8, 32, 32)


def test_streaming_dataset_and_loader(synth):
    records = VideoDir(synth).split("train")
    ds = StreamingDataset(records, GEOM, train=True)
    assert ds.clips_per_video == [4] * 6 and len(ds) == 24
    loader = make_loader(ds, batch_size=4, shuffle=True, workers=2, seed=1)
    set_epoch(loader, 2)
    seen = []
    for batch in loader:
        assert batch["frames"].shape == (4, 3, 8, 32, 32)
        for s in range(4):
            if batch["valid"][s]:
                v, c = int(batch["video"][s]), int(batch["clip"][s])
                assert bool(batch["first"][s]) == (c == 0) and bool(batch["last"][s]) == (c == 3)
                assert int(batch["label"][s]) == records[v].label
                seen.append((v, c))
            else:
                assert batch["first"][s] and int(batch["label"][s]) == -1
    assert sorted(seen) == [(v, c) for v in range(6) for c in range(4)]
    with pytest.raises(TypeError):
        ds[0]
    pad = ds[StreamIndex(-1, 0, True, False)]
    assert not pad["valid"] and pad["frames"].abs().sum() == 0


def test_streaming_covers_a_partial_last_clip_with_whole_frames(tmp_path):
    """40 frames at 30 fps are 2.5 clips of 16: 3 clips, the last moved back to end at sample 38
    (samples 24..38, the second half of clip 1's 16..30 and 4 new ones), as ``edgemem stream`` forms
    it; a video shorter than a clip is one clip, its last sample repeated."""
    video = make_video(tmp_path / "v.mp4", "libx264", frames=40, fps=30)
    ds = StreamingDataset([VideoRecord(str(video), 0)], GEOM, train=False)
    assert ds.clips_per_video == [3]
    whole, last = ds[StreamIndex(0, 1, False, False)]["frames"], ds[StreamIndex(0, 2, False, True)]["frames"]
    assert torch.equal(last[:, :4], whole[:, 4:])
    assert len({last[:, t].sum().item() for t in range(4, 8)}) == 4  # 4 new samples, none repeated
    short = make_video(tmp_path / "s.mp4", "libx264", frames=10, fps=30)  # samples 0..8
    short_ds = StreamingDataset([VideoRecord(str(short), 0)], GEOM, train=False)
    one = short_ds[StreamIndex(0, 0, True, True)]["frames"]
    assert short_ds.clips_per_video == [1] and all(torch.equal(one[:, t], one[:, 4]) for t in range(5, 8))
    assert not torch.equal(one[:, 4], one[:, 3])


def test_no_flip_removes_the_flips_and_nothing_else(synth):
    """``flip=False`` (``edgemem train --no-flip``): every training item of every dataset kind is the
    flipping one's item, unflipped where that one was mirrored; with flips some items are mirrored."""
    records = VideoDir(synth).split("train")
    for kind in (
        lambda flip: ClipDataset(records, GEOM, train=True, seed=3, flip=flip),
        lambda flip: MultiClipDataset(records, GEOM, 2, train=True, seed=3, flip=flip),
        lambda flip: StreamingDataset(records, GEOM, train=True, seed=3, flip=flip),
    ):
        flipping, plain = kind(True), kind(False)
        mirrored = 0
        for epoch in range(3):
            flipping.set_epoch(epoch)
            plain.set_epoch(epoch)
            for v in range(len(records)):
                index = StreamIndex(v, 1, False, False) if isinstance(plain, StreamingDataset) else v
                a, b = flipping[index]["frames"], plain[index]["frames"]
                assert torch.equal(a, b) or torch.equal(a.flip(-1), b)
                mirrored += not torch.equal(a, b)
        assert mirrored > 0, type(plain).__name__


def test_unreadable_videos_are_skipped_and_counted(broken):
    records = VideoDir(broken).split("train")
    assert len(records) == 9
    for ds in (ClipDataset(records, GEOM, train=True), MultiClipDataset(records, GEOM, 2, train=True)):
        tally = SkipTally()
        n_valid = 0
        for batch in make_loader(ds, batch_size=4, shuffle=False, workers=2):
            tally.update(batch)
            n_valid += int(batch["valid"].sum())
        assert n_valid == 6
        assert len(tally.skipped) == 3 and set(tally.skipped) == {6, 7, 8}
        assert "skipped 3 unreadable video(s)" in tally.summary()
        assert any("zero-length" in e for e in tally.skipped.values())
    stream = StreamingDataset(records, GEOM, train=False)
    assert stream.clips_per_video[6:] == [0, 0, 0] and sorted(stream.skipped) == [6, 7, 8]
    assert sum(int(b["valid"].sum()) for b in make_loader(stream, 2, shuffle=False)) == 24

    report = check_dataset(broken)
    assert report["splits"]["train"]["unreadable"] == 3 and report["splits"]["val"]["unreadable"] == 0


def test_check_command_reports_unreadable(broken, capsys):
    from edgemem.cli import main

    assert main(["data", "check", str(broken)]) == 1
    out = capsys.readouterr().out
    assert "train: 9 videos, 6 readable, 3 unreadable" in out and "zero-length" in out
    assert main(["data", "check", str(broken / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err

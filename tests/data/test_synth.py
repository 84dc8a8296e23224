"""The synthetic long-range task: real decodable videos whose cues give their labels."""

from __future__ import annotations

import hashlib
import json
import shlex
from collections import Counter

import numpy as np
import pytest

from edgemem.cli import main
from edgemem.data.commands import task_of_command
from edgemem.data.synth import COLOURS, TASKS, TaskOptions, generate, get_task, synth_command
from edgemem.data.video import VideoReader
from edgemem.errors import InputError


def _cue(frame: np.ndarray, colours: tuple[str, ...]) -> int | None:
    """Index of the saturated cue colour in a frame, or None when it shows none (distractors are grey)."""
    px = frame.reshape(-1, 3).astype(int)
    px = px[(px.max(1) - px.min(1)) > 100]
    if len(px) < 0.15 * frame.shape[0] * frame.shape[1]:
        return None
    mean = np.median(px, 0)
    return int(np.argmin([np.abs(mean - COLOURS[c]).sum() for c in colours]))


@pytest.mark.parametrize("name", sorted(TASKS))
def test_videos_decode_and_match_labels(tmp_path, name):
    task = get_task(name)
    meta = generate(name, tmp_path / "d", videos=12, val=4, size=40, seed=1)
    root = tmp_path / "d"
    assert json.loads((root / "task.json").read_text()) == meta
    assert (root / "classes.txt").read_text().split() == list(task.class_names)
    w, total = meta["clip_span_frames"], meta["frames_per_video"]
    assert total == meta["clips_per_video"] * w == 64 and w == meta["clip_frames"] * meta["sampling_rate"]
    for split, n in (("train", 12), ("val", 4)):
        lines = (root / f"{split}.csv").read_text().splitlines()
        assert len(lines) == n
        for line in lines:
            rel, label = line.split(" ")
            with VideoReader(root / rel) as r:
                assert (r.info.num_frames, r.info.width, r.info.height) == (64, 40, 40)
                assert r.info.fps == 30
                frames = r.read_all()
            first = {_cue(f, task.colours) for f in frames[:w]}
            last = {_cue(f, task.colours) for f in frames[total - w :]}
            middle = {_cue(f, task.colours) for f in frames[w : total - w]}
            assert len(first) == 1 and len(last) == 1 and None not in first | last, (rel, first, last)
            assert middle == {None}, "no cue between the first and the last clip"
            assert task.label_of(first.pop(), last.pop()) == int(label)


@pytest.mark.parametrize("name", sorted(TASKS))
def test_one_cue_says_nothing_about_the_label(name):
    """P(label | first cue) and P(label | last cue) are the class prior: single clips are at chance."""
    task = get_task(name)
    rng = np.random.default_rng(0)
    draws = [task.sample_cues(rng) for _ in range(8000)]
    labels = Counter(task.label_of(a, b) for a, b in draws)
    assert all(abs(labels[c] / len(draws) - 1 / task.num_classes) < 0.03 for c in range(task.num_classes))
    for which in (0, 1):
        for cue in range(len(task.colours)):
            sub = [task.label_of(a, b) for a, b in draws if (a, b)[which] == cue]
            freq = Counter(sub)
            for c in range(task.num_classes):
                assert abs(freq[c] / len(sub) - 1 / task.num_classes) < 0.06, (which, cue, freq)


def test_deterministic_with_seed(tmp_path):
    def digest(d):
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.rglob("*")) if p.is_file()}

    generate("cue-sum", tmp_path / "a", 5, 2, seed=7)
    generate("cue-sum", tmp_path / "b", 5, 2, seed=7)
    generate("cue-sum", tmp_path / "c", 5, 2, seed=8)
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    assert (tmp_path / "a" / "train.csv").read_text() != (tmp_path / "c" / "train.csv").read_text() or digest(
        tmp_path / "a"
    ) != digest(tmp_path / "c")


def test_bad_requests(tmp_path):
    with pytest.raises(InputError, match="unknown synthetic task"):
        generate("nope", tmp_path / "x", 2)
    with pytest.raises(InputError, match="even"):
        generate("cue-sum", tmp_path / "x", 2, size=41)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(InputError, match="not an empty directory"):
        generate("cue-sum", tmp_path / "full", 2)
    with pytest.raises(InputError, match="--seed must be >= 0"):  # numpy's traceback before
        generate("cue-sum", tmp_path / "x", 2, seed=-1)
    for codec in ("h265", "aac"):  # unknown to PyAV; an audio encoder
        with pytest.raises(InputError, match=f"--codec '{codec}' is not a video encoder"):
            generate("cue-sum", tmp_path / "x", 2, codec=codec)
    assert [p.name for p in tmp_path.iterdir()] == ["full"], "nothing half-written"


def test_cli(tmp_path, capsys):
    out = tmp_path / "ds"
    assert main(["data", "synth", "--task", "cue-match", "--out", str(out), "--videos", "3", "--val", "1"]) == 0
    assert "cue-match" in capsys.readouterr().out
    assert main(["data", "check", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["splits"]["train"]["readable"] == 3 and report["splits"]["val"]["frames_max"] == 64
    assert main(["data", "synth", "--task", "cue-match", "--out", str(out), "--videos", "3"]) == 2
    assert "not an empty directory" in capsys.readouterr().err


@pytest.mark.parametrize(
    "task, options",
    [
        ("cue-match", TaskOptions(distance=5)),
        ("rel-count", TaskOptions(distance=4, cues=3, distractors=1, all_intra=True)),
        ("rel-sum", TaskOptions(classes=4)),
        ("rel-match", TaskOptions(lead_clips=3)),
        ("rel-sum", TaskOptions(classes=4, cue_by="shape")),
    ],
)
def test_synth_command_regenerates_the_same_dataset(tmp_path, task, options):
    """The command a shipped card quotes (``synth_command``) writes out every option: run through the CLI,
    it makes the same videos and labels (a dropped --distance once made another task)."""
    meta = generate(task, tmp_path / "a", videos=2, val=1, size=16, seed=4, options=options)
    command = synth_command(meta, tmp_path / "b")
    assert main(shlex.split(command)[1:]) == 0
    assert json.loads((tmp_path / "b" / "task.json").read_text()) == meta
    for split in ("train.csv", "val.csv"):
        assert (tmp_path / "b" / split).read_text() == (tmp_path / "a" / split).read_text()
    first = sorted((tmp_path / "a" / "videos" / "train").iterdir())[0]
    assert (tmp_path / "b" / "videos" / "train" / first.name).read_bytes() == first.read_bytes()
    task = task_of_command(command)  # and reads back as the task it generates (what edgemem demo renders)
    assert task.num_classes == meta["num_classes"] and task.clips == meta["clips_per_video"]
    if options.lead_clips:
        assert task.lead_clips == options.lead_clips
    assert getattr(task, "cue_by", "colour") == (options.cue_by or "colour") == meta.get("cue_by", "colour")


def test_task_of_command_reads_the_geometry_and_refuses_what_it_cannot():
    assert task_of_command("edgemem data synth --task cue-match --out d --videos 9 --distance 12").clips == 13
    assert task_of_command("edgemem data synth --task cue-match --out d --videos 9") == get_task("cue-match")
    for bad, what in [
        ("edgemem train x", "not an 'edgemem data synth'"),
        ("edgemem data synth --out d --videos 9", "required: --task"),
        ("edgemem data synth --task cue-match --out d --videos 9 --distance x", "invalid int value"),
        ("edgemem data synth --task cue-match --out d --videos 9 --frames 3", "unrecognized arguments"),
        ("edgemem data synth --task cue-match --out d --videos 9 --cues 3", "rel-\\* tasks only"),
    ]:
        with pytest.raises(InputError, match=what):
            task_of_command(bad)

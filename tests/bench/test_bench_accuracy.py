"""The bench accuracy path (``bench.accuracy.session_accuracy``, what a bench cell with ``--data`` runs)
with a trained checkpoint, the shipped ``memvit_tiny_cuematch``, on cue-match videos generated here.

Cue-match is answered only by the last clip of a video (first-clip classification is at chance), and on
videos shorter than the memory the previous video's clips change the answer unless the memory is reset:
so scoring the wrong clip or skipping the reset between videos changes top-1, and these tests see it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from edgemem.bench.accuracy import session_accuracy
from edgemem.data import synth
from edgemem.data.datasets import StreamingDataset, VideoDir
from edgemem.data.samplers import StreamIndex
from edgemem.errors import NonFiniteError
from edgemem.models import create_model
from edgemem.runtimes import open_session

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def trained() -> torch.nn.Module:
    return create_model("memvit_tiny_cuematch").eval()


@pytest.fixture(scope="module")
def cue_match(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """16 validation videos of the task the model was trained on (4 clips each)."""
    root = tmp_path_factory.mktemp("acc") / "cue"
    synth.generate("cue-match", root, videos=1, val=16, seed=1)
    return root


@pytest.fixture(scope="module")
def short_videos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """48 cue-match videos of 2 clips: fewer clips than the memory holds (3), so without a reset the
    last clip's memory holds the previous video's clips."""
    task = dataclasses.replace(synth.get_task("cue-match"), name="cue-match-2clips", clips=2)
    root = tmp_path_factory.mktemp("acc") / "short"
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(synth.TASKS, task.name, task)
        synth.generate(task.name, root, videos=1, val=48, seed=1)
    return root


def reference_top1(model: torch.nn.Module, data: Path, reset: bool) -> tuple[float, float]:
    """(first-clip top-1, last-clip top-1) of ``model`` streaming the val videos one by one, clip by
    clip, with (``reset``) or without an empty memory at each video's first clip: written
    independently of session_accuracy."""
    records = VideoDir(data, num_classes=2).split("val")
    ds = StreamingDataset(records, model.model_card().clip, train=False)
    first, last = [], []
    with open_session(model, "torch") as s:
        for v, rec in enumerate(records):
            n = ds.clips_per_video[v]
            for c in range(n):
                x = ds[StreamIndex(v, c, c == 0, c == n - 1)]["frames"].numpy()[None]
                pred = int(s.step(np.ascontiguousarray(x, np.float32), np.array([reset and c == 0])).argmax())
                if c == 0:
                    first.append(pred == rec.label)
                if c == n - 1:
                    last.append(pred == rec.label)
    return float(np.mean(first)), float(np.mean(last))


def test_accuracy_is_the_last_clips(trained: torch.nn.Module, cue_match: Path) -> None:
    first, last = reference_top1(trained, cue_match, reset=True)
    assert last >= 0.9 and first <= last - 0.25  # the data tells first-clip from last-clip scoring
    with open_session(trained, "torch") as s:
        acc = session_accuracy(s, str(cue_match))
    assert acc["videos"] == 16 and acc["skipped"] == 0
    assert acc["top1"] == pytest.approx(last, abs=1e-4)


def test_accuracy_resets_the_memory_between_videos(trained: torch.nn.Module, short_videos: Path) -> None:
    _, with_reset = reference_top1(trained, short_videos, reset=True)
    _, without = reference_top1(trained, short_videos, reset=False)
    assert abs(with_reset - without) >= 3 / 48  # the data tells a reset from none
    with open_session(trained, "torch") as s:
        s.step(np.ones((1, *s.input_shape), np.float32))  # a bench cell's timing steps leave memory behind
        acc = session_accuracy(s, str(short_videos))
    assert acc["videos"] == 48
    assert acc["top1"] == pytest.approx(with_reset, abs=1e-4)


def test_accuracy_refuses_nan(trained: torch.nn.Module, cue_match: Path) -> None:
    import copy

    broken = copy.deepcopy(trained)
    with torch.no_grad():
        next(p for n, p in broken.named_parameters() if n.startswith("head")).view(-1)[0] = float("nan")
    with open_session(broken, "torch") as s, pytest.raises(NonFiniteError, match=r"clip 0 of .*000000\.mp4.*logits"):
        session_accuracy(s, str(cue_match))


def test_bench_steps_refuse_nan(trained: torch.nn.Module) -> None:
    import copy

    from edgemem.bench.cell import measure_session

    broken = copy.deepcopy(trained)
    with torch.no_grad():
        next(p for n, p in broken.named_parameters() if n.startswith("head")).view(-1)[0] = float("inf")
    with open_session(broken, "torch") as s, pytest.raises(NonFiniteError, match="first step.*logits"):
        measure_session(s, clips=2, warmup=0)

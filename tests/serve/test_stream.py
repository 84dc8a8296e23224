"""``edgemem stream`` end to end on real encoded videos (mpeg4 in mp4, h264 in mkv), and the ways
it must fail: one line on stderr, exit status 2, and the JSONL records already written kept."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import onnx
import pytest
import torch
from runtime_models import export, make_model, tinymem_preset
from video_maker import make_video, truncate

from edgemem.cli import main
from edgemem.data.reader import FrameReader
from edgemem.data.transforms import ClipTransform
from edgemem.runtimes import open_session
from edgemem.serve.stream import EXIT_INCOMPLETE

torch.set_num_threads(1)
CLIP_S = 4 / 15  # the test model: 4 frames at 30 fps / sampling rate 2


@pytest.fixture(scope="module")
def graph(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export(make_model(seed=0), tmp_path_factory.mktemp("graph") / "tiny.onnx")


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("videos")
    return {
        "mpeg4": make_video(d / "walk.mp4", "mpeg4", frames=60, fps=30),  # 2 s -> 7.5 clips: 8, the last moved back
        "h264": make_video(d / "run.mkv", "libx264", frames=40, fps=25, width=80, height=60),  # 1.6 s -> 6 clips
    }


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def clip_of(frames: list[np.ndarray], i: int, t: int = 4) -> list[np.ndarray]:
    """Clip ``i`` of a stream as the command forms it: ``t`` sampled frames from ``i * t``; a partial
    last clip is the last ``t`` frames (a source shorter than ``t``: its frames, the last repeated)."""
    clip = frames[min(i * t, max(0, len(frames) - t)) :][:t]
    return clip + [clip[-1]] * (t - len(clip))


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    rc = main(["stream", *args])
    return rc, capsys.readouterr().err


def test_stream_writes_one_record_per_clip(
    graph: Path, videos: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "clips.jsonl"
    rc, err = run([str(videos["mpeg4"]), "--model", str(graph), "--jsonl", str(out), "--topk", "3"], capsys)
    assert rc == 0, err
    recs = records(out)
    assert len(recs) == 8  # 30 samples at 15 fps: 7 whole clips, then the last 4 samples (26..29)
    assert [r["clip_index"] for r in recs] == list(range(8))
    for i, r in enumerate(recs):
        assert set(r) >= {"clip_index", "source", "t_start", "t_end", "topk", "latency_ms"}
        assert r["source"] == str(videos["mpeg4"])
        assert r["t_start"] == pytest.approx(i * CLIP_S if i < 7 else 2.0 - CLIP_S, abs=1 / 30)
        assert r["t_end"] - r["t_start"] == pytest.approx(CLIP_S, abs=1 / 30)
        assert r["latency_ms"] > 0
        assert len(r["topk"]) == 3 and r["topk"][0]["label"].startswith("class_")
        scores = [t["score"] for t in r["topk"]]
        assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1 + 1e-6
    assert "8 clips" in err and "real-time factor" in err

    # the same clips stepped by hand give the same scores: the command adds nothing of its own but the
    # last clip's place (moved back over the clip before, to end at the video's end)
    with open_session(graph, "ort-cpu") as s, FrameReader(str(videos["mpeg4"]), fps=15) as r:
        frames = [f.image for f in r]
        tf = ClipTransform(s.model_card.clip)
        for i, rec in enumerate(recs):
            logits = s.step(tf(clip_of(frames, i))[None])[0]
            p = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
            assert rec["topk"][0]["index"] == int(p.argmax())
            assert rec["topk"][0]["score"] == pytest.approx(float(p.max()), abs=1e-5)


@pytest.mark.parametrize("runtime", ["ort-cpu", "openvino-stateful"])
def test_batch_equals_sequential(
    runtime: str, graph: Path, videos: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two sources of different lengths as two slots of one batch: each slot is an independent
    stream (reset at its start, emptied when its source ends), so records equal one-by-one runs."""
    srcs = [str(videos["mpeg4"]), str(videos["h264"])]
    seq, bat = tmp_path / "seq.jsonl", tmp_path / "batch.jsonl"
    assert run([*srcs, "--model", str(graph), "--runtime", runtime, "--jsonl", str(seq), "--quiet"], capsys)[0] == 0
    assert run([*srcs, "--model", str(graph), "--runtime", runtime, "--jsonl", str(bat), "--batch"], capsys)[0] == 0
    a, b = records(seq), records(bat)
    assert len(a) == len(b) == 14
    key = lambda r: (r["source"], r["clip_index"])  # noqa: E731
    for ra, rb in zip(sorted(a, key=key), sorted(b, key=key), strict=True):
        assert key(ra) == key(rb) and ra["t_start"] == rb["t_start"]
        assert [t["index"] for t in ra["topk"]] == [t["index"] for t in rb["topk"]]
        np.testing.assert_allclose([t["score"] for t in ra["topk"]], [t["score"] for t in rb["topk"]], atol=1e-5)
    assert {r["slot"] for r in b} == {0, 1}


def test_annotated_copy(
    graph: Path, videos: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "annotated.mp4"
    rc, err = run([str(videos["h264"]), "--model", str(graph), "--out", str(out), "--quiet"], capsys)
    assert rc == 0, err
    with av.open(str(out)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(frames) == 40 and frames[0].shape == (60, 80, 3)
    band = frames[10][:26].astype(int)  # dark band with white text at the top
    assert (band.sum(-1) < 120).mean() > 0.6 and (band.min(-1) > 150).any()
    assert not list(tmp_path.glob(".annotated*"))  # no temp file left


def test_resume_in_another_process_and_runtime(
    graph: Path, videos: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Stream A and save the state; resume with B on another runtime: B's records are those of
    one uninterrupted stream A + B (no reset in between), and differ from B alone."""
    a, b = str(videos["mpeg4"]), str(videos["h264"])
    state, resumed, alone = tmp_path / "s.safetensors", tmp_path / "resumed.jsonl", tmp_path / "alone.jsonl"
    assert run([a, "--model", str(graph), "--save-state", str(state), "--quiet"], capsys)[0] == 0
    rc, err = run(
        [b, "--model", str(graph), "--runtime", "openvino", "--resume", str(state), "--jsonl", str(resumed)], capsys
    )
    assert rc == 0, err
    assert run([b, "--model", str(graph), "--jsonl", str(alone), "--quiet"], capsys)[0] == 0
    with open_session(graph, "ort-cpu") as s:
        tf = ClipTransform(s.model_card.clip)
        expected = []
        for src in (a, b):
            with FrameReader(src, fps=15) as r:
                frames = [f.image for f in r]
            for i in range(-(-len(frames) // 4)):
                expected.append(s.step(tf(clip_of(frames, i))[None])[0])
    got = records(resumed)
    assert len(got) == 6
    for rec, logits in zip(got, expected[-6:], strict=True):
        p = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
        assert rec["topk"][0]["index"] == int(p.argmax())
        assert rec["topk"][0]["score"] == pytest.approx(float(p.max()), abs=1e-5)
    assert any(
        abs(x["topk"][0]["score"] - y["topk"][0]["score"]) > 1e-4 for x, y in zip(got, records(alone), strict=True)
    )
    one_line_error(
        *run([b, "--model", str(graph), "--save-state", str(tmp_path / "s.pt")], capsys), ".npz or .safetensors"
    )


def test_realtime_runs_at_the_video_pace(
    graph: Path, videos: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import time

    out = tmp_path / "rt.jsonl"
    start = time.monotonic()
    rc, err = run([str(videos["h264"]), "--model", str(graph), "--jsonl", str(out), "--realtime"], capsys)
    assert rc == 0, err
    assert time.monotonic() - start >= 1.4  # a 1.6 s video, decoded at its own pace
    recs = records(out)
    assert recs and all(r["dropped_frames"] >= 0 for r in recs) and "dropped frames" in err


def test_preset_is_exported_into_the_cache(
    videos: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from edgemem.models import registry

    registry._load_all()
    monkeypatch.setitem(registry._PRESETS, "tinymem_preset", tinymem_preset)
    cache, out = tmp_path / "cache", tmp_path / "p.jsonl"
    args = [str(videos["mpeg4"]), "--model", "tinymem_preset", "--cache-dir", str(cache), "--jsonl", str(out)]
    # No checkpoint and no shipped weights: refused, never a silently random model.
    one_line_error(*run(args, capsys), "no shipped weights", "--random-weights")
    assert not cache.exists() and not out.exists()
    rc, err = run([*args, "--random-weights"], capsys)
    assert rc == 0 and "RANDOM weights" in err
    graphs = list(cache.glob("tinymem_preset-b1-f32-fs1-*.onnx"))
    assert len(graphs) == 1 and len(records(out)) == 8
    mtime = graphs[0].stat().st_mtime_ns
    assert run([*args, "--random-weights", "--runtime", "openvino"], capsys)[0] == 0
    assert graphs[0].stat().st_mtime_ns == mtime  # reused, not exported again


def test_graph_cache_keys_on_checkpoint_content(tmp_path: Path) -> None:
    """The key changes when a checkpoint file is rewritten in place (same name), and with the options."""
    from edgemem.export.graph_cache import GraphKey, weights_id

    ckpt = tmp_path / "w.pyth"
    ckpt.write_bytes(b"one")
    first = GraphKey.of("mvit_tiny", weights_id(ckpt), batch=1)
    ckpt.write_bytes(b"two")
    second = GraphKey.of("mvit_tiny", weights_id(ckpt), batch=1)
    assert first.filename() != second.filename() and first.filename().startswith("mvit_tiny-b1-f32-fs1-")
    assert (
        GraphKey.of("mvit_tiny", "random", batch=1, precision="fp16").filename()
        != GraphKey.of("mvit_tiny", "random", batch=1).filename()
    )
    assert GraphKey.of("mvit_tiny", "random", batch=1).edgemem and weights_id() == "random"


def one_line_error(rc: int, err: str, *needles: str) -> None:
    assert rc == 2
    lines = [line for line in err.splitlines() if line.startswith("edgemem stream: error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0], lines[0]


def test_truncated_mp4_is_refused(
    graph: Path, videos: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cut = truncate(videos["mpeg4"], 0.5)
    one_line_error(*run([str(cut), "--model", str(graph), "--jsonl", str(tmp_path / "x.jsonl")], capsys), cut.name)


def test_a_failing_source_makes_the_stream_incomplete(
    graph: Path, videos: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The other sources go on; their records are kept; the exit status says incomplete (3)."""
    out = tmp_path / "partial.jsonl"
    cut = truncate(videos["mpeg4"], 0.5)
    rc, err = run([str(videos["h264"]), str(cut), "--model", str(graph), "--jsonl", str(out), "--quiet"], capsys)
    assert rc == EXIT_INCOMPLETE == 3, err
    assert "Traceback" not in err and "cannot open" in err and "stopped at clip 0" in err
    assert "1 of 2 sources incomplete" in err
    assert len(records(out)) == 6 and {r["source"] for r in records(out)} == {str(videos["h264"])}


@pytest.mark.parametrize(
    ("case", "needle"),
    [
        ("missing-video", "no such video file"),
        ("not-a-graph", "not an edgemem graph"),
        ("missing-graph", "not found"),
        ("unknown-runtime", "unknown runtime"),
        ("gpu-runtime", "not available here"),
        ("unknown-preset", "unknown model"),
    ],
)
def test_bad_inputs(
    case: str, needle: str, graph: Path, videos: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    video, model, runtime = str(videos["mpeg4"]), str(graph), "ort-cpu"
    if case == "missing-video":
        video = str(tmp_path / "nope.mp4")
    elif case == "not-a-graph":
        plain = onnx.load(str(graph))
        del plain.metadata_props[:]
        model = str(tmp_path / "plain.onnx")
        onnx.save(plain, model)
    elif case == "missing-graph":
        model = str(tmp_path / "nope.onnx")
    elif case == "unknown-runtime":
        runtime = "tflite"
    elif case == "gpu-runtime":
        runtime = "ort-cuda"
        from edgemem.runtimes.availability import check

        if check(runtime).available:
            pytest.skip("ort-cuda is available here")
    elif case == "unknown-preset":
        model = "no_such_model"
    one_line_error(*run([video, "--model", model, "--runtime", runtime], capsys), needle)


def test_url_that_does_not_answer(graph: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)  # accepts connections into the backlog, never answers
    try:
        url = f"http://127.0.0.1:{server.getsockname()[1]}/cam.mp4"
        rc, err = run([url, "--model", str(graph), "--timeout", "1"], capsys)
    finally:
        server.close()
    one_line_error(rc, err, "no answer within 1 s")


def test_cli_process_has_no_traceback(graph: Path, videos: dict[str, Path]) -> None:
    cut = truncate(videos["mpeg4"], 0.3)
    p = subprocess.run(
        [sys.executable, "-m", "edgemem.cli", "stream", str(cut), "--model", str(graph)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert p.stderr.strip().startswith("edgemem stream: error:") and len(p.stderr.strip().splitlines()) == 1


def test_preset_without_checkpoint_uses_its_shipped_weights() -> None:
    """``--model mvit_tiny`` without --checkpoint streams the shipped default weights (and says so)."""
    import torch

    from edgemem.export.model_source import build_model
    from edgemem.models.checkpoint import read_pyth
    from edgemem.models.pretrained import default_entry

    notes: list[str] = []
    model, weights = build_model("mvit_tiny", None, False, notes.append)
    entry = default_entry("mvit_tiny")
    assert weights == f"sha256:{entry['sha256']}" and entry["name"] in notes[0]
    shipped = read_pyth(entry["path"])["model_state"]
    assert all(torch.equal(model.state_dict()[k], v) for k, v in shipped.items())

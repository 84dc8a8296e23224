"""The streaming reader (threaded PyAV decoding, resampling, realtime skip-ahead, errors) and the
card's inference preprocessing, on real encoded videos made with PyAV."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from video_maker import frame_image, make_video, truncate

from edgemem.contract import ClipSpec
from edgemem.data.reader import FrameReader, StreamError
from edgemem.data.transforms import ClipTransform, center_crop, short_side_resize, to_tensor


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("videos")
    return {
        "mpeg4": make_video(d / "a.mp4", "mpeg4", frames=60, fps=30),
        "h264": make_video(d / "b.mkv", "libx264", frames=50, fps=25),
    }


@pytest.mark.parametrize(("codec", "fps", "expected"), [("mpeg4", 15, 30), ("mpeg4", 60, 120), ("h264", 15, 30)])
def test_resampling(videos: dict[str, Path], codec: str, fps: float, expected: int) -> None:
    with FrameReader(str(videos[codec]), fps=fps) as r:
        frames = list(r)
    assert len(frames) == expected  # 2 s of video at `fps`
    assert all(f.sampled and f.image.shape == (48, 64, 3) and f.image.dtype == np.uint8 for f in frames)
    times = np.array([f.time for f in frames])
    # each sample is the newest source frame at or before k / fps
    src = 1 / r.source_fps
    assert np.all(times <= np.arange(expected) / fps + 1e-6)
    assert np.all(times > np.arange(expected) / fps - src - 1e-6)


def test_frames_are_the_video(videos: dict[str, Path]) -> None:
    with FrameReader(str(videos["h264"]), fps=25) as r:
        frames = list(r)
    assert len(frames) == 50
    for i in (0, 17, 49):  # lossy codec: close to what was encoded
        assert np.abs(frames[i].image.astype(int) - frame_image(i, 64, 48)).mean() < 8


def test_keep_all(videos: dict[str, Path]) -> None:
    with FrameReader(str(videos["mpeg4"]), fps=10, keep_all=True) as r:
        frames = list(r)
    assert len(frames) == 60 and sum(f.sampled for f in frames) == 20
    assert [f.time for f in frames] == sorted(f.time for f in frames)


def test_realtime_skips_ahead_when_the_consumer_is_slow(tmp_path: Path) -> None:
    video = make_video(tmp_path / "short.mp4", "mpeg4", frames=24, fps=30)
    start = time.monotonic()
    with FrameReader(str(video), fps=30, realtime=True, queue_size=2) as r:
        got = []
        for f in r:
            got.append(f)
            time.sleep(0.1)  # far slower than 30 fps
    assert time.monotonic() - start >= 0.7  # decoded at the video's own pace (0.8 s)
    assert r.dropped > 0 and len(got) + r.dropped == 24
    assert got[-1].time == pytest.approx(23 / 30)  # the newest frame, not a stale one


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d, v: d / "missing.mp4", "no such video file"),
        (lambda d, v: _write(d / "empty.mp4", b""), "empty file"),
        (lambda d, v: _write(d / "text.mp4", b"not a video"), "cannot open"),
        (lambda d, v: truncate(v["mpeg4"], 0.6), "cannot open"),
    ],
    ids=["missing", "empty", "not-a-video", "truncated"],
)
def test_bad_files(tmp_path: Path, videos: dict[str, Path], make: object, message: str) -> None:
    path = make(tmp_path, videos)
    with pytest.raises(StreamError, match=message) as e:
        with FrameReader(str(path), fps=15) as r:
            list(r)
    assert "\n" not in str(e.value)


def test_truncated_faststart_mp4_fails_after_its_frames(tmp_path: Path) -> None:
    """moov in front: the file opens, frames decode, then the truncation is reported."""
    import av

    path = tmp_path / "fast.mp4"
    with av.open(str(path), "w", options={"movflags": "faststart"}) as out:
        s = out.add_stream("mpeg4", rate=30)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        for i in range(60):
            for p in s.encode(av.VideoFrame.from_ndarray(frame_image(i, 64, 48), format="rgb24")):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    cut = truncate(path, 0.5)
    got = []
    with pytest.raises(StreamError, match="truncated or corrupt, decoded"):
        with FrameReader(str(cut), fps=30) as r:
            got.extend(r)
    assert 0 < len(got) < 60


def test_url_that_does_not_answer_times_out() -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    conns: list[socket.socket] = []
    threading.Thread(target=lambda: conns.append(server.accept()[0]), daemon=True).start()
    start = time.monotonic()
    try:
        with pytest.raises(StreamError, match="no answer within 1 s"):
            FrameReader(f"http://127.0.0.1:{port}/live.mp4", fps=15, timeout_s=1.0)
        assert time.monotonic() - start < 10
    finally:
        for c in conns:
            c.close()
        server.close()


def test_clip_transform_follows_the_card() -> None:
    clip = ClipSpec(3, 1, 16, mean=(0.5, 0.25, 0.0), std=(0.5, 0.25, 1.0))
    images = [np.full((24, 40, 3), (255, 0, 128), np.uint8) for _ in range(3)]
    x = ClipTransform(clip)(images)
    assert x.shape == (3, 3, 16, 16) and x.dtype == np.float32
    np.testing.assert_allclose(x[0], 1.0, atol=1e-6)  # (1 - .5) / .5
    np.testing.assert_allclose(x[1], -1.0, atol=1e-6)  # (0 - .25) / .25
    np.testing.assert_allclose(x[2], 128 / 255, atol=1e-6)


def test_resize_and_crop_geometry() -> None:
    t = to_tensor([np.zeros((30, 60, 3), np.uint8)])
    assert short_side_resize(t, 16).shape == (1, 3, 16, 32)
    assert short_side_resize(to_tensor([np.zeros((60, 30, 3), np.uint8)]), 16).shape == (1, 3, 32, 16)
    ramp = torch.arange(10.0).view(1, 1, 1, 10).expand(1, 3, 6, 10)
    crop = center_crop(ramp, 4)
    assert crop.shape == (1, 3, 4, 4) and crop[0, 0, 0].tolist() == [3.0, 4.0, 5.0, 6.0]

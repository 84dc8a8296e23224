"""PyAV decoding: frame-accurate seek across codecs/containers, metadata, unreadable files."""

from __future__ import annotations

import numpy as np
import pytest

from edgemem.data.video import VideoError, VideoReader, probe, read_frames, write_video
from edgemem.errors import InputError

T = 75


def _coded_frames(t: int = T, h: int = 32, w: int = 56) -> np.ndarray:
    """Each frame shows its own index as 7 black/white bars (robust to compression)."""
    frames = np.zeros((t, h, w, 3), np.uint8)
    for i in range(t):
        for bit in range(7):
            if (i >> bit) & 1:
                frames[i, :, bit * 8 : (bit + 1) * 8] = 255
    return frames


def _index_of(frame: np.ndarray) -> int:
    return sum(1 << b for b in range(7) if frame[frame.shape[0] // 2, b * 8 + 4, 0] > 128)


@pytest.mark.parametrize(
    "codec,ext", [("mpeg4", "mp4"), ("libx264", "mp4"), ("libx264", "mkv"), ("libvpx-vp9", "webm")]
)
def test_frame_accurate_seek(tmp_path, codec, ext):
    path = tmp_path / f"v.{ext}"
    write_video(path, _coded_frames(), fps=30, codec=codec, gop=12)
    with VideoReader(path) as r:
        assert r.info.num_frames == T
        assert r.info.fps == pytest.approx(30.0)
        assert r.info.duration == pytest.approx(T / 30, abs=0.05)
        assert (r.info.width, r.info.height) == (56, 32)
        wanted = [70, 3, 40, 40, 0, 31, 59, 74, 13]
        frames = r.get_frames(wanted)
        assert frames.shape == (len(wanted), 32, 56, 3) and frames.dtype == np.uint8
        assert [_index_of(f) for f in frames] == wanted
        window = r.get_window(1.0, 1.5)  # frames 30..44
        assert [_index_of(f) for f in window] == list(range(30, 45))
        assert [_index_of(f) for f in r.read_all()] == list(range(T))


def test_content_roundtrip(tmp_path):
    frames = np.zeros((20, 40, 40, 3), np.uint8)
    frames[:, 8:32, 8:32] = (230, 30, 30)
    write_video(tmp_path / "red.mp4", frames)
    back = read_frames(tmp_path / "red.mp4", [0, 19])
    assert np.abs(back[:, 20, 20].astype(int) - [230, 30, 30]).max() < 20


def test_out_of_range_index(tmp_path):
    write_video(tmp_path / "v.mp4", _coded_frames(10))
    with VideoReader(tmp_path / "v.mp4") as r, pytest.raises(InputError, match="out of range"):
        r.get_frames([10])


def test_missing_zero_length_and_garbage(tmp_path):
    with pytest.raises(VideoError, match="no such video"):
        probe(tmp_path / "nope.mp4")
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(VideoError, match="zero-length"):
        probe(tmp_path / "empty.mp4")
    (tmp_path / "junk.mp4").write_bytes(b"this is not a video" * 100)
    with pytest.raises(VideoError, match="cannot open"):
        probe(tmp_path / "junk.mp4")


def test_truncated_file(tmp_path):
    write_video(tmp_path / "v.mkv", _coded_frames(), codec="libx264", gop=10)
    data = (tmp_path / "v.mkv").read_bytes()
    (tmp_path / "cut.mkv").write_bytes(data[: len(data) // 2])
    # Either the frame count already shows the loss, or decoding the end fails clearly.
    try:
        with VideoReader(tmp_path / "cut.mkv") as r:
            n = r.info.num_frames
            if n >= T:
                with pytest.raises(VideoError, match="truncated"):
                    r.get_frames([T - 1])
            else:
                assert [_index_of(f) for f in r.get_frames([0, n - 1])] == [0, n - 1]
    except VideoError as e:
        assert "cut.mkv" in str(e)


def test_truncated_mp4_with_frame_count(tmp_path):
    """A faststart mp4 keeps its header: early frames decode, the lost ones give a clear error."""
    write_video(tmp_path / "v.mp4", _coded_frames(), gop=10)
    data = (tmp_path / "v.mp4").read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: int(len(data) * 0.6)])
    with VideoReader(tmp_path / "cut.mp4") as r:
        assert r.info.num_frames == T
        assert [_index_of(f) for f in r.get_frames([0, 5])] == [0, 5]
        with pytest.raises(VideoError, match="truncated"):
            r.read_all()


def test_timestamp_gaps_give_the_frame_on_screen(tmp_path):
    """Variable frame rate: an index with no frame of its own gets the frame shown at that time."""
    from fractions import Fraction

    import av

    coded = _coded_frames(40)
    times = [t for t in range(40) if t % 5 != 3]  # every 5th frame dropped
    path = tmp_path / "vfr.mkv"
    with av.open(str(path), "w") as out:
        st = out.add_stream("libx264", rate=30)
        st.width, st.height, st.pix_fmt = 56, 32, "yuv420p"
        st.codec_context.time_base = Fraction(1, 30)
        for t in times:
            f = av.VideoFrame.from_ndarray(coded[t], format="rgb24")
            f.pts, f.time_base = t, Fraction(1, 30)
            for p in st.encode(f):
                out.mux(p)
        for p in st.encode():
            out.mux(p)
    with VideoReader(path) as r:
        wanted = [0, 3, 8, 9, 13, 20]
        assert r.info.num_frames == 40
        got = [_index_of(f) for f in r.get_frames(wanted)]
    assert got == [max(t for t in times if t <= i) for i in wanted]

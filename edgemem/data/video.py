"""PyAV video decoding: metadata, frame-accurate seek by timestamp, frames as uint8 RGB arrays.

Frame ``i`` of a video is the frame shown at time ``start + i / fps`` (``fps`` the stream's average
rate), so indices are well defined for variable-frame-rate streams as well.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from edgemem.atomic import atomic_path
from edgemem.errors import InputError


class VideoError(InputError):
    """A video file that cannot be opened or decoded (missing, empty, corrupt, truncated)."""


# Frames missing at the very end of a stream whose metadata over-counts by this much are
# replaced by the last decoded frame; a larger gap means the file is truncated.
_END_TOLERANCE = 2


@dataclass(frozen=True)
class VideoInfo:
    """Metadata of a video stream."""

    path: str
    fps: float
    num_frames: int
    duration: float  # seconds
    width: int
    height: int
    codec: str

    def frame_time(self, index: int) -> float:
        """Presentation time (seconds from the stream's start) of frame ``index``."""
        return index / self.fps


class VideoReader:
    """An open video file; decode frames by index or by time window. Use as a context manager."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = str(path)
        if not os.path.isfile(self.path):
            raise VideoError(f"{self.path}: no such video file")
        if os.path.getsize(self.path) == 0:
            raise VideoError(f"{self.path}: zero-length file")
        try:
            self._container = av.open(self.path)
        except (av.FFmpegError, OSError, UnicodeDecodeError) as e:
            raise VideoError(f"{self.path}: cannot open video ({_reason(e)})") from None
        try:
            if not self._container.streams.video:
                raise VideoError(f"{self.path}: no video stream")
            self._stream = self._container.streams.video[0]
            self._stream.thread_type = "AUTO"
            self.info = self._probe()
        except BaseException:
            self._container.close()
            raise

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._container.close()

    def _probe(self) -> VideoInfo:
        s = self._stream
        rate = s.average_rate or s.guessed_rate or s.base_rate
        if not rate or float(rate) <= 0:
            raise VideoError(f"{self.path}: unknown frame rate")
        fps = float(rate)
        tb = float(s.time_base) if s.time_base else 0.0
        duration = float(s.duration * tb) if s.duration and tb else 0.0
        if duration <= 0 and self._container.duration and len(self._container.streams) == 1:
            duration = self._container.duration / av.time_base  # the video's own length
        num_frames = int(s.frames or 0)
        if num_frames <= 0:
            num_frames = self._count_packets()
        if num_frames <= 0:
            raise VideoError(f"{self.path}: video stream has no frames")
        # Variable frame rate: index i means time i / fps, so the duration sets the index range.
        num_frames = max(num_frames, round(duration * fps))
        if duration <= 0:
            duration = num_frames / fps
        ctx = s.codec_context
        return VideoInfo(self.path, fps, num_frames, duration, ctx.width, ctx.height, ctx.name)

    def _count_packets(self) -> int:
        """Frame count by demuxing (no decoding), for containers without a frame count."""
        n = 0
        try:
            for packet in self._container.demux(self._stream):
                if packet.size:
                    n += 1
        except av.FFmpegError as e:
            raise VideoError(f"{self.path}: corrupt video ({_reason(e)})") from None
        self._seek_start()
        return n

    def _seek_start(self) -> None:
        try:
            self._container.seek(0, stream=self._stream, backward=True, any_frame=False)
        except av.FFmpegError:
            pass

    def get_frames(self, indices: Sequence[int]) -> np.ndarray:
        """Frames at ``indices`` (any order, repeats allowed) as uint8 RGB ``[T, H, W, 3]``."""
        if len(indices) == 0:
            raise ValueError("no frame indices given")
        n = self.info.num_frames
        bad = [i for i in indices if not 0 <= i < n]
        if bad:
            raise InputError(f"{self.path}: frame index {bad[0]} out of range [0, {n})")
        wanted = sorted(set(int(i) for i in indices))
        decoded = self._decode_range(wanted[0], wanted[-1], set(wanted))
        missing = [i for i in wanted if i not in decoded]
        if missing:
            last = max(decoded) if decoded else -1
            if not decoded or missing[0] < n - _END_TOLERANCE:
                raise VideoError(f"{self.path}: truncated or corrupt, frame {missing[0]} of {n} could not be decoded")
            for i in missing:  # metadata over-counted by a frame or two
                decoded[i] = decoded[last]
        return np.stack([decoded[i] for i in indices])

    def get_window(self, start_s: float, end_s: float) -> np.ndarray:
        """All frames shown in the time window ``[start_s, end_s)`` seconds, ``[T, H, W, 3]``."""
        fps = self.info.fps
        first = max(0, math.ceil(start_s * fps - 1e-6))
        last = min(self.info.num_frames, math.ceil(end_s * fps - 1e-6))
        if last <= first:
            raise InputError(f"{self.path}: empty window [{start_s}, {end_s}) s")
        return self.get_frames(range(first, last))

    def read_all(self) -> np.ndarray:
        """Every frame of the video, ``[T, H, W, 3]``."""
        return self.get_frames(range(self.info.num_frames))

    def _decode_range(self, first: int, last: int, wanted: set[int]) -> dict[int, np.ndarray]:
        """Decode frames ``first..last``; keep those in ``wanted``. Seeks to the keyframe before."""
        s = self._stream
        if s.time_base is None:
            raise VideoError(f"{self.path}: the video stream has no time base")
        tb = float(s.time_base)
        start_pts = s.start_time or 0
        fps = self.info.fps
        seeked = False
        if first > 0:
            try:
                self._container.seek(start_pts + int(first / fps / tb), stream=s, backward=True)
                seeked = True
            except av.FFmpegError:
                self._seek_start()
        else:
            self._seek_start()
        out: dict[int, np.ndarray] = {}
        pending = sorted(wanted)  # frame i is the last frame presented at or before time i / fps
        k, count, prev = 0, -1, None
        try:
            for frame in self._container.decode(s):
                count += 1
                if frame.pts is None:
                    if seeked:  # no timestamps: indices are only known when counting from the start
                        self._seek_start()
                        return self._decode_from_start(last, wanted)
                    idx = count
                else:
                    idx = round((frame.pts - start_pts) * tb * fps)
                while k < len(pending) and pending[k] < idx and prev is not None:
                    out[pending[k]] = prev.to_ndarray(format="rgb24")  # a gap in the timestamps
                    k += 1
                if k < len(pending) and pending[k] == idx:
                    out[idx] = frame.to_ndarray(format="rgb24")
                    k += 1
                if k == len(pending) or idx > last:
                    break
                prev = frame
        except (av.FFmpegError, ValueError) as e:
            if not out:
                raise VideoError(f"{self.path}: cannot decode ({_reason(e)})") from None
        return out

    def _decode_from_start(self, last: int, wanted: set[int]) -> dict[int, np.ndarray]:
        out: dict[int, np.ndarray] = {}
        try:
            for idx, frame in enumerate(self._container.decode(self._stream)):
                if idx > last:
                    break
                if idx in wanted:
                    out[idx] = frame.to_ndarray(format="rgb24")
        except (av.FFmpegError, ValueError) as e:
            if not out:
                raise VideoError(f"{self.path}: cannot decode ({_reason(e)})") from None
        return out


def probe(path: str | os.PathLike[str]) -> VideoInfo:
    """Metadata of the video at ``path``; VideoError if it is unreadable."""
    with VideoReader(path) as r:
        return r.info


def read_frames(path: str | os.PathLike[str], indices: Sequence[int]) -> np.ndarray:
    """Frames at ``indices`` of the video at ``path``, uint8 RGB ``[T, H, W, 3]``."""
    with VideoReader(path) as r:
        return r.get_frames(indices)


def check_video_encoder(codec: str) -> None:
    """Refuse ``codec`` unless this PyAV build has it as a video encoder (one line, before any file)."""
    try:
        kind = av.codec.Codec(codec, "w").type
    except (av.codec.codec.UnknownCodecError, ValueError):
        kind = None
    if kind != "video":
        raise InputError(f"--codec {codec!r} is not a video encoder of this PyAV build; try mpeg4, libx264, libvpx-vp9")


def write_video(
    path: str | os.PathLike[str],
    frames: np.ndarray,
    fps: int = 30,
    codec: str = "mpeg4",
    gop: int = 16,
    bit_rate: int | None = None,
) -> None:
    """Encode uint8 RGB ``[T, H, W, 3]`` frames (even H, W) to ``path``, atomically."""
    path = Path(path)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise InputError(f"frames must be uint8 [T, H, W, 3], got {frames.dtype} {list(frames.shape)}")
    t, h, w, _ = frames.shape
    options = {"movflags": "faststart"} if path.suffix.lower() in (".mp4", ".mov", ".m4v") else {}
    with atomic_path(path) as tmp, av.open(str(tmp), mode="w", options=options) as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.codec_context.gop_size = gop
        stream.bit_rate = bit_rate or max(200_000, 40 * w * h * fps // 10)
        if codec in ("libx264", "h264"):
            stream.options = {"crf": "18", "preset": "veryfast"}
        for img in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def _reason(e: BaseException) -> str:
    return str(getattr(e, "strerror", None) or e).strip() or type(e).__name__

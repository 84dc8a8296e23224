"""Streaming video decoding: PyAV in a background thread, a bounded queue, resampling to a frame rate.

``FrameReader(source, fps=...)`` opens a file, a URL PyAV can open (rtsp/http/...), or a capture
device (``v4l2:/dev/video0``, ``avfoundation:0``, ``dshow:video=NAME``; a bare ``/dev/videoN`` means
v4l2) and yields ``Frame``s: the frames at times ``k / fps`` (the newest decoded frame at or before
each time, so a slower source repeats frames and a faster one skips them). With ``keep_all`` every
decoded frame comes through, flagged ``sampled`` or not (for writing an annotated copy). In
``realtime`` mode a file is decoded at its own pace and a full queue drops its oldest frame
(skip ahead instead of falling behind); ``dropped`` counts them. Decoding errors reach the
consumer as ``StreamError`` at the point in the stream where they happened.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np

from edgemem.errors import InputError

DEVICE_FORMATS = ("v4l2", "avfoundation", "dshow", "gdigrab", "x11grab")
# A container announcing more frames (or frame periods of duration) than this many beyond the decoded
# ones is truncated.
_END_TOLERANCE = 2


class StreamError(InputError):
    """A source that cannot be opened or decoded (missing, corrupt, truncated, unsupported, timeout)."""


@dataclass(frozen=True)
class Frame:
    time: float  # presentation time in seconds from the first frame
    image: np.ndarray  # H x W x 3 uint8 RGB
    sampled: bool = True  # one of the frames at k / fps (the model's frames)


_END = object()


def _reason(e: BaseException) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return text[:200]


def _split_source(source: str) -> tuple[str, str | None]:
    """(url or path, PyAV input format or None)."""
    head, sep, rest = source.partition(":")
    if sep and head in DEVICE_FORMATS:
        return rest, head
    if source.startswith("/dev/video"):
        return source, "v4l2"
    return source, None


def open_source(source: str, timeout_s: float) -> Any:
    """av.open the source; one-line StreamError for every way that fails."""
    target, fmt = _split_source(source)
    is_url = "://" in target
    if fmt is None and not is_url:
        p = Path(target)
        if not p.is_file():
            raise StreamError(f"{source}: no such video file")
        if p.stat().st_size == 0:
            raise StreamError(f"{source}: empty file")
    try:
        container = av.open(target, format=fmt, timeout=(timeout_s, timeout_s) if is_url else None)
    except av.error.ExitError:
        raise StreamError(f"{source}: no answer within {timeout_s:g} s") from None
    except (av.FFmpegError, OSError, UnicodeDecodeError) as e:
        raise StreamError(f"{source}: cannot open ({_reason(e)})") from None
    if not container.streams.video:
        container.close()
        raise StreamError(f"{source}: no video stream")
    if container.streams.video[0].codec_context is None:
        container.close()
        raise StreamError(f"{source}: unsupported codec (no decoder in this PyAV build)")
    return container


def _duration_s(container: Any, stream: Any) -> float:
    """The video's announced duration in seconds (0 when unknown): the stream's, else the container's
    when the video is its only stream (an audio track may outlast the video)."""
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration and len(container.streams) == 1:
        return container.duration / 1e6
    return 0.0


class FrameReader:
    """Decode ``source`` in a background thread; iterate to get ``Frame``s resampled to ``fps``."""

    def __init__(
        self,
        source: str,
        *,
        fps: float,
        queue_size: int = 64,
        realtime: bool = False,
        keep_all: bool = False,
        timeout_s: float = 10.0,
    ) -> None:
        if fps <= 0:
            raise InputError(f"fps must be positive, got {fps}")
        self.source, self.fps, self.realtime, self.keep_all = source, float(fps), realtime, keep_all
        self._container = open_source(source, timeout_s)
        stream = self._container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = stream.average_rate or stream.guessed_rate
        self.source_fps = float(rate) if rate else 0.0
        self.width, self.height = stream.codec_context.width, stream.codec_context.height
        self._expected = int(stream.frames or 0)
        self._expected_s = _duration_s(self._container, stream)
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max(1, queue_size))
        self._stop = threading.Event()
        self.dropped = 0
        self.decoded = 0
        self._thread = threading.Thread(target=self._decode, name=f"decode:{source}", daemon=True)
        self._thread.start()

    # ---- producer ---------------------------------------------------------------------------
    def _put(self, item: Any) -> None:
        if self.realtime and item is not _END and not isinstance(item, BaseException):
            while True:
                try:
                    self._queue.put_nowait(item)
                    return
                except queue.Full:
                    try:
                        self._queue.get_nowait()
                        self.dropped += 1
                    except queue.Empty:
                        pass
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def _frames(self) -> Iterator[tuple[float, Any]]:
        stream = self._container.streams.video[0]
        t0: float | None = None
        for packet in self._container.demux(stream):
            for frame in packet.decode():
                if frame.pts is None or frame.time is None:
                    t = (self.decoded / self.source_fps) if self.source_fps else 0.0
                else:
                    t = float(frame.time)
                t0 = t if t0 is None else t0
                self.decoded += 1
                yield t - t0, frame

    def _decode(self) -> None:
        try:
            step = 1.0 / self.fps
            next_t = 0.0
            prev: tuple[float, Any] | None = None
            wall0 = time.monotonic()
            for t, frame in self._frames():
                if self._stop.is_set():
                    return
                if self.realtime:
                    delay = wall0 + t - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                if prev is not None:
                    next_t = self._emit(prev, t, next_t, step)
                prev = (t, frame)
            period = 1.0 / self.source_fps if self.source_fps else step
            if prev is not None:  # the last frame covers one source frame period
                self._emit(prev, prev[0] + period, next_t, step)
            if self._expected and self.decoded + _END_TOLERANCE < self._expected:
                raise StreamError(
                    f"{self.source}: truncated or corrupt, decoded {self.decoded} of {self._expected} frames"
                )
            end = prev[0] + period if prev is not None else 0.0
            if self._expected_s and end + _END_TOLERANCE * period + 1e-3 < self._expected_s:
                raise StreamError(
                    f"{self.source}: truncated or corrupt, decoded {end:.2f} s of {self._expected_s:.2f} s"
                )
            if self.decoded == 0:
                raise StreamError(f"{self.source}: no decodable frames")
            self._put(_END)
        except StreamError as e:
            self._put(e)
        except (av.FFmpegError, OSError, ValueError) as e:
            self._put(StreamError(f"{self.source}: decoding failed after {self.decoded} frames ({_reason(e)})"))
        except BaseException as e:  # hand anything else to the consumer rather than dying silently
            self._put(e)

    def _emit(self, prev: tuple[float, Any], until: float, next_t: float, step: float) -> float:
        """Queue ``prev`` (shown from prev time until ``until``) once per sample time it covers."""
        t, frame = prev
        image = None
        sampled = False
        while next_t < until - 1e-9:
            image = frame.to_ndarray(format="rgb24") if image is None else image
            self._put(Frame(t, image, True))
            sampled = True
            next_t += step
        if self.keep_all and not sampled:
            self._put(Frame(t, frame.to_ndarray(format="rgb24"), False))
        return next_t

    # ---- consumer ---------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Frame]:
        while True:
            item = self._queue.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        self._stop.set()
        while True:  # unblock a producer waiting on a full queue
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._thread.join(timeout=5)
        self._container.close()

    def __enter__(self) -> FrameReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

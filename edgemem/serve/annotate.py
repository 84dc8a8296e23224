"""Write an annotated copy of a video with PyAV: the current label and score drawn on each frame.

Text is drawn with Pillow's built-in bitmap font (Pillow ships with matplotlib, already a
dependency of the plots); the file is written to a temp name and renamed when complete.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import av
import numpy as np
from av.video.stream import VideoStream

from edgemem.atomic import AtomicFile
from edgemem.errors import UnsupportedError

_CODECS = ("libx264", "h264", "mpeg4")


def _codec() -> str:
    for c in _CODECS:
        if c in av.codecs_available:
            return c
    raise UnsupportedError("this PyAV build has no H.264 or MPEG-4 encoder for --out")


def draw_text(image: np.ndarray, lines: list[str]) -> np.ndarray:
    """A copy of ``image`` with ``lines`` on a dark band at the top."""
    try:
        from PIL import Image, ImageDraw
    except ImportError:
        raise UnsupportedError("--out needs Pillow to draw labels (pip install pillow)") from None
    img = Image.fromarray(image)
    draw = ImageDraw.Draw(img)
    band = 12 * len(lines) + 4
    draw.rectangle((0, 0, img.width, band), fill=(0, 0, 0))
    for i, line in enumerate(lines):
        draw.text((3, 2 + 12 * i), line, fill=(255, 255, 255))
    return np.asarray(img)


class AnnotatedWriter:
    """Encode RGB frames (with text) to ``path``; the container follows the suffix (.mp4, .mkv, ...)."""

    def __init__(self, path: str | os.PathLike[str], fps: float, width: int, height: int) -> None:
        self.path = Path(path)
        self._file = AtomicFile(self.path)
        self._tmp = str(self._file.tmp)
        self.width, self.height = width - width % 2, height - height % 2  # yuv420p needs even sizes
        try:
            self._out: Any = av.open(self._tmp, "w")
            stream = self._out.add_stream(_codec(), rate=max(1, round(fps)))
            if not isinstance(stream, VideoStream):  # _codec only names video encoders
                raise ValueError(f"{type(stream).__name__} is not a video stream")
            self._stream = stream
        except (av.FFmpegError, ValueError) as e:
            self._file.discard()
            raise UnsupportedError(f"cannot write {self.path.name}: {e}") from None
        self._stream.width, self._stream.height, self._stream.pix_fmt = self.width, self.height, "yuv420p"
        self.frames = 0

    def write(self, image: np.ndarray, lines: list[str]) -> None:
        img = draw_text(image[: self.height, : self.width], lines) if lines else image[: self.height, : self.width]
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
        for packet in self._stream.encode(frame):
            self._out.mux(packet)
        self.frames += 1

    def close(self, keep: bool = True) -> None:
        """Finish the file and move it into place (``keep=False`` discards it)."""
        try:
            if keep:
                for packet in self._stream.encode():
                    self._out.mux(packet)
            self._out.close()
            if keep and self.frames:
                self._file.commit()
        finally:
            self._file.discard()


class AnnotationSink:
    """``frame_sink`` of ``run_stream``: every decoded frame, labelled with its clip's top class."""

    def __init__(self, out: Path, num_sources: int) -> None:
        self.out, self.num_sources = Path(out), num_sources
        self._writers: dict[str, AnnotatedWriter] = {}
        self._last: dict[str, tuple[float, list[str]]] = {}

    def _path(self, slot_or_index: int) -> Path:
        if self.num_sources == 1:
            return self.out
        return self.out.with_name(f"{self.out.stem}_{slot_or_index}{self.out.suffix}")

    def __call__(self, source: Any, frames: list[Any], record: Any) -> None:
        name = source.name
        if name not in self._writers:
            h, w = frames[0].image.shape[:2]
            fps = source.reader.source_fps or source.reader.fps
            self._writers[name] = AnnotatedWriter(self._path(len(self._writers)), fps, w, h)
        last_t, lines = self._last.get(name, (-1.0, []))
        if record is not None:
            best = record.topk[0]
            lines = [f"{best['label']} {best['score']:.2f}", f"clip {record.clip_index}"]
        for f in frames:
            if f.time > last_t:  # a frame repeated to fill the model's rate is written once
                self._writers[name].write(f.image, lines)
                last_t = f.time
        self._last[name] = (last_t, lines)

    def close(self, keep: bool = True) -> None:
        """Finish every file (``keep=False``: a failed stream, remove them)."""
        for w in self._writers.values():
            w.close(keep=keep)

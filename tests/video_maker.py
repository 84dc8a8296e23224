"""Real encoded test videos made with PyAV (a moving coloured square over a gradient)."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np


def frame_image(i: int, width: int, height: int) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    img = np.stack([(x * 255 // width), (y * 255 // height), np.full_like(x, (i * 9) % 256)], -1).astype(np.uint8)
    s = min(width, height) // 4
    x0 = (i * 3) % (width - s)
    img[height // 3 : height // 3 + s, x0 : x0 + s] = (255, 40, 40)
    return img


def make_video(
    path: Path, codec: str = "mpeg4", frames: int = 60, fps: int = 30, width: int = 64, height: int = 48
) -> Path:
    """Encode ``frames`` frames at ``fps`` into ``path`` (container from the suffix)."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if codec == "libx264":
            stream.options = {"preset": "ultrafast"}
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(frame_image(i, width, height), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def truncate(path: Path, keep: float = 0.5) -> Path:
    """Write a copy of ``path`` cut to ``keep`` of its bytes, next to it."""
    data = path.read_bytes()
    cut = path.with_name(f"truncated_{path.name}")
    cut.write_bytes(data[: int(len(data) * keep)])
    return cut

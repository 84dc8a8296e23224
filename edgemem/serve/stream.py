"""The streaming loop behind ``edgemem stream``: decode, resample, preprocess, step, report.

Each source is decoded in a background thread (``FrameReader``) at the model's input rate
(``target_fps / sampling_rate``); every T frames make a clip, preprocessed as the model card says
and stepped through the session. One ``ClipRecord`` per clip goes to the callbacks (JSONL file,
live view). Sources run one after another with a reset between them, or, with ``batch``, as
independent streams in the slots of one batched session (a slot whose source has ended is fed
zeros with its reset flag set, and its outputs are ignored).

Nothing wrong is passed on: every step's logits and state are checked for NaN/inf (``NonFiniteError``
naming the clip and source). A source that cannot be opened or stops on a decode error (truncated,
corrupt, a dropped connection) is a ``SourceError`` in ``StreamStats.errors`` (with the clip index
where it stopped) and the other sources go on; the caller turns that into ``EXIT_INCOMPLETE``, or
into an error when no clip was classified at all. A source that ends cleanly mid-clip has a last
clip of its last T sampled frames, overlapping the clip before (a source shorter than one clip: its
frames, the last one repeated; ``SourceStream.next_clip``)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from edgemem.atomic import AtomicFile
from edgemem.data.reader import Frame, FrameReader, StreamError
from edgemem.data.transforms import ClipTransform, stack_clips
from edgemem.errors import InputError, NonFiniteError
from edgemem.runtimes.base import Session

# Exit status of ``edgemem stream`` when clips were classified but some source could not be opened or
# stopped early (0: every source streamed to its end; 2: an error, nothing classified or written).
EXIT_INCOMPLETE = 3


@dataclass(frozen=True)
class ClipRecord:
    clip_index: int  # index of the clip within its source
    source: str
    t_start: float  # seconds: first frame of the clip
    t_end: float  # seconds: end of the last frame of the clip
    topk: list[dict[str, Any]]  # [{"label", "index", "score"}], scores (the card's head_act), best first
    latency_ms: float  # session.step time for the batch that held this clip
    slot: int = 0
    dropped_frames: int = 0  # frames skipped so far in --realtime mode

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SourceError:
    source: str
    clip_index: int  # the clip that was not completed (= clips classified from this source)
    message: str

    def __str__(self) -> str:
        return f"{self.message} (stopped at clip {self.clip_index})"


@dataclass
class StreamStats:
    clips: int = 0
    steps: int = 0
    latency_ms: list[float] = field(default_factory=list)  # one per step
    dropped: int = 0
    media_s: float = 0.0  # seconds of video classified
    compute_s: float = 0.0  # time spent in session.step
    wall_s: float = 0.0
    errors: list[SourceError] = field(default_factory=list)  # sources that stopped early or yielded no clip

    @property
    def real_time_factor(self) -> float:
        """Compute time per second of video (below 1: faster than real time)."""
        return self.compute_s / self.media_s if self.media_s else float("nan")


def topk(logits: np.ndarray, k: int, class_names: Sequence[str] | None, act: str = "softmax") -> list[dict[str, Any]]:
    """Scores of the k best classes of one logits row: ``act`` (the card's ``head_act``: softmax,
    sigmoid for multi-label heads, or none) of the logits."""
    z = logits.astype(np.float64)
    if act == "softmax":
        p = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
    else:
        p = 1.0 / (1.0 + np.exp(-z)) if act == "sigmoid" else z
    best = np.argsort(-p, kind="stable")[:k]
    names = list(class_names) if class_names else None
    return [
        {"label": names[i] if names and i < len(names) else str(int(i)), "index": int(i), "score": float(p[i])}
        for i in best
    ]


class JsonlWriter:
    """One JSON object per line, flushed per record into a temp file beside ``path``; ``close(keep=True)``
    moves it into place (when it holds a record), ``close(keep=False)`` removes it: a failed stream
    leaves no empty or partial file. NaN is refused (it is not JSON)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.records = 0
        self._file = AtomicFile(self.path)
        self._f: IO[str] = open(self._file.tmp, "w", encoding="utf-8")

    def __call__(self, record: ClipRecord, stats: StreamStats | None = None) -> None:
        try:
            line = json.dumps(record.to_json(), allow_nan=False)
        except ValueError:
            raise NonFiniteError(f"clip {record.clip_index} of {record.source}: NaN in its record") from None
        self._f.write(line + "\n")
        self._f.flush()
        self.records += 1

    def close(self, keep: bool = True) -> None:
        try:
            self._f.close()
            if keep and self.records:
                self._file.commit()
        finally:
            self._file.discard()


class SourceStream:
    """One source's reader, its pending frames (for --out) and clip counter."""

    def __init__(
        self, source: str, slot: int, fps: float, frames: int, realtime: bool, keep_all: bool, timeout_s: float
    ) -> None:
        self.name, self.slot, self.frames, self.fps = source, slot, frames, fps
        self.clip_index = 0
        self.pending: list[Frame] = []  # every frame since the last clip (for the annotated copy)
        self._previous: list[Frame] = []  # the last whole clip's sampled frames
        self.done = False
        self.error: SourceError | None = None
        self.reader: FrameReader | None = None
        try:
            self.reader = FrameReader(source, fps=fps, realtime=realtime, keep_all=keep_all, timeout_s=timeout_s)
        except StreamError as e:
            self._fail(str(e))
            return
        self._it: Iterator[Frame] = iter(self.reader)

    @property
    def dropped(self) -> int:
        return self.reader.dropped if self.reader is not None else 0

    def _fail(self, message: str) -> None:
        self.done = True
        self.error = SourceError(self.name, self.clip_index, message)

    def next_clip(self) -> list[Frame] | None:
        """The next T sampled frames, or None at the end of the source. A source that ends cleanly
        mid-clip gets a last clip of its last T sampled frames, over part of the clip before, as the
        training datasets form it (one shorter than a clip: its frames, the last one repeated); a
        decode error is kept in ``error`` and ends the source without its partial clip."""
        sampled: list[Frame] = []
        try:
            for f in self._it:
                self.pending.append(f)
                if f.sampled:
                    sampled.append(f)
                    if len(sampled) == self.frames:
                        self._previous = sampled
                        return sampled
        except StreamError as e:
            self._fail(str(e))
            return None
        if sampled:  # the source is exhausted: the next call ends it
            whole = (self._previous + sampled)[-self.frames :]
            return whole + [whole[-1]] * (self.frames - len(whole))
        self.done = True
        return None

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()


ClipCallback = Callable[[ClipRecord, StreamStats], None]
FrameSink = Callable[[SourceStream, list[Frame], ClipRecord | None], None]


def run_stream(
    session: Session,
    sources: Sequence[str],
    *,
    batch: bool = False,
    realtime: bool = False,
    k: int = 5,
    on_clip: Sequence[ClipCallback] = (),
    frame_sink: FrameSink | None = None,
    resume: dict[str, np.ndarray] | None = None,
    timeout_s: float = 10.0,
) -> StreamStats:
    """Stream ``sources`` through ``session``; return the totals. Errors propagate after the
    records of every clip already stepped have reached ``on_clip``. ``resume`` (a state from
    ``get_state``/``load_state``) continues an earlier stream instead of resetting at the first
    source. ``timeout_s`` bounds the wait for a network source."""
    card = session.model_card
    transform = ClipTransform(card.clip)
    fps = card.clip.sampled_fps
    clip_s = transform.frames / fps
    stats = StreamStats()
    wall0 = time.perf_counter()
    groups = [list(sources)] if batch else [[s] for s in sources]
    try:
        for i, group in enumerate(groups):
            if i == 0 and resume is not None:
                session.set_state(resume)
            else:
                session.reset()
            _run_group(session, group, transform, fps, clip_s, realtime, k, on_clip, frame_sink, stats, timeout_s)
    finally:
        stats.wall_s = time.perf_counter() - wall0
    return stats


def _run_group(
    session: Session,
    group: list[str],
    transform: ClipTransform,
    fps: float,
    clip_s: float,
    realtime: bool,
    k: int,
    on_clip: Sequence[ClipCallback],
    frame_sink: FrameSink | None,
    stats: StreamStats,
    timeout_s: float,
) -> None:
    if len(group) != session.batch:
        raise InputError(f"{len(group)} sources need a session of batch {len(group)}, got {session.batch}")
    dropped0 = stats.dropped
    class_names = session.model_card.class_names
    act = session.model_card.head_act
    streams: list[SourceStream] = []
    try:
        for slot, src in enumerate(group):
            streams.append(SourceStream(src, slot, fps, transform.frames, realtime, frame_sink is not None, timeout_s))
        zeros = np.zeros((3, transform.frames, transform.size, transform.size), np.float32)
        while True:
            clips = [None if s.done else s.next_clip() for s in streams]
            if all(c is None for c in clips):
                break
            x = stack_clips([transform([f.image for f in c]) if c else zeros for c in clips])
            reset = np.array([c is None for c in clips], dtype=bool)
            t0 = time.perf_counter()
            logits = session.step(x, reset)
            latency = (time.perf_counter() - t0) * 1000.0
            stats.steps += 1
            stats.compute_s += latency / 1000.0
            stats.latency_ms.append(latency)
            stats.dropped = dropped0 + sum(src.dropped for src in streams)
            if bad := session.nonfinite_outputs(logits):
                raise NonFiniteError(_nonfinite_message(bad, streams, session.runtime))
            for s, c in zip(streams, clips, strict=True):
                if c is None:
                    continue
                rec = ClipRecord(
                    s.clip_index,
                    s.name,
                    round(c[0].time, 6),
                    round(c[-1].time + 1.0 / fps, 6),
                    topk(logits[s.slot], k, class_names, act),
                    round(latency, 3),
                    s.slot,
                    s.dropped,
                )
                s.clip_index += 1
                stats.clips += 1
                stats.media_s += clip_s
                for cb in on_clip:
                    cb(rec, stats)
                if frame_sink is not None:
                    frame_sink(s, s.pending, rec)
                    s.pending = []
    finally:
        for s in streams:
            if frame_sink is not None and s.pending:
                frame_sink(s, s.pending, None)
            s.close()
            if s.error is not None:
                stats.errors.append(s.error)


def _nonfinite_message(bad: dict[int, list[str]], streams: list[SourceStream], runtime: str) -> str:
    where = []
    for slot, names in sorted(bad.items()):
        s = streams[slot]
        clip = f"clip {s.clip_index} of {s.name}" if not s.done else f"slot {slot} after the end of {s.name}"
        where.append(f"{clip}: NaN or infinite values in {', '.join(names)}")
    return f"{'; '.join(where)} (runtime {runtime}); nothing passed on"

"""``edgemem stream SOURCE... --triton HOST:PORT --model NAME``: every source a concurrent remote stream.

Each source runs in its own thread with its own ``RemoteSession`` (one Triton sequence): decoded and
preprocessed as in ``edgemem.serve.stream`` (same reader, transform and ``ClipRecord``), START on
its first clip, END on its last (the next clip is read before a clip is sent, so the last one is
known; with ``--realtime`` a stream does not wait for that and its memory is freed by the server's
idle timeout instead). A stream that fails is reported with the clip it reached; the others go on.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edgemem.data.transforms import ClipTransform, stack_clips
from edgemem.errors import EdgememError, InputError
from edgemem.serve.client import RemoteSession, parse_url
from edgemem.serve.stream import ClipCallback, ClipRecord, SourceStream, StreamStats, topk


@dataclass
class StreamOutcome:
    source: str
    clips: int = 0
    error: str | None = None


def _one_source(
    url: str, model: str, source: str, slot: int, *, k: int, realtime: bool, timeout_s: float,
    request_timeout_s: float, emit: ClipCallback, stats: StreamStats, lock: threading.Lock, out: StreamOutcome,
) -> None:  # fmt: skip
    stream: SourceStream | None = None
    try:
        with RemoteSession(url, model, timeout_s=request_timeout_s) as session:
            card = session.model_card
            transform = ClipTransform(card.clip)
            fps = card.clip.sampled_fps
            clip_s = transform.frames / fps
            stream = SourceStream(source, slot, fps, transform.frames, realtime, False, timeout_s)
            clip = stream.next_clip()
            first = True
            while clip is not None:
                nxt = None if realtime else stream.next_clip()
                if not realtime and nxt is None:
                    session.mark_last()
                x = stack_clips([transform([f.image for f in clip])])
                t0 = time.perf_counter()
                logits = session.step(x, np.array([first]))
                latency = (time.perf_counter() - t0) * 1000.0
                rec = ClipRecord(
                    stream.clip_index, source, round(clip[0].time, 6), round(clip[-1].time + 1.0 / fps, 6),
                    topk(logits[0], k, card.class_names), round(latency, 3), slot, stream.dropped,
                )  # fmt: skip
                stream.clip_index += 1
                out.clips += 1
                with lock:
                    stats.steps += 1
                    stats.clips += 1
                    stats.latency_ms.append(latency)
                    stats.compute_s += latency / 1000.0
                    stats.media_s += clip_s
                    emit(rec, stats)
                first = False
                clip = stream.next_clip() if realtime else nxt
    except EdgememError as e:
        out.error = str(e)
    except Exception as e:  # a decoder or network failure of this one stream
        out.error = f"{type(e).__name__}: {e}"
    finally:
        if stream is not None and stream.reader is not None:
            stream.reader.close()


def run_remote_streams(
    url: str,
    model: str,
    sources: Sequence[str],
    *,
    k: int = 5,
    realtime: bool = False,
    on_clip: Sequence[ClipCallback] = (),
    timeout_s: float = 10.0,
    request_timeout_s: float = 30.0,
) -> tuple[StreamStats, list[StreamOutcome]]:
    """Stream every source concurrently through model ``model`` on the Triton server at ``url``."""
    parse_url(url)
    if not sources:
        raise InputError("no source given")
    stats, lock = StreamStats(), threading.Lock()

    def emit(rec: ClipRecord, st: StreamStats) -> None:
        for cb in on_clip:
            cb(rec, st)

    outcomes = [StreamOutcome(s) for s in sources]
    threads = [
        threading.Thread(
            target=_one_source,
            name=f"edgemem-stream-{i}",
            daemon=True,
            args=(url, model, src, i),
            kwargs=dict(
                k=k,
                realtime=realtime,
                timeout_s=timeout_s,
                request_timeout_s=request_timeout_s,
                emit=emit,
                stats=stats,
                lock=lock,
                out=outcomes[i],
            ),
        )  # fmt: skip
        for i, src in enumerate(sources)
    ]
    wall0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stats.wall_s = time.perf_counter() - wall0
    return stats, outcomes


_NOT_REMOTE = {
    "checkpoint": "--checkpoint", "precision": "--precision", "threads": "--threads", "out": "--out",
    "cache_dir": "--cache-dir", "resume": "--resume", "save_state": "--save-state", "random_weights": "--random-weights",
}  # fmt: skip


def stream_command(args: argparse.Namespace) -> int:
    """The ``edgemem stream --triton`` command: records as JSONL, a summary, exit 2 when a stream failed."""
    import contextlib

    from edgemem.serve.live import LiveView
    from edgemem.serve.stream import JsonlWriter

    for attr, flag in _NOT_REMOTE.items():
        if getattr(args, attr, None):
            raise InputError(f"{flag} does not apply with --triton (the server holds the model and its memory)")
    if args.runtime != "ort-cpu":
        raise InputError("--runtime does not apply with --triton (the server's backend runs the model)")
    if args.topk < 1:
        raise InputError("--topk must be >= 1")
    jsonl = JsonlWriter(args.jsonl) if args.jsonl else None
    view = LiveView(f"triton {args.triton}")
    callbacks = [c for c in (jsonl, None if args.quiet else view) if c is not None]
    try:
        with contextlib.nullcontext() if args.quiet else view:
            stats, outcomes = run_remote_streams(
                args.triton, args.model, args.sources, k=args.topk, realtime=args.realtime, on_clip=callbacks,
                timeout_s=args.timeout, request_timeout_s=args.request_timeout or 30.0,  # None: not given
            )  # fmt: skip
    finally:
        if jsonl is not None:
            jsonl.close()
    view.summary(stats)
    failed = [o for o in outcomes if o.error]
    for o in failed:
        print(f"edgemem stream: {o.source}: failed after {o.clips} clips: {o.error}", file=sys.stderr)
    if failed:
        raise EdgememError(f"{len(failed)} of {len(outcomes)} streams failed (see above)")
    return 0

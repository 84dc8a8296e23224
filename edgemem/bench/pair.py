"""Paired A/B step timing of two graphs in one process: the ratio a noisy shared machine can give.

``python -m edgemem.bench.pair A.onnx B.onnx --runtime openvino --precision f32 --steps 20``
opens both graphs on the same runtime, then alternates one step of A and one step of B (order
swapped every pair), so both see the same neighbours. It prints each graph's median wall and CPU
time per step and the median of the per-pair ratios A/B (the stateful overhead when A is a memory
model and B its memory-less backbone). Cell-per-process runs (``edgemem bench``) measure memory
too; this measures only time, and is the right tool for a few-percent difference.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgemem.bench.cell import check_step
from edgemem.errors import EdgememError
from edgemem.runtimes.precisions import session_options
from edgemem.runtimes.registry import open_session


def _timed(session: Any, frames: np.ndarray) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    logits = session.step(frames)
    times = (time.perf_counter() - wall) * 1e3, (time.process_time() - cpu) * 1e3
    check_step(session, logits, f"step of {session!r}")  # after the clock stops
    return times


def pair(
    a: Path, b: Path, runtime: str, precision: str, steps: int, warmup: int, threads: int | None
) -> dict[str, Any]:
    """Alternate steps of ``a`` and ``b``; medians per graph and of the per-pair ratios."""
    options = session_options(runtime, precision)
    sessions = [open_session(g, runtime, threads=threads, **options) for g in (a, b)]
    rng = np.random.default_rng(0)
    frames = [rng.standard_normal((s.batch, *s.input_shape), dtype=np.float32) for s in sessions]
    for _ in range(warmup):
        for s, f in zip(sessions, frames, strict=True):
            s.step(f)
    times: list[list[tuple[float, float]]] = [[], []]
    for i in range(steps):
        order = (0, 1) if i % 2 == 0 else (1, 0)
        for j in order:
            times[j].append(_timed(sessions[j], frames[j]))
    for s in sessions:
        s.close()
    wall = [[t[0] for t in ts] for ts in times]
    cpu = [[t[1] for t in ts] for ts in times]
    return {
        "runtime": runtime,
        "precision": precision,
        "steps": steps,
        "graphs": [str(a), str(b)],
        "wall_ms_p50": [statistics.median(w) for w in wall],
        "cpu_ms_p50": [statistics.median(c) for c in cpu],
        "wall_ratio_p50": statistics.median(x / y for x, y in zip(*wall, strict=True)),
        "cpu_ratio_p50": statistics.median(x / y for x, y in zip(*cpu, strict=True)),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m edgemem.bench.pair", description=__doc__)
    p.add_argument("a", type=Path, help="graph A (e.g. the memory model)")
    p.add_argument("b", type=Path, help="graph B (e.g. its memory-less backbone)")
    p.add_argument("--runtime", default="ort-cpu")
    p.add_argument("--precision", default="f32")
    p.add_argument("--steps", type=int, default=20, help="timed steps per graph")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    try:
        if args.steps < 1:
            raise EdgememError(f"--steps must be >= 1, got {args.steps}")
        result = pair(args.a, args.b, args.runtime, args.precision, args.steps, args.warmup, args.threads)
    except EdgememError as e:
        print(f"python -m edgemem.bench.pair: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""One benchmark cell, run in its own fresh process so that its peak memory is its own.

``python -m edgemem.bench.cell --spec SPEC.json --out RESULT.json``: SPEC holds the cell (model,
runtime, precision, frame-scale, batch), the graph to open, the model facts (``harness.card_facts``, from the graph's card) and
the measurement settings. The process opens one runtime session and measures:

- ``first``: the first step of the fresh session (empty memory, includes one-time initialisation);
- ``warmup`` steps, discarded; ``clips`` steady steps (memory full after the first few), in wall
  time and in CPU time of this process (all threads: ``cpu_ms``), which a busy shared machine
  disturbs far less than wall time;
- ``reset``: steps with the reset flag set (memory emptied inside the graph), interleaved with
  steady steps; ``handoff``: one ``get_state`` + ``set_state`` round trip (moving the memory
  between sessions or processes); both only for graphs with state;
- peak RSS of this process (``VmHWM``, see ``peak_rss_mb``), its RSS before the session opened, and peak device
  memory on GPU runtimes; accuracy on a dataset when one is given.

It always writes a result: on an error, a ``failed`` one with the error message.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

import edgemem.export  # noqa: F401  (registers the PyTorch runtimes "torch" and "torch-cuda")
from edgemem.atomic import write_json
from edgemem.bench.schema import Cell, empty_result, machine_info
from edgemem.bench.stats import cpu_summary, derive_rates, latency_summary
from edgemem.errors import NonFiniteError, UnsupportedError
from edgemem.runtimes.precisions import session_options
from edgemem.runtimes.registry import runs_on_gpu, takes_model

RESET_STEPS = 3


def _status_mb(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def rss_mb() -> float | None:
    """Current resident set size of this process in MiB."""
    return _status_mb("VmRSS")


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB.

    Linux keeps ``ru_maxrss`` across ``execve``, so a child of a big parent would report the
    parent's peak; ``VmHWM`` belongs to this process image alone. ``ru_maxrss`` where it is missing.
    """
    hwm = _status_mb("VmHWM")
    return hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _gpu_used_mb() -> float | None:
    """GPU memory nvidia-smi attributes to this process (memory pools keep their peak)."""
    from edgemem.bench.schema import nvidia_smi_rows

    for row in nvidia_smi_rows("compute-apps=pid,used_memory"):
        if len(row) == 2 and row[0] == str(os.getpid()):
            return float(row[1])
    return None


def check_step(session: Any, logits: np.ndarray, where: str) -> None:
    """``NonFiniteError`` when a step's logits or state hold NaN/inf (checked outside the timed region)."""
    if bad := session.nonfinite_outputs(logits):
        names = sorted({n for names in bad.values() for n in names})
        raise NonFiniteError(f"{where}: NaN or infinite values in {', '.join(names)} (runtime {session.runtime})")


def _timed(session: Any, frames: np.ndarray, reset: np.ndarray, where: str, cpu: list[float] | None = None) -> float:
    """Wall-clock ms of one ``session.step``; its process CPU ms (all threads) appended to ``cpu``.
    The outputs are checked for NaN/inf after the clock stops."""
    c0, t0 = time.process_time(), time.perf_counter()
    logits = session.step(frames, reset)
    wall = (time.perf_counter() - t0) * 1e3
    if cpu is not None:
        cpu.append((time.process_time() - c0) * 1e3)
    check_step(session, logits, where)
    return wall


def measure_session(session: Any, clips: int, warmup: int, seed: int = 0) -> dict[str, Any]:
    """Latencies (ms) of a streaming session: first, steady steps, reset steps, state hand-off."""
    batch = session.batch
    rng = np.random.default_rng(seed)
    inputs = [rng.random((batch, *session.input_shape), dtype=np.float32) for _ in range(2)]
    no_reset = np.zeros(batch, dtype=bool)
    all_reset = np.ones(batch, dtype=bool)
    first = _timed(session, inputs[0], all_reset, "first step")
    for i in range(warmup):
        check_step(session, session.step(inputs[i % 2], no_reset), f"warm-up step {i}")
    cpu: list[float] = []
    steady = [_timed(session, inputs[i % 2], no_reset, f"timed step {i}", cpu=cpu) for i in range(clips)]
    resets, handoffs = [], []
    if session.state_spec:  # a memory-less graph has no memory to empty or hand off
        for i in range(min(RESET_STEPS, clips)):
            resets.append(_timed(session, inputs[i % 2], all_reset, f"reset step {i}"))
            steady.append(_timed(session, inputs[(i + 1) % 2], no_reset, f"timed step {clips + i}", cpu=cpu))
            t0 = time.perf_counter()
            session.set_state(session.get_state())
            handoffs.append((time.perf_counter() - t0) * 1e3)
    lat = latency_summary(steady)
    lat["first"] = round(first, 3)
    lat["reset"] = round(float(np.median(resets)), 3) if resets else None
    handoff = round(float(np.median(handoffs)), 3) if handoffs else None
    return {"latency_ms": lat, "cpu_ms": cpu_summary(cpu), "handoff_ms": handoff}


def _open(spec: dict[str, Any]) -> Any:
    """The cell's session: the exported graph, or for the torch runtimes the PyTorch model built here."""
    from edgemem.runtimes import open_session

    cell = Cell(**spec["cell"])
    options = session_options(cell.runtime, cell.precision)
    target: Any = spec.get("graph")
    if takes_model(cell.runtime):
        import torch

        from edgemem.models.resolve import resolve_model

        torch.manual_seed(0)
        overrides: dict[str, Any] = {"frame_scale": cell.frame_scale} if cell.frame_scale != 1 else {}
        target = resolve_model(cell.model, spec.get("checkpoint"), **overrides).eval()
    if spec.get("threads"):
        options["threads"] = spec["threads"]
    return open_session(target, cell.runtime, batch=cell.batch, **options)


def run_cell(spec: dict[str, Any]) -> dict[str, Any]:
    """Measure the cell described by ``spec``; returns its result (status ok)."""
    cell = Cell(**spec["cell"])
    info = spec["info"]
    result = empty_result(cell, spec.get("machine") or machine_info(), status="ok")
    support = info["temporal_support"]
    base_frames = info["frames"] // max(1, info.get("frame_scale", 1))
    # A shipped frame-scaled baseline (e.g. ``mvit_tiny_fs4_cuematch``) has its frame scale built in.
    result["frame_scale"] = int(info.get("frame_scale") or cell.frame_scale)
    result.update(
        temporal_support={
            "clips": support["clips"],
            "frames": None if support["clips"] is None else support["clips"] * base_frames,
            "seconds": support["seconds"],
        },
        clip_seconds=info["clip_seconds"],
        gflops_step=info["gflops_step"],
        gflops_first_step=info["gflops_first_step"],
        state_bytes=info["state_bytes"],
        params=info["params"],
        backbone=info["backbone"],
        input={"frames": info["frames"], "crop_size": info["crop_size"], "sampling_rate": info["sampling_rate"]},
        settings={k: spec[k] for k in ("clips", "warmup", "graph", "threads") if k in spec},
    )
    load_start = os.getloadavg()[0]
    base = rss_mb()
    result["base_rss_mb"] = None if base is None else round(base, 1)
    t0 = time.perf_counter()
    session = _open(spec)
    result["session_open_s"] = round(time.perf_counter() - t0, 3)
    try:
        result.update(measure_session(session, spec["clips"], spec["warmup"]))
        if runs_on_gpu(cell.runtime):
            result["peak_device_mb"] = _gpu_used_mb()
        result["peak_rss_mb"] = round(peak_rss_mb(), 1)  # before the accuracy pass loads decoders
        if spec.get("data"):
            from edgemem.bench.accuracy import session_accuracy

            session.reset()
            result["accuracy"] = session_accuracy(session, spec["data"], limit=spec.get("data_limit"))
    finally:
        session.close()
    derive_rates(result)
    # Runnable processes on the machine (1-minute load average) while the cell ran: on a shared
    # machine, the context its latencies need.
    result["load_avg"] = [round(load_start, 2), round(os.getloadavg()[0], 2)]
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgemem.bench.cell", description=__doc__)
    parser.add_argument("--spec", required=True, help="cell spec JSON file")
    parser.add_argument("--out", required=True, help="result JSON file to write")
    args = parser.parse_args(argv)
    spec = json.loads(Path(args.spec).read_text())
    try:
        result = run_cell(spec)
    except UnsupportedError as e:
        result = empty_result(Cell(**spec["cell"]), spec.get("machine") or machine_info(), "skipped", str(e))
    except Exception as e:  # noqa: BLE001 - a failed cell is a result, the harness goes on
        traceback.print_exc(file=sys.stderr)
        result = empty_result(Cell(**spec["cell"]), spec.get("machine") or machine_info(), "failed", _error(e))
        result["peak_rss_mb"] = round(peak_rss_mb(), 1)
    write_json(Path(args.out), result)
    return 0


def _error(e: BaseException) -> str:
    msg = " ".join(str(e).split())
    if len(msg) > 500:
        msg = msg[:500] + " ..."
    return f"{type(e).__name__}: {msg}" if msg else type(e).__name__


if __name__ == "__main__":
    sys.exit(main())

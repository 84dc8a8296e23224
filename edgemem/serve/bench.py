"""``edgemem serve bench``: many concurrent streams on one Triton model, per concurrency level.

For S streams, S threads each run one sequence (START on the first clip, END on the last) of
``warmup + clips`` steps on random clips, closed loop (the next request after the answer). After
the warm-up all streams wait at a barrier; then each step's latency is timed. Per level: latency
p50/p90/p99, aggregate clips/s, how many streams kept up with real time (their own clips/s at least
one clip per ``clip_seconds``), and batch formation from Triton's statistics (inferences per
execution, and executions per batch size). One bench result per level (runtime
``triton-<backend>``, batch = streams) so ``edgemem report`` lists it beside in-process rows.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import numpy as np

from edgemem.bench.schema import Cell, empty_result, machine_info
from edgemem.bench.stats import latency_summary
from edgemem.contract import ModelCard
from edgemem.errors import EdgememError, InputError
from edgemem.serve.client import RemoteError, RemoteSession, connect

BARRIER_TIMEOUT_S = 600.0
STATS_READS = 20


def _statistics(client: Any, model: str, timeout_s: float) -> dict[str, Any]:
    """Triton's counters of ``model``, read until two reads agree (they are updated after the responses)."""
    last = None
    for _ in range(STATS_READS):
        try:
            stats = client.get_inference_statistics(model, as_json=True, client_timeout=timeout_s)
        except Exception as e:  # InferenceServerException
            raise RemoteError(f"cannot read Triton's statistics of '{model}': {e}") from None
        if stats == last:
            break
        last = stats
        time.sleep(0.05)
    s = last["model_stats"][0]
    batches = {int(b["batch_size"]): int(b["compute_infer"]["count"]) for b in s.get("batch_stats", [])}
    return {"inferences": int(s.get("inference_count", 0)), "executions": int(s.get("execution_count", 0)),
            "batches": batches}  # fmt: skip


def _stream(
    url: str, model: str, clips: int, warmup: int, timeout_s: float, seed: int,
    ready: threading.Barrier, go: threading.Barrier, out: dict[str, Any],
) -> None:  # fmt: skip
    try:
        with RemoteSession(url, model, timeout_s=timeout_s) as s:
            x = np.random.default_rng(seed).random((1, *s.input_shape), dtype=np.float32)
            lat: list[float] = []
            total = warmup + clips
            for i in range(total):
                if i == warmup:
                    ready.wait(BARRIER_TIMEOUT_S)
                    go.wait(BARRIER_TIMEOUT_S)
                    out["t0"] = time.perf_counter()
                if i == total - 1:
                    s.mark_last()
                t = time.perf_counter()
                s.step(x, np.array([i == 0]))
                if i >= warmup:
                    lat.append((time.perf_counter() - t) * 1e3)
            out["t1"], out["latency_ms"] = time.perf_counter(), lat
    except threading.BrokenBarrierError:
        out.setdefault("error", "another stream failed")
    except EdgememError as e:
        out["error"] = str(e)
        ready.abort()
        go.abort()


def bench_level(url: str, model: str, streams: int, clips: int, warmup: int, timeout_s: float) -> dict[str, Any]:
    """Run ``streams`` concurrent streams once; return the measurements of this level."""
    load0 = _loadavg()
    client = connect(url)
    try:
        ready, go = threading.Barrier(streams + 1), threading.Barrier(streams + 1)
        outs: list[dict[str, Any]] = [{} for _ in range(streams)]
        threads = [
            threading.Thread(
                target=_stream, args=(url, model, clips, warmup, timeout_s, i, ready, go, outs[i]), daemon=True
            )  # fmt: skip
            for i in range(streams)
        ]
        for t in threads:
            t.start()
        try:
            ready.wait(BARRIER_TIMEOUT_S)
            before = _statistics(client, model, timeout_s)
            go.wait(BARRIER_TIMEOUT_S)
        except threading.BrokenBarrierError:
            pass
        for t in threads:
            t.join()
        errors = [o["error"] for o in outs if "error" in o]
        if errors:
            raise RemoteError(f"{len(errors)} of {streams} streams failed: {errors[0]}")
        after = _statistics(client, model, timeout_s)
    finally:
        client.close()
    wall = max(o["t1"] for o in outs) - min(o["t0"] for o in outs)
    executions = after["executions"] - before["executions"]
    hist = {b: n - before["batches"].get(b, 0) for b, n in after["batches"].items()}
    return {
        "latency_ms": [v for o in outs for v in o["latency_ms"]],
        "stream_clips_s": [clips / (o["t1"] - o["t0"]) for o in outs],
        "wall_s": wall,
        "clips_s": streams * clips / wall,
        "inferences": after["inferences"] - before["inferences"],
        "executions": executions,
        "batch_histogram": {str(b): n for b, n in sorted(hist.items()) if n},
        "load_avg": [v for v in (load0, _loadavg()) if v is not None],
    }


def level_result(url: str, model: str, streams: int, clips: int, level: dict[str, Any], card: ModelCard,
                 state: tuple[Any, ...], backend: str, machine: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    """One bench-schema result for a concurrency level."""
    name = card.name or model
    cell = Cell(name, f"triton-{backend}", "f32", card.frame_scale, streams)
    r = empty_result(cell, machine, status="ok")
    clip_s = card.clip.seconds
    r["clip_seconds"] = round(clip_s, 6)
    r["latency_ms"] = latency_summary(level["latency_ms"])
    r["throughput_clips_s"] = round(level["clips_s"], 3)
    r["real_time_factor"] = round(level["clips_s"] * clip_s, 3)
    r["load_avg"] = level["load_avg"]  # 1-minute load at the start and at the end of the level
    r["state_bytes"] = sum(s.nbytes_per_item for s in state)  # one stream's memory, held by the server
    r["backbone"] = card.backbone
    if card.cost is not None:  # measured at export (a contract-1 graph has none)
        r["gflops_step"], r["params"] = card.cost.gflops_step, card.cost.params
    mean_batch = level["inferences"] / level["executions"] if level["executions"] else None
    r["serving"] = {
        "server": url, "triton_model": model, "streams": streams, "clips_per_stream": clips,
        "wall_s": round(level["wall_s"], 3),
        "realtime_streams": sum(c * clip_s >= 1.0 for c in level["stream_clips_s"]),
        "inferences": level["inferences"], "executions": level["executions"],
        "mean_batch": round(mean_batch, 3) if mean_batch else None, "batch_histogram": level["batch_histogram"],
    }  # fmt: skip
    return r


def _loadavg() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def serve_bench(url: str, model: str, streams: list[int], clips: int, warmup: int = 2,
                timeout_s: float = 60.0, progress: Any = None) -> list[dict[str, Any]]:  # fmt: skip
    """Every concurrency level in ``streams``; returns their bench results."""
    if not streams or any(s < 1 for s in streams) or clips < 1 or warmup < 1:
        raise InputError("--streams needs positive counts, --clips >= 1 and --warmup >= 1")
    client = connect(url)
    try:
        with RemoteSession(url, model, timeout_s=timeout_s) as probe:
            card, stateful, state = probe.model_card, probe.stateful, probe.remote.state
        try:
            backend = client.get_model_config(model, as_json=True, client_timeout=timeout_s)["config"]["backend"]
        except Exception as e:  # InferenceServerException
            raise RemoteError(f"cannot read the config of '{model}': {e}") from None
    finally:
        client.close()
    machine = machine_info()
    results = []
    for s in streams:
        t = time.perf_counter()
        level = bench_level(url, model, s, clips, warmup, timeout_s)
        results.append(level_result(url, model, s, clips, level, card, state, backend, machine))
        results[-1]["serving"]["stateful"] = stateful
        if progress is not None:
            progress(results[-1], time.perf_counter() - t)
    return results


def in_process_clips_s(graph: str, batch: int, steps: int, threads: int | None, warmup: int = 2) -> float:
    """Clips/s of one in-process batched ONNX Runtime session on random clips (the reference of a run)."""
    from edgemem.runtimes.ort import OrtSession

    if batch < 1 or steps < 1:
        raise InputError("--in-process-batch and --clips must be >= 1")
    with OrtSession(graph, batch=batch, threads=threads) as s:
        x = np.random.default_rng(0).random((batch, *s.input_shape), dtype=np.float32)
        for _ in range(warmup):
            s.step(x)
        t = time.perf_counter()
        for _ in range(steps):
            s.step(x)
        return batch * steps / (time.perf_counter() - t)

"""Latency statistics of one run, and the merge of interleaved repeats of one cell."""

from __future__ import annotations

import statistics
from typing import Any

import numpy as np

from edgemem.bench.schema import LATENCY_KEYS


def latency_summary(steps_ms: list[float]) -> dict[str, Any]:
    """p50/p90/p99, mean and min (ms) of steady step latencies; first and reset left to the caller."""
    if not steps_ms:
        raise ValueError("no steady steps were timed")
    a = np.asarray(steps_ms, dtype=np.float64)
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    return {
        "first": None,
        "reset": None,
        "p50": round(float(p50), 3),
        "p90": round(float(p90), 3),
        "p99": round(float(p99), 3),
        "mean": round(float(a.mean()), 3),
        "min": round(float(a.min()), 3),
        "steps": len(steps_ms),
    }


def cpu_summary(cpu_ms: list[float]) -> dict[str, Any]:
    """p50, mean and min of per-step process CPU time (ms, all threads)."""
    a = np.asarray(cpu_ms, dtype=np.float64)
    return {"p50": round(float(np.median(a)), 3), "mean": round(float(a.mean()), 3), "min": round(float(a.min()), 3)}


def merge_repeats(results: list[dict[str, Any]]) -> dict[str, Any]:
    """One result from the interleaved repeats of a cell: the median of each latency statistic
    (min: the minimum), the largest peak memory; the repeats' p50s are kept under ``repeats``.

    A cell is ok when any repeat was ok (failed repeats are counted); otherwise the first repeat
    stands for it.
    """
    ok = [r for r in results if r["status"] == "ok"]
    if not ok:
        return results[0]
    merged = dict(ok[0])
    lat: dict[str, Any] = {}
    for k in LATENCY_KEYS:
        vals = [r["latency_ms"][k] for r in ok if r["latency_ms"].get(k) is not None]
        if not vals:
            lat[k] = None
        elif k == "steps":
            lat[k] = int(sum(vals))
        elif k == "min":
            lat[k] = min(vals)
        else:
            lat[k] = round(statistics.median(vals), 3)
    merged["latency_ms"] = lat
    cpus = [r["cpu_ms"] for r in ok if r.get("cpu_ms")]
    if cpus:
        merged["cpu_ms"] = {
            "p50": round(statistics.median(c["p50"] for c in cpus), 3),
            "mean": round(statistics.median(c["mean"] for c in cpus), 3),
            "min": min(c["min"] for c in cpus),
        }
    for k in ("peak_rss_mb", "peak_device_mb"):
        vals = [r[k] for r in ok if r.get(k) is not None]
        merged[k] = max(vals) if vals else None
    for k in ("base_rss_mb", "handoff_ms", "session_open_s"):
        vals = [r[k] for r in ok if r.get(k) is not None]
        merged[k] = round(statistics.median(vals), 3) if vals else None
    loads = [x for r in ok for x in r.get("load_avg") or []]
    merged["load_avg"] = [min(loads), max(loads)] if loads else None
    merged["repeats"] = {
        "runs": len(results),
        "failed": len(results) - len(ok),
        "p50_ms": [r["latency_ms"]["p50"] for r in ok],
        "errors": [r["error"] for r in results if r["status"] != "ok"],
    }
    return merged


def derive_rates(result: dict[str, Any]) -> None:
    """Throughput, real-time factor and achieved GFLOP/s from the p50 step latency."""
    p50 = result["latency_ms"]["p50"]
    if not p50:
        return
    steps_s = 1e3 / p50
    result["throughput_clips_s"] = round(result["batch"] * steps_s, 3)
    if result.get("clip_seconds"):
        result["real_time_factor"] = round(result["clip_seconds"] * result["batch"] * steps_s, 3)
    if result.get("gflops_step"):
        # gflops_step counts multiply-adds (fvcore convention): 2 FLOPs each.
        result["achieved_gflop_s"] = round(2 * result["gflops_step"] * result["batch"] * steps_s, 2)

"""Merge result files from any number of machines into tables (Markdown, CSV) and ratios.

Rows are keyed by cell and device: when the same cell was measured twice on the same machine,
the newer file wins. A memory model is paired with its memory-less backbone: the ``backbone`` its
graph card declares (recorded in each result), or ``--pair M=B``; the pairs give the ratios
the papers report: compute/latency overhead of memory, and what frame-scaling the backbone to the
same temporal support costs instead.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

COLUMNS = (
    ("model", "model"),
    ("frame_scale", "fs"),
    ("runtime", "runtime"),
    ("precision", "prec"),
    ("batch", "batch"),
    ("device", "device"),
    ("status", "status"),
    ("support_s", "support s"),
    ("gflops_step", "GFLOPs/step"),
    ("first_ms", "first ms"),
    ("p50_ms", "p50 ms"),
    ("p90_ms", "p90 ms"),
    ("p99_ms", "p99 ms"),
    ("min_ms", "min ms"),
    ("cpu_ms", "CPU ms"),
    ("reset_ms", "reset ms"),
    ("handoff_ms", "hand-off ms"),
    ("throughput_clips_s", "clips/s"),
    ("real_time_factor", "RTF"),
    ("achieved_gflop_s", "GFLOP/s"),
    ("peak_rss_mb", "peak RSS MiB"),
    ("peak_device_mb", "peak dev MiB"),
    ("state_kib", "state KiB"),
    ("accuracy", "top-1"),
    ("runs", "runs"),
    ("load", "load"),
    ("error", "note"),
)


def dedupe(results: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One result per (cell, device, host): the newest by its machine date."""
    best: dict[tuple, dict[str, Any]] = {}
    for r in results:
        key = (
            r["model"],
            r["frame_scale"],
            r["runtime"],
            r["precision"],
            r["batch"],
            r.get("device"),
            r["machine"].get("hostname"),
        )
        if key not in best or str(r["machine"].get("date", "")) >= str(best[key]["machine"].get("date", "")):
            best[key] = r
    return sorted(
        best.values(),
        key=lambda r: (
            str(r.get("device")),
            r["model"],
            r["frame_scale"],
            r["runtime"],
            r["precision"],
            r["batch"],
        ),
    )


def _acc(r: dict[str, Any]) -> float | None:
    a = r.get("accuracy")
    if isinstance(a, dict):
        return a.get("top1")
    return a


def flat_row(r: dict[str, Any]) -> dict[str, Any]:
    """The table row of one result (plain values; None where not measured)."""
    lat = r["latency_ms"]
    ts = r.get("temporal_support") or {}
    state = r.get("state_bytes")
    return {
        "model": r["model"],
        "frame_scale": r["frame_scale"],
        "runtime": r["runtime"],
        "precision": r["precision"],
        "batch": r["batch"],
        "device": r.get("device"),
        "status": r["status"],
        "support_s": ts.get("seconds"),
        "gflops_step": r.get("gflops_step"),
        "first_ms": lat.get("first"),
        "p50_ms": lat.get("p50"),
        "p90_ms": lat.get("p90"),
        "p99_ms": lat.get("p99"),
        "min_ms": lat.get("min"),
        "cpu_ms": (r.get("cpu_ms") or {}).get("p50"),
        "reset_ms": lat.get("reset"),
        "handoff_ms": r.get("handoff_ms"),
        "throughput_clips_s": r.get("throughput_clips_s"),
        "real_time_factor": r.get("real_time_factor"),
        "achieved_gflop_s": r.get("achieved_gflop_s"),
        "peak_rss_mb": r.get("peak_rss_mb"),
        "peak_device_mb": r.get("peak_device_mb"),
        "state_kib": None if state is None else round(state / 1024, 1),
        "accuracy": _acc(r),
        "runs": (r.get("repeats") or {}).get("runs", 1 if r["status"] == "ok" else 0),
        "load": "–".join(f"{x:.0f}" for x in r["load_avg"]) if r.get("load_avg") else None,
        "error": r.get("error") or "",
    }


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        if abs(v) >= 100:
            return f"{v:,.0f}"
        if abs(v) >= 10:
            return f"{v:.1f}"
        return f"{v:.3g}" if abs(v) < 1 else f"{v:.2f}"
    return str(v).replace("|", "\\|")


def markdown_table(rows: list[dict[str, Any]], keys: list[str] | None = None) -> str:
    """A GitHub Markdown table of flat rows (``keys`` picks and orders the columns)."""
    headers = dict(COLUMNS)
    keys = keys or [k for k, _ in COLUMNS]
    out = ["| " + " | ".join(headers.get(k, k) for k in keys) + " |", "|" + "---|" * len(keys)]
    for row in rows:
        out.append("| " + " | ".join(_fmt(row.get(k)) for k in keys) + " |")
    return "\n".join(out) + "\n"


def csv_text(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=[k for k, _ in COLUMNS], extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for row in rows:
        w.writerow({k: ("" if v is None else v) for k, v in row.items()})
    return buf.getvalue()


def table_groups(results: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Results by ``bench-<runtime>-<precision>-<device>`` (timm-style results file names)."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in results:
        groups[f"bench-{r['runtime']}-{r['precision']}-{r.get('device')}"].append(r)
    return dict(sorted(groups.items()))


def backbone_of(result: dict[str, Any], pairs: dict[str, str]) -> str | None:
    """The memory-less backbone a memory model's result is compared with: ``pairs`` (given by the
    user) first, else the ``backbone`` its graph card declares (recorded in the result)."""
    return pairs.get(result["model"]) or result.get("backbone")


def pair_ratios(results: list[dict[str, Any]], pairs: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Per device/runtime/precision and memory model: its cost against its backbone.

    ``gflops_x``/``latency_x``/``rss_x``: memory model / backbone at frame-scale 1 (overhead of
    memory). ``fs<k>_latency_x``/``fs<k>_rss_x``: backbone at frame-scale k / memory model (what
    frame-scaling costs instead); ``match_fs``: the frame scale whose temporal support equals the
    memory model's, when measured.
    """
    pairs = pairs or {}
    ok = [r for r in results if r["status"] == "ok"]
    by_key = {(r.get("device"), r["runtime"], r["precision"], r["batch"], r["model"], r["frame_scale"]): r for r in ok}
    rows = []
    for r in ok:
        if r["frame_scale"] != 1:
            continue
        base = backbone_of(r, pairs)
        if base is None:
            continue
        ctx = (r.get("device"), r["runtime"], r["precision"], r["batch"])
        b1 = by_key.get((*ctx, base, 1))
        if b1 is None:
            continue
        row: dict[str, Any] = {
            "device": ctx[0],
            "runtime": r["runtime"],
            "precision": r["precision"],
            "model": r["model"],
            "backbone": base,
            "support_s": (r.get("temporal_support") or {}).get("seconds"),
            "gflops_x": _ratio(r.get("gflops_step"), b1.get("gflops_step")),
            "latency_x": _ratio(r["latency_ms"]["p50"], b1["latency_ms"]["p50"]),
            "cpu_x": _ratio(_cpu(r), _cpu(b1)),
            "rss_x": _ratio(r.get("peak_rss_mb"), b1.get("peak_rss_mb")),
            "scaled": {},
            "match_fs": None,
        }
        for (dev, rt, pr, bt, m, k), bk in sorted(by_key.items(), key=lambda kv: kv[0][5]):
            if (dev, rt, pr, bt) != ctx or m != base or k == 1:
                continue
            row["scaled"][k] = {
                "latency_x": _ratio(bk["latency_ms"]["p50"], r["latency_ms"]["p50"]),
                "cpu_x": _ratio(_cpu(bk), _cpu(r)),
                "rss_x": _ratio(bk.get("peak_rss_mb"), r.get("peak_rss_mb")),
                "gflops_x": _ratio(bk.get("gflops_step"), r.get("gflops_step")),
            }
            bs = (bk.get("temporal_support") or {}).get("seconds")
            if bs is not None and row["support_s"] is not None and abs(bs - row["support_s"]) < 1e-3:
                row["match_fs"] = k
        rows.append(row)
    return rows


def _cpu(r: dict[str, Any]) -> float | None:
    return (r.get("cpu_ms") or {}).get("p50")


def _ratio(a: Any, b: Any) -> float | None:
    if a is None or b in (None, 0):
        return None
    return round(float(a) / float(b), 3)


def ratios_markdown(rows: list[dict[str, Any]]) -> str:
    """The memory-vs-frame-scaling table."""
    if not rows:
        return "_no memory model measured together with its backbone_\n"
    scales = sorted({k for r in rows for k in r["scaled"]})
    head = ["device", "runtime", "prec", "memory model", "backbone", "support s", "GFLOPs ×", "latency ×", "CPU ×"]
    head += ["RSS ×"] + [f"fs{k} {what} ×" for what in ("latency", "CPU", "RSS") for k in scales]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["device"], r["runtime"], r["precision"], r["model"], r["backbone"], r["support_s"]]
        cells += [r["gflops_x"], r["latency_x"], r["cpu_x"], r["rss_x"]]
        for what in ("latency_x", "cpu_x", "rss_x"):
            cells += [(r["scaled"].get(k) or {}).get(what) for k in scales]
        out.append("| " + " | ".join(_fmt(c) for c in cells) + " |")
    return "\n".join(out) + "\n"


def machines_markdown(results: list[dict[str, Any]]) -> str:
    """One line per device/host: CPU and its ISA flags, cores, GPU, library versions, date range."""
    seen: dict[tuple, dict[str, Any]] = {}
    dates: dict[tuple, list[str]] = defaultdict(list)
    for r in results:
        m = r["machine"]
        key = (r.get("device"), m.get("hostname"))
        seen.setdefault(key, m)
        dates[key].append(str(m.get("date", "")))
    lines = []
    for key, m in sorted(seen.items(), key=lambda kv: str(kv[0])):
        libs = ", ".join(f"{k} {v}" for k, v in (m.get("libraries") or {}).items())
        gpus = ", ".join(g["name"] for g in m.get("gpus") or []) or "no GPU"
        d = sorted(dates[key])
        flags = " ".join(k for k, v in (m.get("isa") or {}).items() if v) or "none"
        isa = f"ISA {flags}; " if m.get("isa") else ""  # results older than the ISA record have none
        providers = m.get("onnxruntime_providers")
        libs += f" (ORT providers: {', '.join(providers)})" if providers else ""
        lines.append(
            f"- **{key[0]}**: {m.get('cpu')}, {isa}{m.get('cores_usable')}/{m.get('cores')} cores, "
            f"{m.get('memory_gb')} GB, {gpus}; {libs}; measured {d[0][:16]} – {d[-1][:16]} UTC"
        )
    return "\n".join(lines) + "\n"


def build_markdown(
    results: list[dict[str, Any]], pairs: dict[str, str] | None = None, plots: Sequence[Path] = ()
) -> str:
    """The whole report: machines, the main table per device, the ratios, links to plots."""
    parts = ["# edgemem benchmark report\n", "## Machines\n", machines_markdown(results)]
    main_keys = [
        "model",
        "frame_scale",
        "runtime",
        "precision",
        "batch",
        "status",
        "support_s",
        "gflops_step",
        "first_ms",
        "p50_ms",
        "p90_ms",
        "cpu_ms",
        "reset_ms",
        "handoff_ms",
        "real_time_factor",
        "achieved_gflop_s",
        "peak_rss_mb",
        "peak_device_mb",
        "state_kib",
        "accuracy",
        "runs",
        "load",
        "error",
    ]
    by_device: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in results:
        by_device[str(r.get("device"))].append(flat_row(r))
    for dev, rows in sorted(by_device.items()):
        parts += [f"\n## {dev}\n", markdown_table(rows, main_keys)]
    parts += ["\n## Memory vs frame-scaling\n", ratios_markdown(pair_ratios(results, pairs))]
    if plots:
        parts.append("\n## Plots\n")
        parts += [f"![{p.stem}]({p.as_posix()})\n" for p in plots]
    return "\n".join(parts)

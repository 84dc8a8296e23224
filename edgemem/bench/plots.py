"""PNG plots of merged results (matplotlib, no display needed).

``fig3-<memory model>-<device>.png``: latency, CPU time, peak memory and GFLOPs per step against temporal
support; the frame-scaled backbone is a line per runtime/precision, the memory model a star per
runtime/precision at its own temporal support (the MeMViT paper's Fig. 3, measured on a device).
``support-<device>.png``: the same three panels for every model measured on a device (a line per
model/runtime/precision across frame scales, a star for a memory model): always drawn.
``accuracy-<device>.png``: top-1 against GFLOPs per step, when accuracy was measured.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from edgemem.atomic import atomic_path
from edgemem.bench.report import _acc, backbone_of
from edgemem.optional import require

_PANELS = (
    ("p50 latency per step (ms)", lambda r: r["latency_ms"]["p50"]),
    ("CPU time per step (ms, all threads)", lambda r: (r.get("cpu_ms") or {}).get("p50")),
    ("peak memory (MiB)", lambda r: r.get("peak_device_mb") or r.get("peak_rss_mb")),
    ("GFLOPs per step", lambda r: r.get("gflops_step")),
)


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend, or the one-line error naming the ``plots`` extra."""
    matplotlib = require("matplotlib", extra="plots", purpose="plotting (--plots)")
    matplotlib.use("Agg")
    return require("matplotlib.pyplot", extra="plots", purpose="plotting (--plots)")


def _support(r: dict[str, Any]) -> float | None:
    return (r.get("temporal_support") or {}).get("seconds")


def _support_key(r: dict[str, Any]) -> float:
    """The sort key of a row already filtered to those with a temporal support."""
    seconds = _support(r)
    if seconds is None:
        raise ValueError(f"result {r.get('model')!r} has no temporal support to plot against")
    return seconds


def _save(fig: Any, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
    return path


def _style_support_axis(ax: Any, title: str) -> None:
    """Log-log axes of a cost against temporal support."""
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("temporal support (s)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)


def _legend_below(fig: Any, ax: Any) -> None:
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=4, fontsize=8, bbox_to_anchor=(0.5, 0.0))


def fig3_plots(results: list[dict[str, Any]], out_dir: Path, pairs: dict[str, str] | None = None) -> list[Path]:
    """One figure per (memory model, device) whose backbone was measured at some frame scale."""
    plt = pyplot()

    ok = [r for r in results if r["status"] == "ok" and _support(r) is not None]
    written = []
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in ok:
        groups[(r["model"], str(r.get("device")))].append(r)
    for (model, device), mem_rows in sorted(groups.items()):
        base = backbone_of(mem_rows[0], pairs or {})
        if base is None:
            continue
        base_rows = [r for r in ok if r["model"] == base and str(r.get("device")) == device]
        if not base_rows:
            continue
        fig, axes = plt.subplots(1, len(_PANELS), figsize=(4.5 * len(_PANELS), 4))
        lines: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
        for r in base_rows:
            lines[(r["runtime"], r["precision"])].append(r)
        colours = {
            key: f"C{i}" for i, key in enumerate(sorted(lines | {(r["runtime"], r["precision"]): [] for r in mem_rows}))
        }
        for ax, (title, get) in zip(axes, _PANELS, strict=True):
            for key, rows in sorted(lines.items()):
                rows = sorted((r for r in rows if get(r) is not None), key=_support_key)
                if rows:
                    ax.plot(
                        [_support(r) for r in rows],
                        [get(r) for r in rows],
                        "o-",
                        color=colours[key],
                        label=f"{base} frame-scaled, {key[0]} {key[1]}",
                    )
                    for r in rows:
                        ax.annotate(
                            f"×{r['frame_scale']}",
                            (_support(r), get(r)),
                            fontsize=7,
                            textcoords="offset points",
                            xytext=(3, 3),
                        )
            for r in mem_rows:
                if get(r) is not None:
                    key = (r["runtime"], r["precision"])
                    ax.plot(
                        [_support(r)],
                        [get(r)],
                        "*",
                        markersize=14,
                        color=colours[key],
                        markeredgecolor="black",
                        label=f"{model}, {key[0]} {key[1]}",
                    )
            _style_support_axis(ax, title)
        _legend_below(fig, axes[0])
        fig.suptitle(f"{model} (memory) vs {base} (frame-scaling) on {device}")
        written.append(_save(fig, out_dir / f"fig3-{model}-{device}.png"))
        plt.close(fig)
    return written


def accuracy_plots(results: list[dict[str, Any]], out_dir: Path) -> list[Path]:
    """Top-1 against GFLOPs per step, one figure per device, when accuracy was measured."""
    plt = pyplot()

    rows = [r for r in results if r["status"] == "ok" and _acc(r) is not None and r.get("gflops_step")]
    written = []
    by_device: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_device[str(r.get("device"))].append(r)
    for device, rs in sorted(by_device.items()):
        fig, ax = plt.subplots(figsize=(6, 4.5))
        for i, key in enumerate(sorted({(r["runtime"], r["precision"]) for r in rs})):
            sel = [r for r in rs if (r["runtime"], r["precision"]) == key]
            ax.scatter(
                [r["gflops_step"] for r in sel], [_acc(r) for r in sel], color=f"C{i}", label=f"{key[0]} {key[1]}"
            )
            for r in sel:
                ax.annotate(
                    f"{r['model']} ×{r['frame_scale']}",
                    (r["gflops_step"], _acc(r)),
                    fontsize=7,
                    textcoords="offset points",
                    xytext=(3, 3),
                )
        ax.set_xscale("log")
        ax.set_xlabel("GFLOPs per step")
        ax.set_ylabel("top-1 accuracy")
        ax.set_title(f"accuracy vs compute on {device}")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        written.append(_save(fig, out_dir / f"accuracy-{device}.png"))
        plt.close(fig)
    return written


def support_plots(results: list[dict[str, Any]], out_dir: Path) -> list[Path]:
    """Latency, peak memory and GFLOPs against temporal support for every model, one figure per device."""
    plt = pyplot()

    ok = [r for r in results if r["status"] == "ok" and _support(r) is not None]
    by_device: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in ok:
        by_device[str(r.get("device"))].append(r)
    written = []
    for device, rs in sorted(by_device.items()):
        series: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
        for r in rs:
            series[(r["model"], r["runtime"], r["precision"])].append(r)
        fig, axes = plt.subplots(1, len(_PANELS), figsize=(4.5 * len(_PANELS), 4))
        for ax, (title, get) in zip(axes, _PANELS, strict=True):
            for i, (key, rows) in enumerate(sorted(series.items())):
                rows = sorted((r for r in rows if get(r) is not None), key=_support_key)
                if not rows:
                    continue
                memory = rows[0].get("state_bytes") and rows[0]["frame_scale"] == 1 and len(rows) == 1
                ax.plot(
                    [_support(r) for r in rows],
                    [get(r) for r in rows],
                    "*" if memory else "o-",
                    markersize=12 if memory else 6,
                    color=f"C{i % 10}",
                    label=" ".join(key),
                )
            _style_support_axis(ax, title)
        _legend_below(fig, axes[0])
        fig.suptitle(f"cost against temporal support on {device}")
        written.append(_save(fig, out_dir / f"support-{device}.png"))
        plt.close(fig)
    return written

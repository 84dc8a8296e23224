"""Terminal view of a running stream (rich): current top-k, latency, real-time factor, drops.

On a terminal the view is a live-updating table; otherwise one plain line per clip.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from edgemem.serve.stream import ClipRecord, StreamStats


def _fmt_topk(rec: ClipRecord, n: int = 3) -> str:
    return "  ".join(f"{t['label']} {t['score']:.2f}" for t in rec.topk[:n])


class LiveView:
    """Callback for ``run_stream``: shows the newest record of each source and running totals."""

    def __init__(self, runtime: str, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.runtime = runtime
        self._latest: dict[str, ClipRecord] = {}
        self._live: Any = None

    def __enter__(self) -> LiveView:
        if self.console.is_terminal:
            self._live = Live(console=self.console, refresh_per_second=8, transient=False)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.__exit__(None, None, None)

    def __call__(self, rec: ClipRecord, stats: StreamStats) -> None:
        self._latest[rec.source] = rec
        if self._live is not None:
            self._live.update(self._table(stats))
        else:
            self.console.print(
                f"[{rec.source} #{rec.clip_index} {rec.t_start:.2f}-{rec.t_end:.2f}s] "
                f"{_fmt_topk(rec)} | {rec.latency_ms:.1f} ms",
                highlight=False,
                markup=False,
                soft_wrap=True,
            )

    def _table(self, stats: StreamStats) -> Table:
        lat = stats.latency_ms
        mean = sum(lat) / len(lat) if lat else float("nan")
        title = (
            f"edgemem stream · {self.runtime} · clips {stats.clips} · mean {mean:.1f} ms · "
            f"RTF {stats.real_time_factor:.3f} · dropped {stats.dropped}"
        )
        table = Table(title=title, expand=False)
        for col in ("source", "clip", "time (s)", "top-k", "latency (ms)"):
            table.add_column(col)
        for rec in self._latest.values():
            table.add_row(
                rec.source,
                str(rec.clip_index),
                f"{rec.t_start:.2f}-{rec.t_end:.2f}",
                _fmt_topk(rec),
                f"{rec.latency_ms:.1f}",
            )
        return table

    def summary(self, stats: StreamStats) -> None:
        lat = sorted(stats.latency_ms)
        if not lat:
            self.console.print("no clip was classified", highlight=False)
            return
        p50 = lat[len(lat) // 2]
        self.console.print(
            f"{stats.clips} clips in {stats.steps} steps on {self.runtime}: step latency p50 {p50:.1f} ms, "
            f"max {lat[-1]:.1f} ms, real-time factor {stats.real_time_factor:.3f}, dropped frames {stats.dropped}",
            highlight=False,
            soft_wrap=True,
        )

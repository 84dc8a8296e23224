"""Learning curves: validation top-1 per epoch, one line per model, from run folders' metrics.jsonl.

``python -m edgemem.train.curves --out curves.png [--title T] LABEL=RUN[,RUN...] ...``: several runs
under one label (seeds) are drawn as their mean with the min-max band.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from edgemem.atomic import atomic_path
from edgemem.errors import EdgememError, InputError


def val_curve(run: str | Path) -> list[tuple[int, float]]:
    """(epoch, val_top1) of every evaluated epoch of a run folder."""
    path = Path(run) / "metrics.jsonl"
    if not path.is_file():
        raise InputError(f"{path} not found (not a run folder)")
    out = []
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        if rec.get("kind") == "epoch" and rec.get("val_top1") is not None:
            out.append((int(rec["epoch"]), float(rec["val_top1"])))
    if not out:
        raise InputError(f"{path} has no evaluated epoch")
    return out


def plot_curves(groups: dict[str, list[Path]], out: Path, title: str = "", chance: float | None = None) -> Path:
    """Draw each label's runs (mean line, min-max band over runs) to ``out`` (PNG, written atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for label, runs in groups.items():
        curves = [dict(val_curve(r)) for r in runs]
        epochs = sorted(set.intersection(*(set(c) for c in curves)))
        vals = np.array([[c[e] for e in epochs] for c in curves])
        n = f" ({len(runs)} seeds)" if len(runs) > 1 else ""
        (line,) = ax.plot(epochs, vals.mean(0), label=label + n)
        if len(runs) > 1:
            ax.fill_between(epochs, vals.min(0), vals.max(0), color=line.get_color(), alpha=0.2)
    if chance is not None:
        ax.axhline(chance, color="grey", linestyle=":", label="chance")
    ax.set(xlabel="epoch", ylabel="validation top-1", ylim=(0, 1.02), title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    try:
        with atomic_path(out) as tmp:
            fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    finally:
        plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m edgemem.train.curves", description=__doc__)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--title", default="")
    p.add_argument("--chance", type=float, default=None)
    p.add_argument("runs", nargs="+", metavar="LABEL=RUN[,RUN...]")
    args = p.parse_args(argv)
    try:
        groups = {}
        for item in args.runs:
            label, sep, paths = item.partition("=")
            if not sep or not paths:
                raise InputError(f"expected LABEL=RUN[,RUN...], got {item!r}")
            groups[label] = [Path(r) for r in paths.split(",")]
        print(plot_curves(groups, args.out, args.title, args.chance))
    except EdgememError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

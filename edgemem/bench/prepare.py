"""Export the graph a benchmark cell runs, in its own process (``python -m edgemem.bench.prepare``).

The harness calls this once per model / frame-scale / batch / graph precision and caches the file,
so that cells never re-export and export memory never counts against a cell's peak.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from edgemem.precision import GRAPH_PRECISIONS, choices


def export_graph(
    model_name: str,
    out: Path,
    *,
    frame_scale: int = 1,
    batch: int = 1,
    precision: str = "f32",
    checkpoint: str | None = None,
    verify: bool = False,
) -> Path:
    """Build the model (random init unless ``checkpoint``) and export it to ``out``.

    Verification against PyTorch is off by default: ``edgemem export``/``verify`` own it, and at
    large frame scales it would cost more than the benchmark itself.
    """
    import torch

    from edgemem.export.onnx import to_onnx
    from edgemem.models.resolve import resolve_model

    overrides: dict[str, Any] = {"frame_scale": frame_scale} if frame_scale != 1 else {}
    torch.manual_seed(0)
    model = resolve_model(model_name, checkpoint, **overrides).eval()
    calibration = None
    if precision == "int8":  # random-frame calibration: these graphs are for speed (see docs/BENCHMARKS.md)
        from edgemem.export.calibration import synthetic_calibration

        calibration = synthetic_calibration(model.input_shape)
    out.parent.mkdir(parents=True, exist_ok=True)
    to_onnx(model, out, batch=batch, verify=verify, precision=precision, calibration=calibration)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m edgemem.bench.prepare", description=__doc__)
    p.add_argument("--model", required=True)
    p.add_argument("--frame-scale", type=int, default=1)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--precision", default="f32", choices=choices(GRAPH_PRECISIONS))
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--verify", action="store_true", help="verify the graph against PyTorch")
    p.add_argument("--out", required=True, type=Path)
    args = p.parse_args(argv)
    export_graph(
        args.model,
        args.out,
        frame_scale=args.frame_scale,
        batch=args.batch,
        precision=args.precision,
        checkpoint=args.checkpoint,
        verify=args.verify,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

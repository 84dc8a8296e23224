"""Which ops dominate a graph's step on ONNX Runtime CPU (``python -m edgemem.bench.profile X.onnx``).

Runs ``steps`` steps with ORT's profiler and sums node time by op type (the first step, with
one-time initialisation, is excluded). The state is fed back as the session would.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from edgemem import contract as C


def profile_ort(graph: str | Path, steps: int = 3, threads: int | None = None) -> dict[str, Any]:
    """Per-op-type time (ms per step and share) of ``graph`` on ORT CPU."""
    import onnxruntime as ort

    from edgemem.runtimes.graph import read_graph

    info = read_graph(graph)
    batch = info.static_batch or 1
    opts = ort.SessionOptions()
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads:
        opts.intra_op_num_threads = threads
    with tempfile.TemporaryDirectory() as tmp:
        opts.enable_profiling = True
        opts.profile_file_prefix = str(Path(tmp) / "ort")
        sess = ort.InferenceSession(str(graph), opts, providers=["CPUExecutionProvider"])
        state = {s.name: np.zeros(s.with_batch(batch).shape, s.dtype) for s in info.specs}
        frames = np.random.default_rng(0).random((batch, *info.input_shape), dtype=np.float32)
        outputs = [C.LOGITS] + [C.state_out_name(s.name) for s in info.specs]
        for _ in range(steps + 1):
            feeds = {C.FRAMES: frames, C.RESET: np.zeros(batch, bool)}
            feeds |= {C.state_in_name(k): v for k, v in state.items()}
            _, *new = sess.run(outputs, feeds)
            state = {s.name: v for s, v in zip(info.specs, new, strict=True)}
        events = json.loads(Path(sess.end_profiling()).read_text())
    runs = [e for e in events if e.get("name") == "model_run"]
    skip_before = runs[0]["ts"] + runs[0]["dur"] if runs else 0
    by_op: dict[str, float] = defaultdict(float)
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] >= skip_before:
            by_op[e["args"].get("op_name", "?")] += e["dur"] / 1e3 / steps
    total = sum(by_op.values())
    ops = sorted(by_op.items(), key=lambda kv: -kv[1])
    return {
        "graph": str(graph),
        "steps": steps,
        "node_ms_per_step": round(total, 2),
        "ops": [{"op": k, "ms": round(v, 2), "share": round(v / total, 4)} for k, v in ops],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m edgemem.bench.profile", description=__doc__)
    p.add_argument("graph")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--top", type=int, default=12)
    args = p.parse_args(argv)
    prof = profile_ort(args.graph, args.steps)
    prof["ops"] = prof["ops"][: args.top]
    print(json.dumps(prof, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Which ops dominate a graph's step (``python -m edgemem.bench.profile X.onnx [--runtime openvino]``).

ONNX Runtime CPU: runs ``steps`` steps with ORT's profiler and sums node time by op type (the
first step, with one-time initialisation, is excluded); the state is fed back as the session
would. OpenVINO CPU: the plugin's per-node counters (``PERF_COUNT``), each node's fastest of
``steps`` steps (robust to a loaded machine's interruptions), summed by the node type OpenVINO
executes (after its fusions) and its kernel, at ``--precision`` (default the graph's own; bf16 on an
f32 graph, int8+bf16 on an int8 graph; one the graph cannot run is refused); a fused ``Subgraph``
holding MatMuls (the attention's q.k, softmax, softmax.V) is ``MHA``.
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
from edgemem.errors import EdgememError
from edgemem.hardware import resolve_threads
from edgemem.precision import choices


def profile_ort(
    graph: str | Path, steps: int = 3, threads: int | None = None, precision: str | None = None
) -> dict[str, Any]:
    """Per-op-type time (ms per step and share) of ``graph`` on ORT CPU; ``precision`` may only name
    the graph's own (ONNX Runtime runs nothing else): another one is refused, never ignored."""
    import onnxruntime as ort

    from edgemem.precision import of_graph
    from edgemem.runtimes.graph import read_graph
    from edgemem.runtimes.precisions import run_graph_options

    info = read_graph(graph)
    run_graph_options("ort-cpu", of_graph(info.contract.export, info.contract.quantized), precision)
    batch = info.static_batch or 1
    opts = ort.SessionOptions()
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.intra_op_num_threads = resolve_threads(threads)
    with tempfile.TemporaryDirectory() as tmp:
        opts.enable_profiling = True
        opts.profile_file_prefix = str(Path(tmp) / "ort")
        sess = ort.InferenceSession(str(graph), opts, providers=["CPUExecutionProvider"])
        state = {s.name: s.concrete(batch).zeros() for s in info.specs}
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


def profile_openvino(
    graph: str | Path, steps: int = 3, precision: str | None = None, threads: int | None = None
) -> dict[str, Any]:
    """Per-executed-node-type time (ms and share) of one steady ``graph`` step on OpenVINO CPU, at
    ``precision`` (None: the graph's own)."""
    from edgemem.precision import of_graph
    from edgemem.runtimes.graph import read_graph
    from edgemem.runtimes.openvino import MHA, compile_model
    from edgemem.runtimes.precisions import run_graph_options

    info = read_graph(graph)
    batch = info.static_batch or 1
    run, options = run_graph_options("openvino", of_graph(info.contract.export, info.contract.quantized), precision)
    compiled = compile_model(str(graph), "CPU", options["precision"], threads, PERF_COUNT=True)
    runtime_model = compiled.get_runtime_model().get_ordered_ops()
    fused = {op.get_friendly_name(): str(op.get_rt_info()["originalLayersNames"].astype(str)) for op in runtime_model}
    request = compiled.create_infer_request()
    feeds: dict[str, np.ndarray] = {
        C.FRAMES: np.random.default_rng(0).random((batch, *info.input_shape), dtype=np.float32),
        C.RESET: np.zeros(batch, bool),
    }
    feeds |= {C.state_in_name(s.name): s.concrete(batch).zeros() for s in info.specs}
    request.infer(feeds)  # one-time initialisation
    fastest: dict[tuple[int, str, str], float] = {}
    for _ in range(max(steps, 1)):
        request.infer(feeds)
        for i, node in enumerate(request.profiling_info):
            kind = node.node_type
            if kind == "Subgraph" and "matmul" in fused.get(node.node_name, "").lower():
                kind = MHA
            key = (i, kind, node.exec_type)
            fastest[key] = min(fastest.get(key, float("inf")), node.real_time.total_seconds() * 1e3)
    by_op: dict[str, float] = defaultdict(float)
    for (_, kind, kernel), ms in fastest.items():
        by_op[f"{kind} {kernel}"] += ms
    total = sum(by_op.values())
    ops = sorted(by_op.items(), key=lambda kv: -kv[1])
    return {
        "graph": str(graph),
        "runtime": "openvino",
        "precision": run.value,
        "steps": steps,
        "node_ms_per_step": round(total, 2),
        "ops": [{"op": k, "ms": round(v, 2), "share": round(v / total, 4)} for k, v in ops],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m edgemem.bench.profile", description=__doc__)
    p.add_argument("graph")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--top", type=int, default=12)
    p.add_argument("--runtime", choices=("ort-cpu", "openvino"), default="ort-cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument(
        "--precision",
        default=None,
        choices=choices(),
        help="what runs (default: the graph's own: ONNX Runtime runs only that)",
    )
    args = p.parse_args(argv)
    try:
        if args.runtime == "openvino":
            prof = profile_openvino(args.graph, args.steps, args.precision, args.threads)
        else:
            prof = profile_ort(args.graph, args.steps, args.threads, args.precision)
    except EdgememError as e:
        print(f"python -m edgemem.bench.profile: error: {e}", file=sys.stderr)
        return 2
    prof["ops"] = prof["ops"][: args.top]
    print(json.dumps(prof, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

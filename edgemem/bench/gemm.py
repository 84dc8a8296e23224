"""Does int8 pay on this CPU? Linear-layer throughput, f32 vs int8, per runtime
(``python -m edgemem.bench.gemm [--graph GRAPH.onnx]``).

An int8 graph is faster than its f32 graph only where the runtime has fast int8 GEMM kernels for
this CPU: with AVX512-VNNI / AVX-VNNI / AMX they do 2-4x the f32 multiply-adds per cycle; on an
AVX2-only CPU int8 goes through VPMADDUBSW/VPMADDWD, at best about twice f32, and a runtime's kernel
may reach much less. This times one Linear layer per shape, with constant weights, as an f32
``MatMul`` and as the QDQ int8 ``MatMul`` the exporter's quantizers write (per-tensor activations,
u8 and s8; per-channel s8 weights), on ONNX Runtime's CPU provider and OpenVINO's CPU plugin, one
thread, and reports per shape the CPU ms (median), GOP/s, the kernel OpenVINO compiled and the
int8-over-f32 speed-up. On OpenVINO it also times the product as a 1x1 convolution, f32 and int8:
oneDNN's fastest int8 kernel without VNNI, the ceiling of what an exporter rewriting Linear layers as
convolutions could buy on an AVX2-only CPU (the layout reorders such a rewrite needs are not timed).
With ``--graph`` the shapes are the graph's own Linear layers (each timed once, weighted by how often
the graph has it), so the totals estimate the Linear-layer time of one step of that graph in f32 and
int8 on each runtime.

ISA caps (``ONEDNN_MAX_CPU_ISA=AVX2``) reach OpenVINO's oneDNN kernels but not its MLAS f32 GEMMs
nor ONNX Runtime (both pick kernels by CPUID); the result records the caps and the kernels.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgemem.bench.roundrobin import cpu_info, isa_caps
from edgemem.errors import EdgememError, InputError

Shape = tuple[int, int, int]  # (M tokens, K in, N out)
VARIANTS = ("f32", "int8-u8", "int8-s8")
# OpenVINO only: the weight fed as an input, so the f32 product runs on oneDNN, which honours
# ONEDNN_MAX_CPU_ISA, instead of MLAS, which does not (the AVX2 f32 reference of a capped run).
ONEDNN_F32 = "f32-onednn"
# OpenVINO only: the same product as a 1x1 convolution over ``[1, K, M, 1]`` (weight ``[N, K, 1, 1]``),
# f32 and QDQ int8 (u8 activations): oneDNN's 1x1-convolution kernels are its fastest without VNNI,
# so these bound what rewriting Linear layers as convolutions could buy on an AVX2-only CPU.
CONV_VARIANTS = ("conv1x1-f32", "conv1x1-int8-u8")
OPENVINO_ONLY = (ONEDNN_F32, *CONV_VARIANTS)
RUNTIMES = ("ort-cpu", "openvino")
# Four of MeMViT-16 16x4's Linear shapes (tokens with cls): the first MLP layer of stages 1-3 and a
# stage-3 attention projection (``--graph`` times all 99).
DEFAULT_SHAPES: tuple[Shape, ...] = ((25089, 96, 384), (6273, 192, 768), (1569, 384, 1536), (1569, 384, 384))


def linear_graph(shape: Shape, variant: str) -> Any:
    """One Linear layer ``[1, M, K] @ W[K, N]`` as an ONNX model: f32, or QDQ int8 with u8/s8 activations
    (``conv1x1-*``: the same product as a 1x1 ``Conv``, ``x [1, K, M, 1] -> y [1, N, M, 1]``)."""
    from onnx import TensorProto, helper, numpy_helper

    if variant not in (*VARIANTS, *OPENVINO_ONLY):
        raise InputError(f"unknown variant {variant!r}; one of {', '.join((*VARIANTS, *OPENVINO_ONLY))}")
    m, k, n = shape
    w = np.random.default_rng(0).standard_normal((k, n)).astype(np.float32) * k**-0.5
    conv = variant in CONV_VARIANTS
    op, w_axis = ("Conv", 0) if conv else ("MatMul", 1)
    if conv:
        w = np.ascontiguousarray(w.T).reshape(n, k, 1, 1)
    x_shape, y_shape = ([1, k, m, 1], [1, n, m, 1]) if conv else ([1, m, k], [1, m, n])
    inits, nodes = [], []
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)]
    if variant == ONEDNN_F32:
        inputs.append(helper.make_tensor_value_info("w", TensorProto.FLOAT, [k, n]))
        nodes.append(helper.make_node(op, ["x", "w"], ["y"]))
    elif "f32" in variant:
        inits.append(numpy_helper.from_array(w, "w"))
        nodes.append(helper.make_node(op, ["x", "w"], ["y"]))
    else:  # per-channel s8 weights in 7 bits as the exporter writes them (channel = output column N)
        other = tuple(a for a in range(w.ndim) if a != w_axis)
        scale = np.abs(w).max(axis=other, keepdims=True) / 64
        unsigned = variant.endswith("-u8")
        inits += [
            numpy_helper.from_array(np.round(w / scale).astype(np.int8), "wq"),
            numpy_helper.from_array(scale.reshape(n).astype(np.float32), "ws"),
            numpy_helper.from_array(np.zeros(n, np.int8), "wz"),
            numpy_helper.from_array(np.array(8.0 / 255, np.float32), "xs"),
            numpy_helper.from_array(np.array(128, np.uint8) if unsigned else np.array(0, np.int8), "xz"),
        ]
        nodes += [
            helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
            helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
            helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["wd"], axis=w_axis),
            helper.make_node(op, ["xd", "wd"], ["y"]),
        ]
    graph = helper.make_graph(
        nodes, f"linear_{variant}", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)], inits
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def graph_linear_shapes(path: Path) -> Counter[Shape]:
    """The (M, K, N) of every Linear layer of an ONNX graph (a MatMul whose right operand is a constant
    ``[K, N]`` weight, f32 or dequantized int8), counted."""
    import onnx

    try:
        model = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    except Exception as e:  # onnx raises DecodeError/ValidationError/OSError for unreadable files
        raise InputError(f"cannot read {path} as an ONNX graph: {str(e).splitlines()[0]}") from None
    g = model.graph
    weights = {t.name: tuple(t.dims) for t in g.initializer}
    dequant = {n.output[0]: n.input[0] for n in g.node if n.op_type == "DequantizeLinear"}
    dims: dict[str, list[int]] = {}
    for vi in [*g.value_info, *g.input, *g.output]:
        d = [x.dim_value if x.HasField("dim_value") else 0 for x in vi.type.tensor_type.shape.dim]
        dims[vi.name] = d
    shapes: Counter[Shape] = Counter()
    for node in g.node:
        if node.op_type != "MatMul":
            continue
        wname = dequant.get(node.input[1], node.input[1])
        w, x = weights.get(wname), dims.get(node.input[0])
        if w is None or len(w) != 2 or not x or 0 in x:
            continue
        shapes[(math.prod(x[:-1]), int(w[0]), int(w[1]))] += 1
    if not shapes:
        raise InputError(f"{path} has no Linear layer (MatMul with a constant 2-D weight) of known input shape")
    return shapes


def _ort_runner(model: Any, threads: int) -> Callable[[dict[str, np.ndarray]], object]:
    import onnxruntime as ort

    from edgemem.runtimes.ort import session_options

    sess = ort.InferenceSession(model.SerializeToString(), session_options(ort, threads, None, False),
                                providers=["CPUExecutionProvider"])  # fmt: skip
    return lambda feed: sess.run(None, feed)


def _openvino_runner(model: Any, threads: int) -> Callable[[dict[str, np.ndarray]], object]:
    from edgemem.runtimes.openvino import compile_model, shared_core

    compiled = compile_model(shared_core().read_model(model.SerializeToString(), b""), "CPU", "f32", threads,
                             PERF_COUNT="YES")  # fmt: skip
    request = compiled.create_infer_request()

    def run(feed: dict[str, np.ndarray]) -> object:
        return request.infer(feed)

    def kernels() -> str:
        layers = ("FullyConnected", "MatMul", "Convolution")
        names = {f"{p.node_type}:{p.exec_type}" for p in request.profiling_info if p.node_type.startswith(layers)}
        return ",".join(sorted(names))

    run.kernels = kernels  # type: ignore[attr-defined]
    return run


def time_linear(shape: Shape, variant: str, runtime: str, threads: int, repeats: int) -> dict[str, Any]:
    """Median CPU ms of one Linear layer on ``runtime`` (after 2 warm-up runs), its GOP/s and kernel."""
    opener = {"ort-cpu": _ort_runner, "openvino": _openvino_runner}[runtime]
    run = opener(linear_graph(shape, variant), threads)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, shape[0], shape[1])).astype(np.float32)
    feed = {"x": x.transpose(0, 2, 1)[..., None].copy() if variant in CONV_VARIANTS else x}
    if variant == ONEDNN_F32:
        feed["w"] = rng.standard_normal(shape[1:]).astype(np.float32)
    for _ in range(2):
        run(feed)
    cpu = []
    for _ in range(repeats):
        t = time.process_time()
        run(feed)
        cpu.append(time.process_time() - t)
    ms = statistics.median(cpu) * 1e3
    row: dict[str, Any] = {"cpu_ms_p50": round(ms, 3), "gop_s": round(2 * math.prod(shape) / ms / 1e6, 1)}
    kernels = getattr(run, "kernels", None)
    if kernels is not None:
        row["kernel"] = kernels()
    return row


def gemm_bench(shapes: Counter[Shape], runtimes: list[str], threads: int, repeats: int) -> dict[str, Any]:
    """Time every (shape, runtime, variant); totals weight each shape by its count."""
    rows = []
    totals: dict[str, dict[str, float]] = {rt: dict.fromkeys(VARIANTS, 0.0) for rt in runtimes}
    for shape, count in shapes.items():
        for rt in runtimes:
            for variant in (*VARIANTS, *OPENVINO_ONLY) if rt == "openvino" else VARIANTS:
                r = time_linear(shape, variant, rt, threads, repeats)
                totals[rt][variant] = totals[rt].get(variant, 0.0) + count * r["cpu_ms_p50"]
                rows.append({"m": shape[0], "k": shape[1], "n": shape[2], "count": count, "runtime": rt,
                             "variant": variant, **r})  # fmt: skip
    machine = cpu_info()
    caps = isa_caps()
    if caps:
        machine["isa_caps"] = caps
        machine["isa_note"] = ("kernels capped by isa_caps: OpenVINO's gemm_mlas_f32 and every ONNX Runtime "
                               "kernel ignore the cap (see each row's kernel)")  # fmt: skip
    summary: dict[str, dict[str, float]] = {}
    for rt, t in totals.items():
        best_int8 = min(t["int8-u8"], t["int8-s8"])
        summary[rt] = {f"{v}_ms": round(ms, 2) for v, ms in t.items()}
        summary[rt]["int8_speedup"] = round(t["f32"] / best_int8, 3)
        if ONEDNN_F32 in t:
            summary[rt]["int8_speedup_vs_onednn_f32"] = round(t[ONEDNN_F32] / best_int8, 3)
            summary[rt]["conv1x1_int8_speedup"] = round(t["conv1x1-f32"] / t["conv1x1-int8-u8"], 3)
    return {"threads": threads, "repeats": repeats, "machine": machine, "rows": rows, "linear_layers_total": summary}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m edgemem.bench.gemm", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--graph", type=Path, default=None, help="time this ONNX graph's Linear layers (default: "
                   "MeMViT-16's main shapes, once each)")  # fmt: skip
    p.add_argument("--runtimes", default=",".join(RUNTIMES), help=f"comma-separated, of {', '.join(RUNTIMES)}")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=9)
    args = p.parse_args(argv)
    try:
        runtimes = [r.strip() for r in args.runtimes.split(",") if r.strip()]
        bad = [r for r in runtimes if r not in RUNTIMES]
        if bad or not runtimes:
            raise InputError(f"--runtimes: unknown {bad or 'none given'}; choose from {', '.join(RUNTIMES)}")
        if args.threads < 1 or args.repeats < 1:
            raise InputError("--threads and --repeats must be >= 1")
        if args.graph is not None and not args.graph.is_file():
            raise InputError(f"--graph {args.graph}: no such file")
        shapes = graph_linear_shapes(args.graph) if args.graph else Counter(DEFAULT_SHAPES)
        result = gemm_bench(shapes, runtimes, args.threads, args.repeats)
    except EdgememError as e:
        print(f"python -m edgemem.bench.gemm: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

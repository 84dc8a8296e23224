"""int8 graphs whose weights use 8 bits compute wrong values on a CPU without VNNI: refused there.

Without VNNI (AVX2 only), ONNX Runtime's and OpenVINO's int8 GEMMs multiply with ``VPMADDUBSW``,
which adds two u8 x s8 products into an int16: 255 x 127 x 2 overflows it, 255 x 64 x 2 does not.
``edgemem export --precision int8`` writes 7-bit weights (docs/EXPORT.md, "Weights in 7 bits"); a
graph exported before that, or by another tool, ran 1.6 max |Δ| off its f32 logits on an AVX2-only
EPYC. Such a graph is refused on such a CPU with the fix (re-export), rather than run silently wrong.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgemem import hardware
from edgemem.errors import UnsupportedError
from edgemem.precision import Precision, of_graph
from edgemem.runtimes.graph import GraphInfo

SATURATION_FREE = 64  # the widest int8 weight whose pair products fit an int16 sum with u8 activations


def depthwise_weights(model: Any) -> set[str]:
    """Names of the weights of ``model``'s depthwise convolutions (``group`` = output channels, one
    input channel per group): their kernels do not pair products, so 8 bits cannot saturate them."""
    from onnx import helper

    shapes = {i.name: list(i.dims) for i in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    out = set()
    for n in model.graph.node:
        if n.op_type != "Conv" or len(n.input) < 2:
            continue
        group = next((helper.get_attribute_value(a) for a in n.attribute if a.name == "group"), 1)
        w = n.input[1]
        if w in producer and producer[w].op_type == "DequantizeLinear":
            w = producer[w].input[0]
        dims = shapes.get(w, [])
        if group > 1 and len(dims) > 2 and dims[0] == group and dims[1] == 1:
            out.add(w)
    return out


def widest_gemm_weight(model: Any) -> int:
    """max |q| over the int8 weights that a ``DequantizeLinear`` feeds to a GEMM or to a convolution
    that is not depthwise (``depthwise_weights``) in ``model`` (an ``onnx.ModelProto``); 0 without any."""
    from onnx import TensorProto, numpy_helper

    graph = model.graph
    depthwise = depthwise_weights(model)
    inits = {i.name: i for i in graph.initializer if i.data_type == TensorProto.INT8 and i.name not in depthwise}
    widest = 0
    for n in graph.node:
        if n.op_type == "DequantizeLinear" and n.input[0] in inits:
            widest = max(widest, int(np.abs(numpy_helper.to_array(inits[n.input[0]]).astype(np.int32)).max()))
    return widest


def refuse_saturating_int8(info: GraphInfo, runtime: str) -> None:
    """UnsupportedError when ``info`` is an int8 graph with 8-bit GEMM weights on an AVX2 CPU without
    VNNI/AMX (``refuse_saturating_weights``); nothing otherwise."""
    if of_graph(info.contract.export, info.contract.quantized) == Precision.INT8:
        refuse_saturating_weights(info.path, runtime)


def refuse_saturating_weights(path: Path, runtime: str) -> None:
    """UnsupportedError when the graph at ``path`` has int8 GEMM weights wider than 7 bits and this CPU
    is an x86 CPU with AVX2 but no VNNI/AMX (``hardware.int8_gemm`` ``avx2``, where the saturation was
    measured); nothing otherwise (the file is read only on such a CPU). ``none`` is not refused: it
    includes ARM CPUs, whose int8 kernels have no ``VPMADDUBSW``."""
    if hardware.int8_gemm() != "avx2":
        return
    import onnx

    widest = widest_gemm_weight(onnx.load(str(path)))
    if widest > SATURATION_FREE:
        raise UnsupportedError(
            f"{path.name}: int8 weights up to {widest} saturate the int8 GEMMs of {runtime} on this CPU "
            f"without VNNI (at most {SATURATION_FREE}); re-export it with `edgemem export --precision int8`, "
            "which writes 7-bit weights"
        )

"""Post-processing and linting of exported graphs at the ``onnx.ModelProto`` level.

Parameters keep their PyTorch names as initializer names so that a graph carries its own weights
in a recoverable form: ``<param>`` (as is, possibly cast to fp16), ``<param>:T<perm>`` (folded
``Transpose(param, perm)``), ``<name>_quantized`` + ``_scale`` + ``_zero_point`` (int8, per tensor or per channel; see
``export.quantize.name_weight_quantizers``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from edgemem.errors import InputError, UnsupportedError

FORBIDDEN_OPS = ("If", "Loop", "Scan", "SequenceConstruct", "SequenceInsert", "ConcatFromSequence")
TRANSPOSED = ":T"


def load_graph_proto(path: str | Path) -> onnx.ModelProto:
    """The whole graph (weights and external data included), loaded once for everything that needs
    it (its contract via ``read_contract(proto)``, weights, the checker); InputError when unreadable."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"graph not found: {p}")
    try:
        return onnx.load(str(p))
    except Exception as e:  # protobuf raises several unrelated types
        raise InputError(
            f"{p} is not an ONNX model: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
        ) from None


def rename_initializers(model: onnx.ModelProto, prefix: str) -> None:
    """Drop ``prefix`` from initializer names (and every reference to them)."""
    renames = {i.name: i.name[len(prefix) :] for i in model.graph.initializer if i.name.startswith(prefix)}
    taken = {i.name for i in model.graph.initializer} | {n for node in model.graph.node for n in node.output}
    renames = {a: b for a, b in renames.items() if b not in taken}
    for init in model.graph.initializer:
        init.name = renames.get(init.name, init.name)
    for node in model.graph.node:
        node.input[:] = [renames.get(n, n) for n in node.input]


def fold_param_transposes(model: onnx.ModelProto, params: set[str]) -> int:
    """Replace ``Transpose(param)`` nodes by an initializer named ``<param>:T<perm>``; returns how many.

    The exporter keeps parameters unfolded (so their names survive); this folds the one pattern
    that matters (Linear weights before MatMul), keeping the name recoverable, so that no runtime
    transposes weights per step and int8 quantization sees constant MatMul weights.
    """
    inits = {i.name: i for i in model.graph.initializer}
    uses = Counter(n for node in model.graph.node for n in node.input)
    out_names = {o.name for o in model.graph.output}
    kept, folded = [], 0
    for node in model.graph.node:
        src = node.input[0] if node.op_type == "Transpose" and node.input else None
        if src not in params or src not in inits or node.output[0] in out_names:
            kept.append(node)
            continue
        w = numpy_helper.to_array(inits[src])
        perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), list(range(w.ndim))[::-1])
        name = f"{src}{TRANSPOSED}{''.join(map(str, perm))}"
        if name not in inits:
            inits[name] = numpy_helper.from_array(np.ascontiguousarray(w.transpose(perm)), name)
            model.graph.initializer.append(inits[name])
        for other in model.graph.node:
            other.input[:] = [name if n == node.output[0] else n for n in other.input]
        uses[src] -= 1
        folded += 1
    del model.graph.node[:]
    model.graph.node.extend(kept)
    unused = {n for n, c in uses.items() if c <= 0}
    keep_inits = [i for i in model.graph.initializer if i.name not in unused]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep_inits)
    return folded


@dataclass(frozen=True)
class GraphStats:
    nodes: int
    initializers: int
    parameters: int
    ops: dict[str, int]


def lint_graph(model: onnx.ModelProto) -> GraphStats:
    """Reject control flow, sequences and zero-size tensors; return node/op counts."""
    ops = Counter(n.op_type for n in model.graph.node)
    bad = sorted(op for op in ops if op in FORBIDDEN_OPS)
    if bad:
        raise UnsupportedError(f"the exported graph contains control flow {bad}: the model's step is not static")
    for init in model.graph.initializer:
        if 0 in init.dims:
            raise UnsupportedError(f"the exported graph has a zero-size tensor '{init.name}' {list(init.dims)}")
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    for vi in [*inferred.graph.value_info, *inferred.graph.output]:
        dims = vi.type.tensor_type.shape.dim
        if any(d.HasField("dim_value") and d.dim_value == 0 for d in dims):
            raise UnsupportedError(f"the exported graph has a zero-size tensor '{vi.name}'")
    n_params = sum(int(np.prod(i.dims)) for i in model.graph.initializer)
    return GraphStats(len(model.graph.node), len(model.graph.initializer), n_params, dict(ops.most_common()))


def _dequantize(inits: dict[str, onnx.TensorProto], base: str, dqs: dict[str, onnx.NodeProto]) -> np.ndarray | None:
    """``<base>_quantized`` dequantized with the scale, zero point and axis of its DequantizeLinear
    (per tensor or per channel; ``<base>_scale``/``_zero_point`` when no node reads it)."""
    q = inits.get(f"{base}_quantized")
    if q is None:
        return None
    node = dqs.get(q.name)
    names = list(node.input[1:]) if node is not None else [f"{base}_scale", f"{base}_zero_point"]
    axis = next((a.i for a in node.attribute if a.name == "axis"), 1) if node is not None else 1
    w = numpy_helper.to_array(q).astype(np.float32)
    scale = numpy_helper.to_array(inits[names[0]]).astype(np.float32)
    zp_init = inits.get(names[1]) if len(names) > 1 else None
    zp = numpy_helper.to_array(zp_init).astype(np.float32) if zp_init is not None else np.zeros_like(scale)
    if scale.size > 1:  # per channel, along the node's axis
        shape = [1] * w.ndim
        shape[axis % w.ndim] = scale.size
        scale, zp = scale.reshape(shape), zp.reshape(shape)
    return (w - zp) * scale


def weights_from_graph(model: onnx.ModelProto, names: list[str]) -> tuple[dict[str, np.ndarray], list[str]]:
    """Recover the named PyTorch tensors from a graph's initializers (see the module docstring).

    Returns ``(arrays, missing)``: float arrays in float32 (fp16 graphs are widened, int8 weights
    dequantized) and the names that the graph does not carry in a recoverable form.
    """
    inits = {i.name: i for i in model.graph.initializer}
    axes = {n.input[0]: n for n in model.graph.node if n.op_type == "DequantizeLinear"}
    by_base: dict[str, str] = {}
    for n in inits:
        base = n.removesuffix("_quantized")
        tail = base.rsplit(TRANSPOSED, 1)[-1]
        if TRANSPOSED in base and tail.isdigit():  # skips the quantizer's <name>_scale / _zero_point
            by_base.setdefault(base.rsplit(TRANSPOSED, 1)[0], base)
    found: dict[str, np.ndarray] = {}
    missing: list[str] = []
    for name in names:
        arr: np.ndarray | None
        if name in inits:
            arr = numpy_helper.to_array(inits[name])
        elif (deq := _dequantize(inits, name, axes)) is not None:
            arr = deq
        elif name in by_base:
            stored = by_base[name]
            perm = [int(c) for c in stored.rsplit(TRANSPOSED, 1)[1]]
            t = numpy_helper.to_array(inits[stored]) if stored in inits else _dequantize(inits, stored, axes)
            arr = t.transpose(np.argsort(perm)) if t is not None else None
        else:
            arr = None
        if arr is None:
            missing.append(name)
            continue
        found[name] = arr.astype(np.float32) if arr.dtype in (np.float16, np.float64) else arr
    return found, missing


def gemm_to_matmul(model: onnx.ModelProto, params: set[str]) -> int:
    """Rewrite ``Gemm(A, param, C)`` (alpha = beta = 1, no transA) as ``MatMul`` + ``Add``, the weight
    stored as ``<param>`` or ``<param>:T10``; returns how many. Quantizers rewrite Gemm themselves
    but keep the name of a transposed weight, which would make the weight unrecoverable."""
    inits = {i.name: i for i in model.graph.initializer}
    nodes, count = [], 0
    for node in model.graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if (
            node.op_type != "Gemm"
            or node.input[1] not in params
            or node.input[1] not in inits
            or attrs.get("transA", 0)
            or attrs.get("alpha", 1.0) != 1.0
            or attrs.get("beta", 1.0) != 1.0
        ):
            nodes.append(node)
            continue
        weight = node.input[1]
        if attrs.get("transB", 0):
            name = f"{weight}{TRANSPOSED}10"
            if name not in inits:
                w = numpy_helper.to_array(inits[weight])
                inits[name] = numpy_helper.from_array(np.ascontiguousarray(w.T), name)
                model.graph.initializer.append(inits[name])
            weight = name
        has_bias = len(node.input) > 2 and node.input[2]
        product = f"{node.output[0]}_matmul" if has_bias else node.output[0]
        nodes.append(onnx.helper.make_node("MatMul", [node.input[0], weight], [product], name=f"{node.name}_matmul"))
        if has_bias:
            nodes.append(
                onnx.helper.make_node("Add", [product, node.input[2]], [node.output[0]], name=f"{node.name}_add")
            )
        count += 1
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    used = {n for node in model.graph.node for n in node.input}
    kept = [i for i in model.graph.initializer if i.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    return count

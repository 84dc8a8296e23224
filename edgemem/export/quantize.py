"""Static int8 (post-training, calibrated) of an exported f32 graph: NNCF or ONNX Runtime, QDQ format.

Both quantizers produce one ONNX graph with ``QuantizeLinear``/``DequantizeLinear`` pairs (weights
int8 per output channel, activations per tensor with scales from the calibration feeds), which
ONNX Runtime and OpenVINO turn into int8 kernels. What is quantized (``int8_nodes``): every GEMM or
convolution with a weight (Linear, patch embedding, pooling and compression convolutions), and the
attention's ``q . k`` (``attention_logit_gemms``): its operands are the scaled queries extended with
their relative-position terms and the keys extended with their one-hot position codes, all O(1),
so one scale each holds them (the memory mask is an add after the GEMM, not a column of it).
Measured on MeMViT-16: OpenVINO runs the fused attention's first GEMM in int8 and the step takes
0.82x the time of the int8 graph with a float ``q . k``; ``memvit_tiny_cuematch``'s logits over a
256-step real stream move 0.02-0.03 mean / 0.35-0.49 max from f32 (0.22-0.41 max with a float
``q . k``), top-1 unchanged (docs/EXPORT.md, "int8"). What stays float, and why:

- the ``softmax @ V`` GEMM: attention over hundreds of keys is mostly below one step of an 8-bit
  probability (1/255 unsigned, 1/127 signed). Measured with NNCF's u8 probabilities: MeMViT-16's
  OpenVINO int8 step 11% faster (the fused attention's second GEMM in int8), but
  ``memvit_tiny_cuematch``'s logits 2.1 max |Δ| from f32 instead of 0.14, beyond the int8
  verification tolerance (docs/BENCHMARKS.md, "int8"). NNCF's transformer type keeps this GEMM
  float by itself (its ``MULTIHEAD_ATTENTION_OUTPUT`` ignored pattern);
- the relative-position table products (small; quantized, OpenVINO still ran them in f32);
- softmax, layer norm, GELU and every elementwise op (quantizers leave them float; OpenVINO/ORT
  run them in f32 between int8 GEMMs);
- the memory concatenation and the state tensors: the graph's ``state_in``/``state_out`` stay f32
  (the contract), and the GEMM after the concatenation quantizes its input once, with one scale
  for memory and current tokens (quantizing each concat input separately gave two scales that
  OpenVINO's low-precision pass could not merge);
- the state arithmetic (``keep_state_float``): no value on the way from the last quantized GEMMs to
  an accumulating ``state_out`` is rounded to int8, whichever quantizer ran (CM's running sum adds
  each clip's contribution in f32). MeMViT's memory, written afresh from one clip's compression,
  is that compression's output as the quantizer left it (ONNX Runtime: on the int8 grid of its
  fused int8 convolution; NNCF: f32).
"""

from __future__ import annotations

import contextlib
import importlib
import io
import logging
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from edgemem.contract import STATE_IN, STATE_OUT
from edgemem.errors import UnsupportedError

QUANTIZERS = ("nncf", "ort")
_GEMMS = ("MatMul", "Gemm", "Conv")


def require(module: str, extra: str) -> Any:
    """Import an optional dependency or fail with one line naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise UnsupportedError(f"{module} is not installed: pip install 'edgemem[{extra}]'") from None


def attention_logit_gemms(model: onnx.ModelProto) -> set[str]:
    """Names of the attention's ``q . k`` GEMMs: MatMuls whose output reaches a ``Softmax`` directly
    or through one ``Add`` (the memory mask)."""
    readers: dict[str, list[onnx.NodeProto]] = {}
    for n in model.graph.node:
        for i in n.input:
            readers.setdefault(i, []).append(n)

    def to_softmax(tensor: str, adds: int) -> bool:
        for r in readers.get(tensor, []):
            if r.op_type == "Softmax" or (r.op_type == "Add" and adds and to_softmax(r.output[0], adds - 1)):
                return True
        return False

    return {n.name for n in model.graph.node if n.op_type == "MatMul" and to_softmax(n.output[0], 1)}


def int8_nodes(model: onnx.ModelProto) -> tuple[list[str], list[str]]:
    """(quantized, float) names of the GEMM/convolution nodes: those with a weight and the attention's
    ``q . k``, and the other GEMMs without a weight (``softmax @ V``, the relative-position table
    products; see the module docstring); every other node stays float too (``float_nodes``)."""
    inits = {i.name for i in model.graph.initializer}
    logits = attention_logit_gemms(model)
    quantized: list[str] = []
    kept: list[str] = []
    for n in model.graph.node:
        if n.op_type in _GEMMS:
            weighted = len(n.input) > 1 and n.input[1] in inits
            (quantized if weighted or n.name in logits else kept).append(n.name)
    return quantized, kept


def float_nodes(model: onnx.ModelProto) -> list[str]:
    """Every node that is not a quantized GEMM/convolution: NNCF would otherwise also quantize the
    inputs of residual ``Add``s and, fatally, of the state arithmetic (CM's running sum and count)."""
    quantized = set(int8_nodes(model)[0])
    return [n.name for n in model.graph.node if n.name not in quantized]


@contextmanager
def _quiet() -> Iterator[None]:
    """The quantizers log progress and advice at INFO/WARNING on their own and the root logger."""
    loggers = [logging.getLogger(n) for n in ("", "nncf")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def quantize_nncf(model: onnx.ModelProto, feeds: list[dict[str, np.ndarray]]) -> onnx.ModelProto:
    """NNCF post-training quantization of the ONNX graph: transformer model type (graphs with
    attention), symmetric
    activations (the performance preset: with asymmetric ones, OpenVINO's low-precision pass fails
    on the memory concatenation with a broadcast error), min-max ranges over every feed."""
    nncf = require("nncf", "int8")
    from nncf.quantization.advanced_parameters import (
        AdvancedQuantizationParameters,
        AdvancedSmoothQuantParameters,
        OverflowFix,
    )
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    kept = float_nodes(model)
    attention = any(n.op_type == "Softmax" for n in model.graph.node)
    # No SmoothQuant (it rescales weights by activation statistics and inserts per-channel Muls) and
    # no bias correction (it shifts biases to the calibration data: on a few clips, by more than the
    # bias itself): the graph keeps the model's weights, only rounded to int8.
    # Global min/max activation ranges: NNCF's default averages the per-sample extremes, which
    # clips what only late clips reach (a filled memory, CM's running sum): 15.6 -> 0.32 max |Δ|
    # of the logits of cm_slow_tiny_cuematch over 64 real clips.
    # Weights in 7 bits in every layer (NNCF's overflow fix; its default fixes the first layer only):
    # without VNNI, OpenVINO's int8 kernels saturate with 8-bit weights as ONNX Runtime's do
    # (``quantize_ort``). memvit_tiny_cuematch on an AVX2-only EPYC, OpenVINO: logits 1.64 max |Δ|
    # from f32 with the first layer fixed (the export's verification failed), 0.29 with every layer.
    advanced = AdvancedQuantizationParameters(
        smooth_quant_alphas=AdvancedSmoothQuantParameters(matmul=-1), disable_bias_correction=True,
        activations_range_estimator_params=RangeEstimatorParametersSet.MINMAX, overflow_fix=OverflowFix.ENABLE,
    )  # fmt: skip
    try:
        with _quiet():
            quantized = nncf.quantize(
                model, nncf.Dataset(feeds), model_type=nncf.ModelType.TRANSFORMER if attention else None,
                preset=nncf.QuantizationPreset.PERFORMANCE, subset_size=len(feeds),
                ignored_scope=nncf.IgnoredScope(names=kept, validate=False), advanced_parameters=advanced,
            )  # fmt: skip
    except Exception as e:  # NNCF raises plain exceptions on graphs it cannot handle
        raise UnsupportedError(f"NNCF int8 quantization failed: {_first_line(e)}") from None
    name_weight_quantizers(quantized, model)
    keep_state_float(quantized, int8_nodes(model)[0])
    return quantized


class _Feeds:
    """ONNX Runtime's CalibrationDataReader protocol over the recorded stream feeds."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]) -> None:
        self._it = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)


def quantize_ort(model: onnx.ModelProto, feeds: list[dict[str, np.ndarray]]) -> onnx.ModelProto:
    """ONNX Runtime static quantization, QDQ, int8 weights per channel and symmetric int8
    activations (zero point 0: what the TensorRT provider requires), min-max calibration; the
    weighted GEMMs and convolutions only.

    Weights use 7 bits (``reduce_range``: -64..64). On an x86 CPU without VNNI, ONNX Runtime's int8
    GEMM multiplies with ``VPMADDUBSW``, whose int16 sum of two u8 x s8 products saturates with 8-bit
    weights (255 x 127 x 2 > 32767); VNNI sums in int32. Measured on an AVX2-only EPYC:
    memvit_tiny_cuematch's logits 1.65 max |Δ| from f32 with 8-bit weights, 0.60 with 7. A graph is
    exported once and run on any CPU, so every graph gets 7 bits. Depthwise convolutions (MViT's
    pooling and compression) keep 8 bits, as NNCF leaves them: their kernels do not pair products,
    and 7-bit pooling weights doubled the logits' error (0.29 max |Δ| with 8 bits there, same CPU)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from edgemem.runtimes.int8_weights import depthwise_weights

    # softmax . V stays float (module docstring): with symmetric int8 probabilities (steps of 1/127)
    # memvit_tiny's logits were 3.4 max |Δ| from f32, 0.18 without
    gemms, kept = int8_nodes(model)
    with tempfile.TemporaryDirectory(prefix="edgemem-int8-") as tmp:
        src, dst = Path(tmp) / "f32.onnx", Path(tmp) / "int8.onnx"
        onnx.save_model(model, str(src))
        try:
            with _quiet():
                quantize_static(
                    str(src), str(dst), _Feeds(feeds), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                    op_types_to_quantize=list(_GEMMS), nodes_to_exclude=kept,
                    calibrate_method=CalibrationMethod.MinMax, reduce_range=True,
                    extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "TensorQuantOverrides": {
                        w: [{"quant_type": QuantType.QInt8, "symmetric": True, "reduce_range": False}]
                        for w in depthwise_weights(model)
                    }},
                )  # fmt: skip
        except Exception as e:  # the quantizer raises plain exceptions on graphs it cannot handle
            raise UnsupportedError(f"ONNX Runtime int8 quantization failed: {_first_line(e)}") from None
        quantized = onnx.load(str(dst))
    keep_logits_float(quantized, attention_logit_gemms(model))
    keep_state_float(quantized, gemms)
    return quantized


def keep_state_float(model: onnx.ModelProto, quantized: list[str]) -> int:
    """Make every node between the ``quantized`` GEMMs and the accumulating ``state_out`` outputs
    (``accumulating_states``) read f32 values.

    A QDQ quantizer puts one ``QuantizeLinear``/``DequantizeLinear`` pair on an activation and points
    *every* reader at the pair: ONNX Runtime's does so for the outputs of the GEMMs it quantizes and
    for inputs shared with float nodes, so CM's contribution ``k^T v`` (which feeds the running sum)
    was computed from int8-rounded ``k`` and ``v``, an error the sum keeps adding up. Walking back
    from each accumulating state output through the nodes that are not quantized GEMMs, each read of
    an activation pair is pointed back at the f32 tensor (the quantized readers keep the pair); pairs
    nobody reads any more are removed. A state written afresh each step (MeMViT's memory: the
    compression of one clip) keeps its pair: its rounding does not add up, and un-rounding it costs
    ONNX Runtime its fused int8 convolutions. Returns the reads changed."""
    g = model.graph
    inits = {i.name for i in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    stop = set(quantized)

    def float_source(t: str) -> str | None:
        return _float_source(producer, inits, t)

    stack = accumulating_states(model)
    seen: set[int] = set()
    changed = 0
    while stack:
        node = producer.get(stack.pop())
        if node is None or node.name in stop or id(node) in seen:
            continue
        seen.add(id(node))
        src = float_source(node.output[0])
        if src is not None:  # the state output itself is a pair's output (a quantized GEMM reads it)
            out = node.output[0]
            _unround_output(model, node, src)
            producer = {o: n for n in g.node for o in n.output}
            stack.append(out)
            changed += 1
            continue
        for i, t in enumerate(node.input):
            src = float_source(t)
            if src is not None:
                node.input[i] = t = src
                changed += 1
            stack.append(t)
    if changed:
        _drop_unread_qdq(model)
    return changed


_ACCUMULATE = ("Add", "Sub", "Sum")


def accumulating_states(model: onnx.ModelProto) -> list[str]:
    """The ``state_out`` outputs that add to their own previous value: on the way back from the
    output (through anything but a GEMM or convolution) an ``Add``/``Sub``/``Sum`` reads a value made
    from the matching ``state_in`` without a GEMM in between (CM's running sum and count; not
    MeMViT's memory, which a step shifts and overwrites)."""
    g = model.graph
    producer = {o: n for n in g.node for o in n.output}
    found = []
    for out in (o.name for o in g.output if o.name.startswith(STATE_OUT)):
        derived = {STATE_IN + out[len(STATE_OUT) :]}
        for n in g.node:  # ONNX graphs are topologically sorted
            if n.op_type not in _GEMMS and any(i in derived for i in n.input):
                derived.update(n.output)
        stack, seen = [out], set()
        while stack:
            node = producer.get(stack.pop())
            if node is None or node.op_type in _GEMMS or id(node) in seen:
                continue
            seen.add(id(node))
            if node.op_type in _ACCUMULATE and any(i in derived for i in node.input):
                found.append(out)
                break
            stack.extend(node.input)
    return found


def _float_source(producer: dict[str, onnx.NodeProto], inits: set[str], t: str) -> str | None:
    """The f32 tensor behind an activation Q -> DQ pair whose output is ``t``, else None."""
    dq = producer.get(t)
    if dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] in inits:
        return None
    q = producer.get(dq.input[0])
    return q.input[0] if q is not None and q.op_type == "QuantizeLinear" else None


def keep_logits_float(model: onnx.ModelProto, gemms: set[str]) -> int:
    """Point every read of an int8-rounded attention logit (a Q/DQ pair on the output of one of the
    ``q . k`` ``gemms``) back at the f32 logits: ONNX Runtime's quantizer puts one there, before the mask add and the softmax, and
    an 8-bit logit step shifts every probability. Returns the reads changed."""
    g = model.graph
    inits = {i.name for i in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    logits = {n.output[0] for n in g.node if n.name in gemms}
    changed = 0
    for node in g.node:
        for i, t in enumerate(node.input):
            src = _float_source(producer, inits, t)
            if src in logits:
                node.input[i] = src
                changed += 1
    if changed:
        _drop_unread_qdq(model)
    return changed


def _unround_output(model: onnx.ModelProto, dq: onnx.NodeProto, src: str) -> None:
    """Graph output ``out`` = DQ(Q(src)): the node making ``src`` makes ``out`` again, the pair quantizes
    ``out`` and its readers read the pair's output under a new name."""
    out, rounded = dq.output[0], dq.output[0] + "_DequantizeLinear_Output"
    for n in model.graph.node:
        n.input[:] = [rounded if t == out else out if t == src else t for t in n.input]
        n.output[:] = [out if t == src else t for t in n.output]
    dq.output[0] = rounded


def _drop_unread_qdq(model: onnx.ModelProto) -> None:
    """Remove the Q/DQ nodes whose outputs nobody reads, and their scales and zero points."""
    g = model.graph
    outputs = {o.name for o in g.output}
    dropped: set[str] = set()
    for op in ("DequantizeLinear", "QuantizeLinear"):
        read = {t for n in g.node for t in n.input} | outputs
        unread = [n for n in g.node if n.op_type == op and n.output[0] not in read]
        dropped.update(t for n in unread for t in n.input[1:])
        gone = {id(n) for n in unread}
        keep = [n for n in g.node if id(n) not in gone]
        del g.node[:]
        g.node.extend(keep)
    read = {t for n in g.node for t in n.input}
    inits = [i for i in g.initializer if i.name in read or i.name not in dropped]
    del g.initializer[:]
    g.initializer.extend(inits)


def name_weight_quantizers(quantized: onnx.ModelProto, original: onnx.ModelProto) -> int:
    """Rename each int8 weight (and its scale/zero point) after the f32 weight it replaces:
    ``<w>_quantized``, ``<w>_scale``, ``<w>_zero_point`` (ONNX Runtime's convention), so the graph
    keeps its weights recoverable (``graph.weights_from_graph``). Returns how many were renamed."""
    inits = {i.name: i for i in quantized.graph.initializer}
    before = {n.name: list(n.input) for n in original.graph.node}
    dq = {n.output[0]: n for n in quantized.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits}
    renames: dict[str, str] = {}
    for node in quantized.graph.node:
        for i, src in enumerate(node.input):
            if src not in dq or node.name not in before or i >= len(before[node.name]):
                continue
            weight = before[node.name][i]
            for slot, suffix in zip(dq[src].input, ("_quantized", "_scale", "_zero_point"), strict=False):
                if slot in inits and slot not in renames:
                    renames[slot] = weight + suffix
    taken = set(inits) - set(renames)
    renames = {a: b for a, b in renames.items() if b not in taken}
    for init in quantized.graph.initializer:
        init.name = renames.get(init.name, init.name)
    for node in quantized.graph.node:
        node.input[:] = [renames.get(n, n) for n in node.input]
    return sum(1 for b in renames.values() if b.endswith("_quantized"))

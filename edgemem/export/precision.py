"""fp16 graphs: fp16 compute behind the contract's fp32 I/O (int8: ``export.quantize``)."""

from __future__ import annotations

import contextlib
import io

import onnx

from edgemem.errors import UnsupportedError


def _first_line(e: Exception) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """Convert weights and compute to fp16; ``frames``, ``reset``, ``logits`` and every state tensor
    keep their contract dtypes (Casts at the graph boundary), so a runtime drives it unchanged.
    Initializers keep their names (weights stay recoverable, see ``graph.weights_from_graph``)."""
    import onnx_ir
    from onnxruntime.transformers.float16 import convert_float_to_float16

    try:
        with contextlib.redirect_stdout(io.StringIO()):
            converted = convert_float_to_float16(model, keep_io_types=True)
    except Exception as e:  # the converter raises plain exceptions on graphs it cannot handle
        raise UnsupportedError(f"fp16 conversion failed: {_first_line(e)}") from None
    ir_model = onnx_ir.serde.deserialize_model(converted)  # the converter appends boundary Casts last
    onnx_ir.passes.common.TopologicalSortPass()(ir_model)
    return onnx_ir.serde.serialize_model(ir_model)

"""Reading QDQ graphs in tests: where an int8 graph rounds values it should keep in f32."""

from __future__ import annotations

import onnx


def rounded_state_reads(model: onnx.ModelProto) -> list[str]:
    """Activation DequantizeLinear outputs read on the way back from a state output to the weighted
    (quantized) GEMMs: each is a value the state arithmetic took at int8 precision."""
    inits = {i.name for i in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}

    def dq(t: str, weight: bool) -> bool:
        n = producer.get(t)
        return n is not None and n.op_type == "DequantizeLinear" and (n.input[0] in inits) == weight

    stack = [o.name for o in model.graph.output if o.name.startswith("state_out.")]
    seen, found = set(), []
    while stack:
        t = stack.pop()
        if t in seen or t not in producer:
            continue
        seen.add(t)
        if dq(t, weight=False):
            found.append(t)
            continue
        node = producer[t]
        if node.op_type in ("MatMul", "Gemm", "Conv") and any(dq(i, weight=True) for i in node.input):
            continue  # an int8 GEMM: its inputs are meant to be int8, its output is f32
        stack.extend(node.input)
    return sorted(found)

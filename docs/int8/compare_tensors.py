"""Every float tensor of an int8 graph against the f32 graph it was quantized from (docs/EXPORT.md).

Both graphs run on ONNX Runtime, one step each, on the feeds of the f32 graph streamed over the
calibration videos with its state fed back (the feeds the quantizer calibrated on), so each step's
error is the int8 graph's own and not drift. Prints, per tensor both graphs have, in graph order:
the largest |int8 - f32| over the first --steps steps (the export check's 16 by default) and the
largest |f32|.

    python docs/int8/compare_tensors.py F32.onnx INT8.onnx DATA [--videos 16] [--steps 16] [--float-conv-outputs [NAME ...]]

--float-conv-outputs points the float readers of the named convolutions' output Q/DQ pairs (all
convolutions when no name follows) back at the float output before comparing: what ONNX Runtime's
quantizer rounds to int8 for its fused QLinearConv; --save PATH writes that graph (for `edgemem verify`).
"""

from __future__ import annotations

import argparse

import numpy as np
import onnx
import onnxruntime as ort

from edgemem.export.calibration import collect_feeds, load_calibration
from edgemem.export.quantize import _drop_unread_qdq, _float_source
from edgemem.runtimes.ort import OrtSession


def float_conv_outputs(model: onnx.ModelProto, names: list[str]) -> int:
    """Point the readers of the named (all, when empty) Conv outputs' Q/DQ pairs at the float output."""
    g = model.graph
    inits = {i.name for i in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    convs = {
        n.output[0] for n in g.node if n.op_type == "Conv" and (not names or n.name in names or n.output[0] in names)
    }
    changed = 0
    for n in g.node:
        for i, t in enumerate(n.input):
            if _float_source(producer, inits, t) in convs:
                n.input[i] = _float_source(producer, inits, t)
                changed += 1
    _drop_unread_qdq(model)
    return changed


def every_tensor(model: onnx.ModelProto) -> tuple[ort.InferenceSession, list[str]]:
    """A session whose outputs are the graph's outputs and every float tensor shape inference types."""
    m = onnx.shape_inference.infer_shapes(model)
    outputs = [o.name for o in m.graph.output]
    typed = {v.name: v for v in m.graph.value_info}
    for n in m.graph.node:
        for o in n.output:
            v = typed.get(o)
            if v is not None and o not in outputs and v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT:
                m.graph.output.append(v)
                outputs.append(o)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"]), outputs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("f32")
    p.add_argument("int8")
    p.add_argument("data")
    p.add_argument("--videos", type=int, default=16)
    p.add_argument("--steps", type=int, default=16)
    p.add_argument("--float-conv-outputs", nargs="*", default=None, metavar="NAME")
    p.add_argument("--save", default=None, metavar="PATH")
    a = p.parse_args()
    with OrtSession(a.f32, batch=1) as s:
        card = s.model_card
    feeds = collect_feeds(a.f32, load_calibration(a.data, card, a.videos), 1)[: a.steps]
    quantized = onnx.load(a.int8)
    if a.float_conv_outputs is not None:
        print(f"# {float_conv_outputs(quantized, a.float_conv_outputs)} reads of int8-rounded conv outputs made float")
        if a.save:
            onnx.save_model(quantized, a.save)
    ref, ref_names = every_tensor(onnx.load(a.f32))
    got, got_names = every_tensor(quantized)
    common = [n for n in ref_names if n in set(got_names)]
    err = dict.fromkeys(common, 0.0)
    top = dict.fromkeys(common, 0.0)
    for f in feeds:
        r = dict(zip(ref_names, ref.run(ref_names, f), strict=True))
        q = dict(zip(got_names, got.run(got_names, f), strict=True))
        for n in common:
            if r[n].shape == q[n].shape:
                err[n] = max(err[n], float(np.abs(r[n] - q[n]).max()))
                top[n] = max(top[n], float(np.abs(r[n]).max()))
    for n in common:
        print(f"{n:48s} max |d| {err[n]:.3g}  |f32| <= {top[n]:.3g}")


if __name__ == "__main__":
    main()

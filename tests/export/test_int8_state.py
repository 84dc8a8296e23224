"""int8 keeps the state arithmetic float: no int8-rounded value on the way from the last quantized GEMMs
to a ``state_out`` (CM's running sum, MeMViT's memory), whichever quantizer ran."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from qdq import rounded_state_reads

from edgemem.export.calibration import load_calibration
from edgemem.export.onnx import to_onnx
from edgemem.export.quantize import accumulating_states, keep_state_float, quantize_ort
from edgemem.models.registry import create_model

pytest.importorskip("onnxruntime.quantization", reason="int8 export needs onnxruntime's quantization tools")


def _toy_cm() -> onnx.ModelProto:
    """CM's online step in miniature: k = x Wk, v = x Wv, state_out.s = state_in.s + k^T v, and the
    new state read by a weighted GEMM (so the state output is itself an input a quantizer rounds)."""
    rng = np.random.default_rng(0)
    w = {n: numpy_helper.from_array(rng.standard_normal((8, 8)).astype(np.float32), n) for n in ("wk", "wv", "wo")}
    nodes = [
        helper.make_node("MatMul", ["x", "wk"], ["k"], name="k"),
        helper.make_node("MatMul", ["x", "wv"], ["v"], name="v"),
        helper.make_node("Transpose", ["k"], ["kt"], name="kt", perm=[0, 2, 1]),
        helper.make_node("MatMul", ["kt", "v"], ["c"], name="contribution"),
        helper.make_node("Add", ["state_in.s", "c"], ["state_out.s"], name="sum"),
        helper.make_node("MatMul", ["state_out.s", "wo"], ["o"], name="o"),
        helper.make_node("ReduceMean", ["o"], ["logits"], name="mean", axes=[1], keepdims=0),
    ]
    f32 = TensorProto.FLOAT
    graph = helper.make_graph(
        nodes, "toy_cm",
        [helper.make_tensor_value_info("x", f32, [1, 4, 8]), helper.make_tensor_value_info("state_in.s", f32, [1, 8, 8])],
        [helper.make_tensor_value_info("logits", f32, [1, 8]), helper.make_tensor_value_info("state_out.s", f32, [1, 8, 8])],
        initializer=list(w.values()),
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_ort_int8_keeps_the_running_sum_float() -> None:
    import onnxruntime as ort

    rng = np.random.default_rng(1)
    feeds = [{"x": rng.random((1, 4, 8), dtype=np.float32), "state_in.s": 10 * rng.random((1, 8, 8), dtype=np.float32)}
             for _ in range(8)]  # fmt: skip
    model = _toy_cm()
    q = quantize_ort(model, feeds)
    assert rounded_state_reads(q) == []
    producer = {o: n.op_type for n in q.graph.node for o in n.output}
    assert producer["state_out.s"] == "Add" and producer["c"] == "MatMul"
    assert {"k", "v", "o"} <= {
        n.name for n in q.graph.node if any(i.endswith("_DequantizeLinear_Output") for i in n.input)
    }
    # numerically: the new state is the old one plus k^T v of the (f32) outputs of the int8 GEMMs
    k_v = [n.output[0] for n in q.graph.node if n.name in ("k", "v")]
    q.graph.output.extend([helper.make_tensor_value_info(t, TensorProto.FLOAT, None) for t in k_v])
    sess = ort.InferenceSession(q.SerializeToString(), providers=["CPUExecutionProvider"])
    k, v, s = sess.run([*k_v, "state_out.s"], feeds[0])
    np.testing.assert_allclose(s, feeds[0]["state_in.s"] + k.transpose(0, 2, 1) @ v, rtol=1e-5, atol=1e-5)


def test_keep_state_float_changes_nothing_without_pairs_on_the_state_path() -> None:
    model = _toy_cm()
    before = model.SerializeToString()
    assert keep_state_float(model, ["k", "v", "o"]) == 0 and model.SerializeToString() == before


@pytest.mark.parametrize("quantizer", ["ort", "nncf"])
def test_cm_int8_graph_adds_f32_contributions(data: Path, tmp_path: Path, quantizer: str) -> None:
    if quantizer == "nncf":
        pytest.importorskip("nncf", reason="the nncf quantizer needs nncf: pip install 'edgemem[int8]'")
    torch.manual_seed(0)
    model = create_model("cm_slow_tiny", num_classes=2).eval()
    cal = load_calibration(data, model.model_card(), videos=2)
    out = tmp_path / "cm.onnx"
    to_onnx(model, out, precision="int8", calibration=cal, quantizer=quantizer, verify=False)
    q = onnx.load(str(out))
    assert "QuantizeLinear" in {n.op_type for n in q.graph.node}
    assert sorted(accumulating_states(q)) == ["state_out.cm.count", "state_out.cm.sum"]
    assert rounded_state_reads(q) == []

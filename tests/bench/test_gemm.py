"""``python -m edgemem.bench.gemm``: the int8-vs-f32 Linear-layer probe."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest

from edgemem.bench import gemm
from edgemem.runtimes.availability import check

SMALL = (64, 32, 48)


@pytest.mark.parametrize("variant", [*gemm.VARIANTS, *gemm.OPENVINO_ONLY])
def test_linear_graphs_compute_the_same_product(variant: str) -> None:
    """Each variant is the same Linear layer: int8 within its rounding of the f32 product."""
    import onnxruntime as ort

    model = gemm.linear_graph(SMALL, variant)
    onnx.checker.check_model(model)
    x = np.random.default_rng(3).standard_normal((1, SMALL[0], SMALL[1])).astype(np.float32)
    ref_model = onnx.numpy_helper.to_array(gemm.linear_graph(SMALL, "f32").graph.initializer[0])
    conv = variant in gemm.CONV_VARIANTS
    feed = {"x": x.transpose(0, 2, 1)[..., None].copy() if conv else x}
    if variant == gemm.ONEDNN_F32:
        feed["w"] = ref_model
    y = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)[0]
    if conv:  # [1, N, M, 1] -> [1, M, N]
        y = y[..., 0].transpose(0, 2, 1)
    ref = x @ ref_model
    err = np.abs(y - ref).max()
    assert err < (1e-4 if "f32" in variant else 0.15), err
    assert np.abs(ref).max() > 1.0  # the comparison is not vacuous


def test_shapes_come_from_the_graph(tmp_path: Path) -> None:
    """A graph's Linear layers (f32 or dequantized weights) are found with their token counts."""
    from onnx import TensorProto, helper, numpy_helper

    w1 = numpy_helper.from_array(np.ones((8, 16), np.float32), "w1")
    w2q = numpy_helper.from_array(np.ones((16, 4), np.int8), "w2q")
    s = numpy_helper.from_array(np.array(0.1, np.float32), "s")
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"]),
        helper.make_node("DequantizeLinear", ["w2q", "s"], ["w2"]),
        helper.make_node("MatMul", ["h", "w2"], ["y"]),
        helper.make_node("MatMul", ["x", "x_t"], ["z"]),  # not a Linear layer: no constant weight
    ]
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 5, 8]),
         helper.make_tensor_value_info("x_t", TensorProto.FLOAT, [2, 8, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("z", TensorProto.FLOAT, None)],
        [w1, w2q, s],
    )  # fmt: skip
    path = tmp_path / "g.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    assert gemm.graph_linear_shapes(path) == Counter({(10, 8, 16): 1, (10, 16, 4): 1})


def test_command_reports_rows_totals_and_kernels(capsys: pytest.CaptureFixture[str]) -> None:
    runtimes = "ort-cpu,openvino" if check("openvino").available else "ort-cpu"
    assert gemm.main(["--runtimes", runtimes, "--repeats", "1"]) == 0
    result = json.loads(capsys.readouterr().out)
    n_shapes = len(gemm.DEFAULT_SHAPES)
    ov = "openvino" in runtimes
    per_shape = len(gemm.VARIANTS) * 2 + len(gemm.OPENVINO_ONLY) if ov else len(gemm.VARIANTS)
    assert len(result["rows"]) == n_shapes * per_shape
    assert all(r["cpu_ms_p50"] > 0 and r["gop_s"] > 0 for r in result["rows"])
    total = result["linear_layers_total"]["ort-cpu"]
    assert total["int8_speedup"] == pytest.approx(
        total["f32_ms"] / min(total["int8-u8_ms"], total["int8-s8_ms"]), rel=0.01
    )
    if ov:
        kernels = {r["variant"]: r["kernel"] for r in result["rows"] if r["runtime"] == "openvino"}
        assert "FullyConnected" in kernels["f32"] and "MatMul" in kernels[gemm.ONEDNN_F32]
        assert all("Convolution" in kernels[v] for v in gemm.CONV_VARIANTS)
        ov_total = result["linear_layers_total"]["openvino"]
        assert "int8_speedup_vs_onednn_f32" in ov_total
        assert ov_total["conv1x1_int8_speedup"] == pytest.approx(
            ov_total["conv1x1-f32_ms"] / ov_total["conv1x1-int8-u8_ms"], rel=0.01
        )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--runtimes", "tensorrt"], "unknown"),
        (["--repeats", "0"], ">= 1"),
        (["--graph", "/nonexistent.onnx"], "no such file"),
    ],
)
def test_bad_input_is_one_line(args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert gemm.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


def test_a_graph_that_is_not_onnx_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_text("not a graph")
    assert gemm.main(["--graph", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert "cannot read" in err and "\n" not in err

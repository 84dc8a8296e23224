"""Calibrated static int8: real-clip calibration with memory, OpenVINO int8 kernels, ORT QDQ agreement,
``edgemem eval GRAPH.onnx``, and the errors of bad calibration input."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from qdq import rounded_state_reads

from edgemem.cli import main
from edgemem.contract import read_contract
from edgemem.errors import InputError, UnsupportedError
from edgemem.export.calibration import as_stream, collect_feeds, load_calibration, synthetic_calibration
from edgemem.export.onnx import to_onnx
from edgemem.export.quantize import accumulating_states, attention_logit_gemms
from edgemem.export.verify import verify_graph
from edgemem.models.registry import create_model
from edgemem.runtimes import open_session
from edgemem.runtimes.availability import check
from edgemem.train.evaluate import add_cues, evaluate_model
from edgemem.train.evaluate_graph import evaluate_graph

pytest.importorskip("nncf", reason="int8 export needs nncf: pip install 'edgemem[int8]'")


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    return set(next((ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), []))


def _assert_qk_int8(kernels: dict[str, dict[str, int]]) -> None:
    """The attention's ``q . k`` (one per block of memvit_tiny) runs in int8: inside the fused attention
    where OpenVINO fuses it (int8 MHA with AVX-512), else as an int8 MatMul (an AVX2-only CPU: there
    OpenVINO fuses the f32 attention only)."""
    if "avx512f" in _cpu_flags():
        assert set(kernels["MHA"]) == {"i8"}
    else:
        assert "MHA" not in kernels and kernels["MatMul"].get("i8") == 4


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("memvit_tiny", num_classes=2).eval()


@pytest.fixture(scope="module")
def graphs(data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("int8")
    model = _model()
    cal = load_calibration(data, model.model_card(), videos=4)
    out = {"f32": d / "f32.onnx", "nncf": d / "nncf.onnx", "ort": d / "ort.onnx"}
    to_onnx(model, out["f32"], verify=False)
    for q in ("nncf", "ort"):
        to_onnx(model, out[q], precision="int8", calibration=cal, quantizer=q, verify=False)
    return out


def test_calibration_streams_clips_with_memory(data: Path, graphs: dict[str, Path]) -> None:
    cal = load_calibration(data, _model().model_card(), videos=2)
    assert len(cal.videos) == 2 and all(len(v) == 4 for v in cal.videos)  # 4 clips per cue-match video
    feeds = collect_feeds(graphs["f32"], cal, batch=1)
    assert len(feeds) == 8 and [bool(f["reset"][0]) for f in feeds] == [True, False, False, False] * 2
    valid = [float(f["state_in.mem.valid"].sum()) for f in feeds]
    assert valid[0] == 0 and valid[3] > 0  # later clips see a filled memory, as in deployment
    assert np.abs(feeds[2]["state_in.mem.0.k"]).max() > 0


def test_calibration_without_a_usable_clip_says_why(tmp_path: Path) -> None:
    (tmp_path / "junk.mp4").write_bytes(b"\x00garbage" * 64)
    with pytest.raises(InputError, match=r"--calib .*: no usable calibration clip \(.*junk\.mp4"):
        load_calibration(tmp_path, _model().model_card(), videos=1)


def _dequantized_operands(proto: onnx.ModelProto) -> tuple[list[int], list[int]]:
    """How many operands come from a DequantizeLinear: of each ``q . k`` GEMM, of each MatMul
    reading a Softmax (``softmax . V``)."""
    producer = {o: n.op_type for n in proto.graph.node for o in n.output}
    qk = attention_logit_gemms(proto)
    nodes = [n for n in proto.graph.node if n.op_type == "MatMul"]
    count = [sum(producer.get(i) == "DequantizeLinear" for i in n.input) for n in nodes]
    return (
        [c for n, c in zip(nodes, count, strict=True) if n.name in qk],
        [c for n, c in zip(nodes, count, strict=True) if any(producer.get(i) == "Softmax" for i in n.input)],
    )


def test_int8_weights_use_7_bits_so_cpus_without_vnni_do_not_saturate(
    graphs: dict[str, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # without VNNI, int8 GEMMs sum two u8 x s8 products in int16 (VPMADDUBSW): 255 x 127 x 2 overflows,
    # 255 x 64 x 2 does not. Measured on an AVX2-only CPU: 8-bit weights cost 1.6 max |Δ| of the logits
    from edgemem import hardware
    from edgemem.runtimes.int8_weights import depthwise_weights, widest_gemm_weight

    for q in ("nncf", "ort"):
        proto = onnx.load(str(graphs[q]))
        assert 32 < widest_gemm_weight(proto) <= 64, q
        # depthwise convolutions (pooling, compression) do not pair products: they keep 8 bits
        inits = {i.name: onnx.numpy_helper.to_array(i) for i in proto.graph.initializer}
        depthwise = [np.abs(inits[w].astype(np.int32)).max() for w in depthwise_weights(proto)]
        assert len(depthwise) == 20 and min(depthwise) > 64, (q, depthwise)
    # a graph with 8-bit weights (exported before, or by another tool) is refused on such a CPU only
    proto = onnx.load(str(graphs["ort"]))
    inits = {i.name: i for i in proto.graph.initializer}
    dq = next(n for n in proto.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits
              and inits[n.input[0]].data_type == onnx.TensorProto.INT8 and len(inits[n.input[0]].dims) == 2)  # fmt: skip
    w = onnx.numpy_helper.to_array(inits[dq.input[0]]).astype(np.int32) * 2
    inits[dq.input[0]].CopyFrom(onnx.numpy_helper.from_array(np.clip(w, -127, 127).astype(np.int8), dq.input[0]))
    wide = tmp_path / "wide.onnx"
    onnx.save(proto, str(wide))
    assert widest_gemm_weight(proto) == 127
    runtimes = ["ort-cpu"] + (["openvino"] if check("openvino").available else [])
    monkeypatch.setattr(hardware, "int8_gemm", lambda flags=None: "avx2")
    for runtime in runtimes:
        with pytest.raises(UnsupportedError, match=r"wide\.onnx: int8 weights up to 127 saturate .* without VNNI"):
            open_session(wide, runtime)
        open_session(graphs["ort"], runtime).close()  # 7-bit weights: runs
    # edgemem serve start checks the CPU models of the repository it would serve (Triton's ORT backend)
    from edgemem.serve.commands import refuse_saturating_repository
    from edgemem.serve.repository import write_repository

    write_repository([wide, graphs["ort"]], tmp_path / "repo", names=["wide", "narrow"])
    with pytest.raises(UnsupportedError, match=r"^model\.onnx: .* of Triton model 'wide' on this CPU without VNNI"):
        refuse_saturating_repository(tmp_path / "repo")
    monkeypatch.setattr(hardware, "int8_gemm", lambda flags=None: "vnni")
    refuse_saturating_repository(tmp_path / "repo")
    for runtime in runtimes:
        open_session(wide, runtime).close()


def test_int8_graph_keeps_contract_and_records_calibration(graphs: dict[str, Path]) -> None:
    for q in ("nncf", "ort"):
        # q.k reads int8 operands and writes f32 logits (found only where its output reaches the
        # softmax unrounded: 4 blocks); softmax.V reads the f32 probabilities (8-bit probabilities
        # cost accuracy)
        assert _dequantized_operands(onnx.load(str(graphs[q]))) == ([2] * 4, [0] * 4)
        c = read_contract(graphs[q])
        assert c.export["precision"] == "int8" and c.export["quantizer"] == q
        assert c.export["calibration"]["videos"] == 4 and c.export["calibration"]["clips"] == 16
        assert c.frames.dtype == "float32" and all(s.dtype == "float32" for s in c.state)
        proto = onnx.load(str(graphs[q]))
        ops = {n.op_type for n in proto.graph.node}
        assert {"QuantizeLinear", "DequantizeLinear"} <= ops and "MatMulInteger" not in ops
        # the memory is written afresh each step, from the compression's output as the quantizer
        # left it: NNCF's f32, ORT's int8 grid (its int8 convolutions stay fused; nothing adds up)
        assert accumulating_states(proto) == []
        assert (rounded_state_reads(proto) == []) == (q == "nncf")


@pytest.mark.parametrize("runtime", ["openvino", "openvino-stateful"])
def test_openvino_runs_int8_kernels(graphs: dict[str, Path], runtime: str) -> None:
    if not check(runtime).available:
        pytest.skip(check(runtime).detail)
    if "avx2" not in _cpu_flags():
        pytest.skip("OpenVINO's CPU int8 kernels need AVX2 (VNNI/AVX-512 only make them faster)")
    with open_session(graphs["nncf"], runtime) as s:
        kernels = s.kernel_precisions()
    fc = kernels["FullyConnected"]
    assert fc.get("i8", 0) + fc.get("u8", 0) >= 20  # every Linear of the 4 blocks runs an int8 kernel
    _assert_qk_int8(kernels)  # softmax.V stays float in the graph (below)
    with open_session(graphs["f32"], runtime) as s:
        assert set(s.kernel_precisions()["FullyConnected"]) == {"f32"}


def test_eval_and_verify_show_the_compiled_kernels(data: Path, graphs: dict[str, Path], capsys, monkeypatch) -> None:
    if not check("openvino").available:
        pytest.skip(check("openvino").detail)
    if "avx2" not in _cpu_flags():
        pytest.skip("OpenVINO's CPU int8 kernels need AVX2 (VNNI/AVX-512 only make them faster)")
    assert main(["eval", str(graphs["ort"]), "--data", str(data), "--runtime", "openvino", "--json"]) == 0
    fc = json.loads(capsys.readouterr().out)["kernel_precisions"]["FullyConnected"]
    assert fc.get("i8", 0) + fc.get("u8", 0) >= 20
    assert main(["eval", str(graphs["ort"]), "--data", str(data), "--runtime", "ort-cpu", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["kernel_precisions"] is None  # ONNX Runtime does not say
    report = verify_graph(graphs["ort"], _model(), runtimes=("openvino-stateful",), clips=2, boundaries=0)
    assert report.runtimes[0].kernels["FullyConnected"] == fc and "[I]   compiled kernels: " in report.format()
    # an int8 graph compiled without a single int8 kernel is said so, not passed over
    from edgemem.runtimes.openvino import OpenVinoSession

    monkeypatch.setattr(OpenVinoSession, "kernel_precisions", lambda self: {"FullyConnected": {"f32": 26}})
    assert main(["eval", str(graphs["ort"]), "--data", str(data), "--runtime", "openvino"]) == 0
    out, err = capsys.readouterr()
    assert "compiled kernels: FullyConnected f32 26" in out and "without any int8 kernel" in err
    report = verify_graph(graphs["ort"], _model(), runtimes=("openvino",), clips=2, boundaries=0)
    assert "[W]   compiled kernels: FullyConnected f32 26 (no int8 kernel)" in report.format()


def test_verify_takes_shipped_weights_by_name(graphs: dict[str, Path], capsys) -> None:
    args = ["verify", str(graphs["f32"]), "--clips", "2", "--boundaries", "0"]
    assert main(args) == 0  # the graph's own (random) weights
    assert main([*args, "--checkpoint", "memvit_tiny_cuematch"]) == 1  # the trained ones: another model
    assert "[E] FAILED" in capsys.readouterr().out
    assert main([*args, "--checkpoint", "no_such_weights"]) == 2


def test_verify_streams_real_clips_with_the_default_length(data: Path, graphs: dict[str, Path], capsys) -> None:
    # --data without --clips: 16 steps at most, as without --data (it raised a TypeError)
    assert main(["verify", str(graphs["f32"]), "--data", str(data), "--runtimes", "ort-cpu", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["steps"] == 16


def test_ort_static_int8_agrees_with_f32_over_a_stream(data: Path, graphs: dict[str, Path]) -> None:
    model = _model()
    stream = as_stream(load_calibration(data, model.model_card(), videos=4), batch=1, clips=24)
    report = verify_graph(graphs["ort"], model, runtimes=("ort-cpu",), stream=stream)
    logits = report.runtimes[0].outputs[0]
    assert report.steps == 16 and logits.top1_agreement >= 0.9
    assert 0 < logits.max_abs < 0.5


def test_eval_graph_matches_the_checkpoint_protocol(data: Path, graphs: dict[str, Path], capsys, tmp_path) -> None:
    import csv

    from edgemem.data.datasets import VideoDir

    ref = evaluate_model(_model(), "memvit", VideoDir(data, num_classes=2).split("val"), predictions=True)
    add_cues(ref, VideoDir(data))  # what evaluate_checkpoint adds: the synthetic set's cue colours
    got = evaluate_graph(graphs["f32"], data, runtime="ort-cpu", predictions=True)
    assert got["videos"] == ref["videos"] == 2 and got["top1"] == ref["top1"] and got["top5"] == ref["top5"]
    for key in ("clip_top1_by_position", "per_class_top1", "per_class_videos", "confusions", "predictions"):
        assert got[key] == ref[key], key
    csv_path = tmp_path / "int8.csv"
    args = ["eval", str(graphs["nncf"]), "--data", str(data), "--runtime", "ort-cpu", "--json"]
    assert main([*args, "--predictions", str(csv_path)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["graph_precision"] == "int8" and out["videos"] == 2 and out["scheme"].startswith("streamed")
    rows = list(csv.DictReader(csv_path.open()))
    assert [r["path"] for r in rows] == [p["path"] for p in ref["predictions"]]
    assert sum(int(r["correct"]) for r in rows) / 2 == out["top1"] and "predictions" not in out
    assert main(["eval", str(graphs["f32"]), "--data", str(data), "--runtime", "ort-cpu", "--precision", "bf16"]) == 2
    # --precision names what runs: the int8 graph's own is accepted, another one is refused, not ignored
    assert main(["eval", str(graphs["ort"]), "--data", str(data), "--precision", "int8", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["runtime_precision"] == "int8"
    assert main(["eval", str(graphs["ort"]), "--data", str(data), "--runtime", "ort-cpu", "--precision", "f32"]) == 2
    assert capsys.readouterr().err.strip() == (
        "edgemem eval: error: --precision f32 on ort-cpu needs a graph exported in f32, this one is int8"
    )
    assert main(["eval", str(graphs["f32"]), "--data", str(data), "--precision", "int8"]) == 2
    assert "export one with --precision int8" in capsys.readouterr().err
    assert main(["eval", str(data), "--data", str(data), "--runtime", "openvino"]) == 2  # not a graph
    assert "only apply to an exported GRAPH.onnx" in capsys.readouterr().err
    refused = (  # options a graph cannot honour are refused, not ignored
        (["--views", "2"], "--views applies to memory-less graphs"),
        (["--batch-size", "4"], "--batch-size: checkpoints only"),
        (["--views", "0"], "--views must be >= 1, got 0"),
    )
    for extra, msg in refused:
        assert main(["eval", str(graphs["f32"]), "--data", str(data), *extra]) == 2, extra
        assert msg in capsys.readouterr().err


def test_int8_with_bf16_for_what_stays_float(data: Path, graphs: dict[str, Path], capsys, monkeypatch) -> None:
    """``--precision int8+bf16``: the int8 graph on OpenVINO with a bf16 hint, so its int8 kernels stay
    and the float remainder (here the relative-position MatMuls) runs bf16; refused where it cannot run."""
    from edgemem import hardware

    base = ["eval", str(graphs["nncf"]), "--data", str(data), "--precision", "int8+bf16"]
    assert main([*base, "--runtime", "ort-cpu"]) == 2
    assert "no bf16 mode" in capsys.readouterr().err
    assert (
        main(["eval", str(graphs["f32"]), "--data", str(data), "--precision", "int8+bf16", "--runtime", "openvino"])
        == 2
    )
    assert "needs a graph exported in int8, this one is f32" in capsys.readouterr().err
    if not check("openvino").available:
        pytest.skip(check("openvino").detail)
    caps = hardware.openvino_capabilities() or frozenset()
    with monkeypatch.context() as m:
        m.setattr(hardware, "openvino_capabilities", lambda device="CPU": caps - {"BF16"})
        assert main([*base, "--runtime", "openvino"]) == 2
        err = capsys.readouterr().err.strip()
        assert "int8+bf16" in err and "BF16" in err and len(err.splitlines()) == 1
    if "BF16" not in caps:
        pytest.skip("this CPU has no bf16 in OpenVINO (AVX512-BF16 or AMX): int8+bf16 cannot run here")
    for runtime in ("openvino", "openvino-stateful"):
        assert main([*base, "--runtime", runtime, "--json"]) == 0
        out = json.loads(capsys.readouterr().out)
        assert out["graph_precision"] == "int8" and out["runtime_precision"] == "int8+bf16"
        kernels = out["kernel_precisions"]
        assert set(kernels["FullyConnected"]) <= {"i8", "u8"} and set(kernels["MHA"]) == {"i8"}
        assert set(kernels["MatMul"]) == {"bf16"}  # f32 under the int8 graph's default f32 hint
        assert main([*base[:-2], "--runtime", runtime, "--json"]) == 0
        own = json.loads(capsys.readouterr().out)
        assert set(own["kernel_precisions"]["MatMul"]) == {"f32"} and own["top1"] == out["top1"]


def test_roundrobin_runs_each_graph_at_the_precision_asked(graphs: dict[str, Path], capsys) -> None:
    from edgemem.bench.roundrobin import main as roundrobin_main

    if not check("openvino").available:
        pytest.skip(check("openvino").detail)
    # a precision the graph cannot run is refused, not run as the graph's own
    assert roundrobin_main(["--graph", f"x={graphs['f32']}:openvino:int8", "--rounds", "1"]) == 2
    assert "needs a graph exported in int8, this one is f32" in capsys.readouterr().err
    specs = [f"f32={graphs['f32']}:openvino", f"int8={graphs['nncf']}:openvino-stateful"]
    assert roundrobin_main([*(a for s in specs for a in ("--graph", s)), "--rounds", "1", "--threads", "1"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert {k: v["precision"] for k, v in result["contenders"].items()} == {"f32": "f32", "int8": "int8"}
    if "avx2" in _cpu_flags():  # OpenVINO's CPU int8 kernels need AVX2
        _assert_qk_int8(result["openvino_kernel_precisions"]["int8"])


def test_bad_calibration_input_exits_2(data: Path, tmp_path: Path, capsys) -> None:
    out = str(tmp_path / "x.onnx")
    (tmp_path / "list.txt").write_text("not-a-video\n")
    (tmp_path / "broken.mp4").write_bytes(b"garbage")
    (tmp_path / "empty").mkdir()
    cases = [
        ["--precision", "int8"],  # no --calib
        ["--precision", "int8", "--calib", str(tmp_path / "missing")],
        ["--precision", "int8", "--calib", str(tmp_path / "list.txt")],
        ["--precision", "int8", "--calib", str(tmp_path / "broken.mp4")],
        ["--precision", "int8", "--calib", str(tmp_path / "empty")],
        ["--precision", "int8", "--calib", str(data), "--calib-videos", "0"],
        ["--precision", "int8", "--calib", "random", "--calib-videos", "0"],  # not the default in disguise
        ["--calib", str(data)],  # calibration without --precision int8 is not silently ignored
    ]
    for extra in cases:
        assert main(["export", "memvit_tiny", "--out", out, *extra]) == 2, extra
        assert capsys.readouterr().err.strip().splitlines()[-1].startswith("edgemem export: error:")
    assert not list(tmp_path.glob("x.onnx*")) and not list(tmp_path.glob(".x.onnx*"))


def test_missing_nncf_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setitem(sys.modules, "nncf", None)  # import nncf -> ImportError
    assert main(["export", "memvit_tiny", "--out", str(tmp_path / "x.onnx"), "--precision", "int8", "--calib",
                 "random", "--no-verify"]) == 2  # fmt: skip
    assert (
        capsys.readouterr().err.strip() == "edgemem export: error: nncf is not installed: pip install 'edgemem[int8]'"
    )
    assert not list(tmp_path.iterdir())


def test_random_calibration_is_labelled(tmp_path: Path) -> None:
    cal = synthetic_calibration((3, 8, 32, 32), videos=2, clips=3)
    assert cal.describe() == {"source": "random", "videos": 2, "clips": 6}


def test_an_int8_graph_without_its_export_record_is_still_int8(graphs: dict[str, Path], tmp_path: Path) -> None:
    """A graph quantized outside ``edgemem export`` (here: the record removed) is read as int8 from its
    ops, so verify, eval and stream use the int8 tolerances and precision, not the f32 ones."""
    from edgemem.contract import META_EXPORT
    from edgemem.precision import Precision, of_graph

    f32 = read_contract(graphs["f32"])
    assert of_graph(f32.export, f32.quantized) == Precision.F32
    for q in ("nncf", "ort"):
        proto = onnx.load(str(graphs[q]))
        kept = [p for p in proto.metadata_props if p.key != META_EXPORT]
        del proto.metadata_props[:]
        proto.metadata_props.extend(kept)
        c = read_contract(proto)
        assert c.export == {} and c.quantized and of_graph(c.export, c.quantized) == Precision.INT8


def test_int8_export_that_fails_its_check_says_what_and_writes_nothing(data: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "int8.onnx"
    argv = ["export", "memvit_tiny", "--random-weights", "--out", str(out), "--precision", "int8", "--calib", str(data),
            "--calib-videos", "1", "--clips", "2", "--atol", "0", "--state-atol", "0"]  # fmt: skip
    assert main(argv) == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("edgemem export: error: verification failed (ort-cpu: logits ")
    assert "state_out.mem.0.k" in last and "--quantizer" in last and "--state-atol" in last
    assert not out.exists() and list(tmp_path.iterdir()) == []

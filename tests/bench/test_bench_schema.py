"""Results schema, statistics and precision mapping of the benchmark harness (no models, no timing)."""

from __future__ import annotations

import json

import pytest

from edgemem import hardware
from edgemem.bench.schema import (
    SCHEMA_VERSION,
    Cell,
    device_tag,
    empty_result,
    machine_info,
    read_results,
    result_filename,
    validate_result,
    write_result,
)
from edgemem.bench.stats import derive_rates, latency_summary, merge_repeats
from edgemem.errors import EdgememError, UnsupportedError
from edgemem.runtimes.precisions import graph_precision, session_options

CPU = {"cpu": "AMD EPYC 7B13 64-Core Processor", "cores": 2, "cores_usable": 2, "gpus": [], "hostname": "a"}
GPU = {**CPU, "gpus": [{"name": "NVIDIA H100 80GB HBM3", "memory_mb": 81559.0, "driver": "550"}], "hostname": "b"}


def ok_result(p50: float = 10.0, machine: dict | None = None, **cell: object) -> dict:
    c = Cell(**{"model": "m", "runtime": "ort-cpu", **cell})
    r = empty_result(c, machine or CPU, status="ok")
    r["latency_ms"] = {**latency_summary([p50, p50 + 2, p50 + 4]), "first": 3 * p50, "reset": p50}
    r.update(clip_seconds=2.0, gflops_step=5.0, temporal_support={"clips": 1, "frames": 16, "seconds": 2.0})
    r.update(peak_rss_mb=100.0, state_bytes=0)
    derive_rates(r)
    return r


def test_machine_info_has_what_a_merged_report_needs():
    m = machine_info()
    for key in ("cpu", "cores", "gpus", "libraries", "date", "python"):
        assert key in m
    assert m["libraries"]["numpy"]
    assert "CPUExecutionProvider" in m["onnxruntime_providers"]  # which ONNX Runtime build imported
    json.dumps(m)  # serialisable


def test_report_names_the_onnxruntime_providers_of_each_machine():
    from edgemem.bench.report import machines_markdown

    with_providers = {**CPU, "onnxruntime_providers": ["CUDAExecutionProvider", "CPUExecutionProvider"]}
    line = machines_markdown([ok_result(machine=with_providers) | {"device": "cpu-x"}])
    assert "ORT providers: CUDAExecutionProvider, CPUExecutionProvider" in line
    assert "ORT providers" not in machines_markdown([ok_result() | {"device": "cpu-x"}])  # older records have none


def test_device_tag_names_cpu_or_gpu():
    assert device_tag("ort-cpu", CPU) == "cpu-amd-epyc-7b13-2c"
    assert device_tag("ort-cuda", GPU) == "nvidia-h100-80gb-hbm3"
    assert device_tag("ort-cpu", GPU).startswith("cpu-")  # a CPU runtime on a GPU machine is a CPU row


def test_result_file_name_says_cell_runtime_precision_device():
    r = ok_result(precision="bf16", runtime="openvino", frame_scale=1)
    assert result_filename(r) == "m-fs1-openvino-bf16-b1-cpu-amd-epyc-7b13-2c.json"


def test_validate_rejects_foreign_or_broken_results():
    good = ok_result()
    assert validate_result(good) is good
    with pytest.raises(EdgememError, match="schema_version"):
        validate_result({**good, "schema_version": SCHEMA_VERSION + 1})
    bad = dict(good)
    del bad["peak_rss_mb"]
    with pytest.raises(EdgememError, match="peak_rss_mb"):
        validate_result(bad)
    with pytest.raises(EdgememError, match="status"):
        validate_result({**good, "status": "great"})
    with pytest.raises(EdgememError, match="p50"):
        validate_result({**good, "latency_ms": {**good["latency_ms"], "p50": None}})


def test_old_precision_spelling_reads_as_today(tmp_path):
    """A results file written with an old spelling (``fp32``) reads as ``f32``; nonsense is refused."""
    import json

    old = ok_result(runtime="ort-cpu")
    old["precision"] = "fp32"
    (tmp_path / "old.json").write_text(json.dumps(old))
    assert [r["precision"] for r in read_results([tmp_path])] == ["f32"]
    old["precision"] = "fp64"
    (tmp_path / "old.json").write_text(json.dumps(old))
    with pytest.raises(EdgememError, match="old.json: unknown precision 'fp64'"):
        read_results([tmp_path])


def test_write_and_read_back_skipping_other_json(tmp_path):
    a = write_result(tmp_path / "x", ok_result(runtime="ort-cpu"))
    b = write_result(tmp_path / "y", empty_result(Cell("m", "openvino"), CPU, "failed", "boom"))
    (tmp_path / "x" / "bench_config.json").write_text('{"bench_config": {}}')
    got = read_results([tmp_path])
    assert {r["runtime"] for r in got} == {"ort-cpu", "openvino"}
    assert a.is_file() and b.is_file()
    assert not [p for p in tmp_path.rglob("*.tmp")]  # atomic writes leave nothing behind
    with pytest.raises(EdgememError, match="no such"):
        read_results([tmp_path / "missing"])
    (tmp_path / "x" / "junk.json").write_text("{not json")
    with pytest.raises(EdgememError, match="unreadable"):
        read_results([tmp_path / "x"])


def test_latency_summary_and_rates():
    s = latency_summary([4.0, 1.0, 2.0, 3.0])
    assert s["p50"] == 2.5 and s["min"] == 1.0 and s["mean"] == 2.5 and s["steps"] == 4
    assert s["p90"] <= s["p99"] <= 4.0
    r = ok_result(p50=500.0)
    assert r["latency_ms"]["p50"] == 502.0
    assert r["throughput_clips_s"] == pytest.approx(1000 / 502, rel=1e-3)
    assert r["real_time_factor"] == pytest.approx(2.0 * 1000 / 502, rel=1e-3)
    assert r["achieved_gflop_s"] == pytest.approx(2 * 5.0 * 1000 / 502, rel=1e-3)  # MACs -> FLOPs


def test_merge_repeats_takes_medians_and_counts_failures():
    runs = [ok_result(p50=10.0), ok_result(p50=30.0), ok_result(p50=20.0)]
    runs[1]["peak_rss_mb"] = 150.0
    failed = empty_result(Cell("m", "ort-cpu"), CPU, "failed", "killed")
    merged = merge_repeats([*runs, failed])
    assert merged["status"] == "ok"
    assert merged["latency_ms"]["p50"] == 22.0  # median of 12, 32, 22
    assert merged["latency_ms"]["min"] == 10.0
    assert merged["latency_ms"]["steps"] == 9
    assert merged["peak_rss_mb"] == 150.0
    assert merged["repeats"] == {"runs": 4, "failed": 1, "p50_ms": [12.0, 32.0, 22.0], "errors": ["killed"]}
    assert merge_repeats([failed])["status"] == "failed"


def test_precision_mapping(monkeypatch):
    import edgemem.export  # noqa: F401  (registers the torch runtime, whose precisions are asked below)

    # A CPU whose OpenVINO plugin has bf16 and int8 (simulated: the mapping, not this machine, is tested).
    monkeypatch.setattr(hardware, "openvino_capabilities", lambda device="CPU": frozenset({"FP32", "BF16", "INT8"}))
    assert graph_precision("openvino", "bf16") == "f32"
    assert graph_precision("ort-cpu", "int8") == "int8"
    assert graph_precision("ort-tensorrt", "fp16") == "f32"
    assert session_options("ort-tensorrt", "fp16") == {"fp16": True}
    assert graph_precision("tensorrt", "fp16") == "fp16" and session_options("tensorrt", "fp16") == {}  # TensorRT 11
    assert graph_precision("ort-cpu", "fp16") == "fp16"
    assert session_options("openvino", "bf16") == {"precision": "bf16"}
    assert session_options("openvino-stateful", "int8") == {"precision": "f32"}  # explicit, never OV's default
    with pytest.raises(UnsupportedError, match="fp16.*FP16"):  # never the f32 graph labelled fp16
        session_options("openvino", "fp16")
    assert session_options("ort-cpu", "f32") == {}
    with pytest.raises(UnsupportedError, match="bf16"):
        session_options("ort-cpu", "bf16")
    with pytest.raises(UnsupportedError, match="f32 only"):
        session_options("torch", "int8")


def test_a_yaml_model_is_filed_under_its_stem():
    assert Cell("edgemem/zoo/k400_x3d_s.yaml", "ort-cpu").key == "k400_x3d_s-fs1-ort-cpu-f32-b1"


def test_precision_mapping_on_a_cpu_without_bf16(monkeypatch):
    monkeypatch.setattr(hardware, "openvino_capabilities", lambda device="CPU": frozenset({"FP32", "INT8"}))
    with pytest.raises(UnsupportedError, match="bf16.*BF16"):
        session_options("openvino", "bf16")
    assert session_options("openvino", "f32") == {"precision": "f32"}


def test_machine_block_records_the_isa():
    m = machine_info()
    assert set(m["isa"]) == set(hardware.ISA_KEYS) and m["isa"] == hardware.isa()
    assert m["cores_usable"] == hardware.usable_cpus() >= 1
    old = {k: v for k, v in m.items() if k not in ("isa", "cpu_quota")}  # result files written before the ISA
    assert device_tag("ort-cpu", old) == device_tag("ort-cpu", m)

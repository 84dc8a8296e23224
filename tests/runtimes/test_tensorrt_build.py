"""TensorRT 10 / 11 build dispatch, driven by fake ``tensorrt`` module objects shaped like each
version's Python API (11: no BuilderFlag.FP16, networks always strongly typed).

The real engine build and run need an NVIDIA GPU: they are covered by tests/runtimes/test_runtimes.py and
tests/gpu/run_gpu_checks.sh when ``edgemem runtimes`` reports ``tensorrt`` available.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

import pytest
from export_toys import make_toy

from edgemem.errors import UnsupportedError
from edgemem.export.calibration import synthetic_calibration
from edgemem.export.onnx import to_onnx
from edgemem.precision import Precision, of_graph
from edgemem.runtimes.availability import check
from edgemem.runtimes.graph import read_graph
from edgemem.runtimes.tensorrt import (
    BuildPlan,
    build_engine,
    build_plan,
    engine_path,
    import_tensorrt,
)


class Recorder:
    """Records the builder calls a build makes."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []


def fake_trt(version: str, *, fp16_flag: bool, strongly_typed_flag: bool = True, config_api: bool = True) -> Any:
    """A module object with the parts of the TensorRT Python API that ``build_engine`` touches."""
    rec = Recorder()
    flags = {"TF32": 6, **({"FP16": 0} if fp16_flag else {})}
    creation = {"STRONGLY_TYPED": 1} if strongly_typed_flag else {}

    class Network:
        num_inputs = 0

    class Config:
        def set_flag(self, flag: int) -> None:
            rec.calls.append(("set_flag", flag))

        def clear_flag(self, flag: int) -> None:
            rec.calls.append(("clear_flag", flag))

    class Builder:
        def __init__(self, logger: Any) -> None:
            pass

        def create_network(self, flags: int) -> Network:
            rec.calls.append(("create_network", flags))
            return Network()

        def build_serialized_network(self, network: Any, config: Any) -> bytes:
            return b"plan"

    if config_api:
        Builder.create_builder_config = lambda self: Config()  # type: ignore[attr-defined]

    class Parser:
        num_errors = 0

        def __init__(self, network: Any, logger: Any) -> None:
            pass

        def parse_from_file(self, path: str) -> bool:
            rec.calls.append(("parse", Path(path).name))
            return True

    class Logger:
        WARNING = 2

        def __init__(self, level: int) -> None:
            pass

    mod = types.ModuleType("tensorrt")
    mod.__version__ = version
    mod.BuilderFlag = types.SimpleNamespace(**flags)
    mod.NetworkDefinitionCreationFlag = types.SimpleNamespace(**creation)
    mod.Builder, mod.OnnxParser, mod.Logger = Builder, Parser, Logger
    mod.recorder = rec
    return mod


@pytest.fixture(scope="module")
def graphs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("trt")
    out = {"fp32": d / "toy.onnx", "fp16": d / "toy_fp16.onnx", "int8": d / "toy_int8.onnx"}
    to_onnx(make_toy(), out["fp32"], verify=False)
    to_onnx(make_toy(), out["fp16"], verify=False, precision="fp16")
    cal = synthetic_calibration(make_toy().input_shape)
    to_onnx(make_toy(), out["int8"], verify=False, precision="int8", calibration=cal, quantizer="ort")
    return out


def test_graph_precision_is_read_from_the_graph(graphs: dict[str, Path]) -> None:
    contracts = [read_graph(graphs[k]).contract for k in ("fp32", "fp16", "int8")]
    assert [of_graph(c.export, c.quantized) for c in contracts] == [
        Precision.F32, Precision.FP16, Precision.INT8,
    ]  # fmt: skip


@pytest.mark.parametrize("version,fp16_flag", [("10.13.3", True), ("11.4.0", False)])
def test_int8_graph_builds_strongly_typed_in_explicit_quantization(
    graphs: dict[str, Path], version: str, fp16_flag: bool
) -> None:
    """A QDQ graph: strongly typed, no precision flag (the Q/DQ decide), TF32 left alone; fp16 on
    top of it is refused rather than ignored."""
    trt = fake_trt(version, fp16_flag=fp16_flag)
    plan = build_plan(trt, Precision.INT8, fp16=False)
    assert plan == BuildPlan(strongly_typed=True, fp16_flag=False, no_tf32=False)
    build_engine(trt, read_graph(graphs["int8"]), {}, plan)
    assert trt.recorder.calls == [("create_network", 1 << 1), ("parse", "toy_int8.onnx")]
    with pytest.raises(UnsupportedError, match="this graph is int8"):
        build_plan(trt, Precision.INT8, fp16=True)


def test_ort_tensorrt_provider_gets_int8_for_a_qdq_graph(tmp_path: Path) -> None:
    from edgemem.runtimes.ort import provider_list

    trt_int8 = provider_list("tensorrt", 0, False, tmp_path, int8=True)[0][1]
    assert trt_int8["trt_int8_enable"] is True and "trt_int8_calibration_table_name" not in trt_int8
    assert provider_list("tensorrt", 0, False, tmp_path)[0][1]["trt_int8_enable"] is False


def test_int8_runs_on_the_tensorrt_paths_not_on_cuda() -> None:
    from edgemem.runtimes.precisions import support

    assert support("ort-tensorrt")[Precision.INT8] is None and support("tensorrt")[Precision.INT8] is None
    assert "ort-tensorrt" in str(support("ort-cuda")[Precision.INT8])


def test_trt11_fp16_graph_builds_a_strongly_typed_network(graphs: dict[str, Path]) -> None:
    trt = fake_trt("11.4.0", fp16_flag=False)
    plan = build_plan(trt, Precision.FP16, fp16=True)
    assert plan == BuildPlan(strongly_typed=True, fp16_flag=False, no_tf32=False)
    assert build_engine(trt, read_graph(graphs["fp16"]), {}, plan) == b"plan"
    assert trt.recorder.calls == [("create_network", 1 << 1), ("parse", "toy_fp16.onnx")]


def test_trt11_refuses_fp16_of_an_fp32_graph() -> None:
    trt = fake_trt("11.4.0", fp16_flag=False)
    with pytest.raises(UnsupportedError, match=r"TensorRT 11\.4\.0 builds strongly typed.*--precision fp16") as e:
        build_plan(trt, Precision.F32, fp16=True)
    assert "\n" not in str(e.value)


def test_trt10_fp16_of_an_fp32_graph_uses_the_builder_flag(graphs: dict[str, Path]) -> None:
    trt = fake_trt("10.13.3", fp16_flag=True)
    plan = build_plan(trt, Precision.F32, fp16=True)
    assert plan.fp16_flag and not plan.strongly_typed
    build_engine(trt, read_graph(graphs["fp32"]), {}, plan)
    assert ("create_network", 0) in trt.recorder.calls and ("set_flag", 0) in trt.recorder.calls


@pytest.mark.parametrize("version,fp16_flag", [("10.13.3", True), ("11.4.0", False)])
def test_fp32_graph_builds_fp32_without_tf32(graphs: dict[str, Path], version: str, fp16_flag: bool) -> None:
    trt = fake_trt(version, fp16_flag=fp16_flag)
    plan = build_plan(trt, Precision.F32, fp16=False)
    build_engine(trt, read_graph(graphs["fp32"]), {}, plan)
    assert trt.recorder.calls[0] == ("create_network", 1 << 1)
    assert ("clear_flag", 6) in trt.recorder.calls and not any(c[0] == "set_flag" for c in trt.recorder.calls)


def test_trt11_without_the_creation_flag_is_still_typed_but_10_is_refused(graphs: dict[str, Path]) -> None:
    trt11 = fake_trt("11.9.0", fp16_flag=False, strongly_typed_flag=False)
    build_engine(trt11, read_graph(graphs["fp16"]), {}, build_plan(trt11, Precision.FP16, False))
    assert trt11.recorder.calls[0] == ("create_network", 0)
    trt10 = fake_trt("10.0.1", fp16_flag=True, strongly_typed_flag=False)
    with pytest.raises(UnsupportedError, match=r"TensorRT 10\.0\.1 has no strongly typed networks"):
        build_engine(trt10, read_graph(graphs["fp16"]), {}, build_plan(trt10, Precision.FP16, False))


def test_missing_api_names_the_version_not_attribute_error(graphs: dict[str, Path]) -> None:
    trt = fake_trt("11.0.0", fp16_flag=False, config_api=False)
    with pytest.raises(UnsupportedError, match=r"TensorRT 11\.0\.0 lacks an API.*create_builder_config"):
        build_engine(trt, read_graph(graphs["fp32"]), {}, build_plan(trt, Precision.F32, False))


@pytest.mark.parametrize("version", ["8.6.1", "12.0.0", "dev"])
def test_unsupported_versions_are_refused(version: str, monkeypatch: pytest.MonkeyPatch) -> None:
    trt = fake_trt(version, fp16_flag=True)
    with pytest.raises(UnsupportedError, match=f"TensorRT {version} is not supported.*10 and 11"):
        build_plan(trt, Precision.F32, False)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    with pytest.raises(UnsupportedError, match=f"TensorRT {version} is not supported"):
        import_tensorrt()


def test_engine_cache_key_separates_plans_and_versions(graphs: dict[str, Path]) -> None:
    info = read_graph(graphs["fp32"])
    shapes = {"frames": [1, 3, 4, 16, 16]}
    fp32, fp16 = BuildPlan(True, False, True), BuildPlan(False, True, False)
    keys = {engine_path(info, shapes, p, v) for p in (fp32, fp16) for v in ("10.13.3", "11.4.0")}
    assert len(keys) == 4 and all(k.suffix == ".engine" and k.parent == info.path.parent for k in keys)


@pytest.mark.skipif(not check("tensorrt").available, reason=f"tensorrt: {check('tensorrt').detail}")
def test_real_tensorrt_session_reports_its_precision(graphs: dict[str, Path]) -> None:
    from edgemem.runtimes import open_session

    with open_session(graphs["fp16"], "tensorrt") as s:
        assert s.precision == "fp16"
    with open_session(graphs["fp32"], "tensorrt") as s:
        assert s.precision == "f32"
    with open_session(graphs["int8"], "tensorrt") as s:
        assert s.precision == "int8"

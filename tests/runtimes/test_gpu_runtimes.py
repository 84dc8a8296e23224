"""GPU runtimes against a reference saved on the CPU: torch on CUDA, ort-cuda, ort-tensorrt and
tensorrt (fp32 graph, and an fp16 graph built strongly typed). Each test skips with the reason
when its runtime is not available here; tests/gpu/run_gpu_checks.sh runs them on a GPU machine.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from export_toys import make_toy

from edgemem.contract import read_contract
from edgemem.export.onnx import to_onnx
from edgemem.export.saved_reference import SavedReference, load_reference
from edgemem.export.verify import TOLERANCES, _run_stream, compare, verify_graph
from edgemem.precision import Precision
from edgemem.runtimes import open_session
from edgemem.runtimes.availability import check


def gpu_param(rt: str) -> object:
    a = check(rt)
    return pytest.param(rt, marks=pytest.mark.skipif(not a.available, reason=f"{rt}: {a.detail}"))


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, SavedReference]]:
    """fp32 and fp16 toy graphs, each with a reference made by PyTorch on the CPU."""
    d = tmp_path_factory.mktemp("gpu")
    out = {}
    for key, kw in {"f32": {}, "fp16": {"precision": "fp16"}}.items():
        graph, ref = d / f"toy_{key}.onnx", d / f"ref_{key}.npz"
        to_onnx(make_toy(), graph, batch=2, verify=False, **kw)
        verify_graph(graph, make_toy(), runtimes=(), clips=12, boundaries=3, save_reference=ref)
        out[key] = (graph, load_reference(ref, graph, read_contract(graph)))
    return out


@pytest.mark.parametrize("rt", [gpu_param("torch-cuda")])
def test_torch_cuda_matches_the_cpu_reference(saved: dict[str, tuple[Path, SavedReference]], rt: str) -> None:
    graph, ref = saved["f32"]
    names = [s.name for s in read_contract(graph).state]
    with open_session(graph, rt, batch=2) as s:
        assert s.runtime == "torch-cuda"
        got = _run_stream(s, ref.stream, names)
    results = compare(ref.outputs, got, TOLERANCES[Precision.F32])
    assert all(o.passed for o in results), [(o.name, o.max_abs) for o in results]


@pytest.mark.parametrize("rt", [gpu_param(r) for r in ("ort-cuda", "ort-tensorrt", "tensorrt")])
@pytest.mark.parametrize("key", ["f32", "fp16"])
def test_gpu_runtime_matches_the_cpu_reference(
    saved: dict[str, tuple[Path, SavedReference]], rt: str, key: str
) -> None:
    graph, ref = saved[key]
    report = verify_graph(graph, ref, runtimes=(rt,))
    assert report.passed, report.format()
    if rt == "tensorrt":
        with open_session(graph, rt, batch=2) as s:
            assert s.precision == key

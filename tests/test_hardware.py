"""Hardware detection (ISA flags, cgroup quota, usable CPUs), default threads, and honest precisions.

Other machines are simulated: the parsers take text and directories, and the cached probes
(``openvino_capabilities``, ``usable_cpus``) are monkeypatched. The sessions and the CLI are real.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from runtime_models import export, make_model
from video_maker import make_video

import edgemem.export  # noqa: F401  (registers the PyTorch reference runtime "torch")
from edgemem import hardware
from edgemem.cli import main
from edgemem.errors import InputError, UnsupportedError
from edgemem.runtimes import open_session
from edgemem.runtimes.availability import check
from edgemem.runtimes.precisions import check_precision, openvino_support, supported_precisions

AVX2_ONLY = (
    "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B12\n"
    "flags\t\t: fpu sse sse2 avx f16c fma avx2 bmi2\n\nprocessor\t: 1\n"
)
NO_BF16 = frozenset({"FP32", "INT8", "BIN", "EXPORT_IMPORT"})  # OpenVINO's CPU plugin on an AVX2-only EPYC
needs_openvino = pytest.mark.skipif(not check("openvino").available, reason="openvino not installed")


@pytest.fixture(scope="module")
def graph(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export(make_model(seed=0), tmp_path_factory.mktemp("hw") / "tiny.onnx")


def test_isa_flags_from_cpuinfo() -> None:
    flags = hardware.parse_cpuinfo_flags(AVX2_ONLY)
    assert "avx2" in flags and "avx512f" not in flags
    assert hardware.isa(flags) == {"avx2": True, "avx512f": False, "avx512_vnni": False, "avx512_bf16": False,
                                   "amx": False}  # fmt: skip
    assert hardware.isa(frozenset({"amx_tile", "amx_bf16"}))["amx"]
    assert hardware.parse_cpuinfo_flags("no flags here") == frozenset()
    assert hardware.parse_cpuinfo_model(AVX2_ONLY) == "AMD EPYC 7B12"
    assert hardware.parse_cpuinfo_model("no model here") is None and hardware.cpu_model()  # this machine: a name
    assert set(hardware.isa()) == set(hardware.ISA_KEYS)  # this machine: whatever it has, every key


def test_int8_gemm_instructions() -> None:
    avx2 = hardware.parse_cpuinfo_flags(AVX2_ONLY)
    assert hardware.int8_gemm(avx2) == "avx2"
    assert hardware.int8_gemm(avx2 | {"avx_vnni"}) == "vnni"  # Alder Lake: VNNI on 256-bit vectors
    assert hardware.int8_gemm(avx2 | {"avx512f", "avx512_vnni"}) == "vnni"
    assert hardware.int8_gemm(avx2 | {"avx512_vnni", "amx_tile", "amx_int8"}) == "amx"
    assert hardware.int8_gemm(frozenset({"sse4_2"})) == "none"
    assert hardware.summary()["int8_gemm"] == hardware.int8_gemm()


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_cgroup_v2_quota_is_the_tightest_of_the_cgroup_and_its_ancestors(tmp_path: Path) -> None:
    root, me = tmp_path / "cg", tmp_path / "self_cgroup"
    _write(me, "0::/kube/pod1\n")
    _write(root / "kube" / "cpu.max", "max 100000\n")
    _write(root / "kube" / "pod1" / "cpu.max", "150000 100000\n")
    assert hardware.cgroup_cpu_limit(root, me) == 1.5
    assert hardware.cpu_budget(8, 1.5) == 2 and hardware.cpu_budget(1, 1.5) == 1
    _write(root / "kube" / "cpu.max", "50000 100000\n")
    assert hardware.cgroup_cpu_limit(root, me) == 0.5
    assert hardware.cpu_budget(8, 0.5) == 1  # never below one CPU
    _write(root / "kube" / "cpu.max", "max 100000\n")
    _write(root / "kube" / "pod1" / "cpu.max", "max 100000\n")
    assert hardware.cgroup_cpu_limit(root, me) is None and hardware.cpu_budget(8, None) == 8


def test_cgroup_v1_cfs_quota(tmp_path: Path) -> None:
    root, me = tmp_path / "cg", tmp_path / "self_cgroup"
    _write(me, "12:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n")
    _write(root / "cpu,cpuacct" / "docker" / "abc" / "cpu.cfs_quota_us", "200000\n")
    _write(root / "cpu,cpuacct" / "docker" / "abc" / "cpu.cfs_period_us", "100000\n")
    assert hardware.cgroup_cpu_limit(root, me) == 2.0
    _write(root / "cpu,cpuacct" / "docker" / "abc" / "cpu.cfs_quota_us", "-1\n")
    assert hardware.cgroup_cpu_limit(root, me) is None
    assert hardware.cgroup_cpu_limit(root, tmp_path / "missing") is None  # no cgroups (macOS, Windows)


def test_usable_cpus_is_affinity_capped_by_quota(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hardware, "affinity_cpus", lambda: 16)
    monkeypatch.setattr(hardware, "cgroup_cpu_limit", lambda: 2.5)
    assert hardware.usable_cpus.__wrapped__() == 3
    monkeypatch.setattr(hardware, "cgroup_cpu_limit", lambda: None)
    assert hardware.usable_cpus.__wrapped__() == 16
    assert 1 <= hardware.usable_cpus() <= hardware.affinity_cpus()  # this machine


def test_default_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hardware, "usable_cpus", lambda: 6)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert hardware.default_threads() == 6 and hardware.default_threads(processes=4) == 1
    assert hardware.resolve_threads(None) == 6 and hardware.resolve_threads(2) == 2
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert hardware.default_threads() == 2  # the user's environment caps it
    with pytest.raises(InputError, match="threads"):
        hardware.resolve_threads(0)


def test_sessions_default_to_the_usable_cpus(monkeypatch: pytest.MonkeyPatch, graph: Path) -> None:
    import onnxruntime as ort

    from edgemem.runtimes.ort import session_options

    monkeypatch.setattr(hardware, "usable_cpus", lambda: 2)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert session_options(ort, None, None, False).intra_op_num_threads == 2
    assert session_options(ort, 1, None, False).intra_op_num_threads == 1  # --threads overrides
    if check("openvino").available:
        with open_session(graph, "openvino") as s:
            assert int(s._compiled.get_property("INFERENCE_NUM_THREADS")) == 2
        with open_session(graph, "openvino", threads=1) as s:
            assert int(s._compiled.get_property("INFERENCE_NUM_THREADS")) == 1
    monkeypatch.setattr(hardware, "usable_cpus", lambda: 1)
    try:
        torch.set_num_threads(2)
        with open_session(make_model(seed=0), "torch"):
            assert torch.get_num_threads() == 1  # torch's count capped by the usable CPUs
    finally:
        torch.set_num_threads(1)


def test_precision_lists_follow_the_capabilities() -> None:
    assert openvino_support(caps=NO_BF16)["bf16"] is not None
    assert [p for p, why in openvino_support(caps=NO_BF16).items() if why is None] == ["f32", "int8"]
    assert openvino_support(caps=frozenset({"FP32", "BF16"}))["bf16"] is None
    # int8+bf16 (the int8 graph, its float ops in bf16) needs both capabilities
    assert "BF16" in str(openvino_support(caps=NO_BF16)["int8+bf16"])
    assert "INT8" in str(openvino_support(caps=frozenset({"FP32", "BF16"}))["int8+bf16"])
    assert openvino_support(caps=frozenset({"FP32", "BF16", "INT8"}))["int8+bf16"] is None
    assert "int8+bf16" not in supported_precisions("ort-cpu")
    assert supported_precisions("torch") == ["f32"] and "bf16" not in supported_precisions("ort-cpu")
    with pytest.raises(UnsupportedError, match="unknown precision 'fp64'"):
        check_precision("ort-cpu", "fp64")
    assert check_precision("ort-cpu", "fp32") == "f32"


@needs_openvino
def test_bf16_on_a_cpu_without_it_is_an_error(monkeypatch: pytest.MonkeyPatch, graph: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    monkeypatch.setattr(hardware, "openvino_capabilities", lambda device="CPU": NO_BF16)
    for rt in ("openvino", "openvino-stateful"):
        with pytest.raises(UnsupportedError, match="bf16.*BF16"):
            open_session(graph, rt, precision="bf16")
        with open_session(graph, rt, precision="f32") as s:
            assert s.precision == "f32"
    assert check("openvino").precisions == ["f32", "int8"]
    video = make_video(tmp_path / "v.mp4", "mpeg4", frames=30, fps=30)
    base = ["stream", str(video), "--model", str(graph), "--runtime", "openvino", "--quiet", "--threads", "1"]
    assert main([*base, "--precision", "bf16"]) == 2
    err = capsys.readouterr().err.strip()
    assert "bf16" in err and "BF16" in err and len(err.splitlines()) == 1
    assert main([*base, "--precision", "f32"]) == 0


@needs_openvino
def test_compiled_precision_is_checked(monkeypatch: pytest.MonkeyPatch, graph: Path) -> None:
    """A plugin claiming FP16 on a CPU without it compiles something else: refused, not relabelled."""
    if "FP16" in (hardware.openvino_capabilities() or ()):
        pytest.skip("this CPU runs fp16 in OpenVINO: no mismatch to provoke")
    monkeypatch.setattr(hardware, "openvino_capabilities", lambda device="CPU": frozenset({"FP32", "FP16"}))
    with pytest.raises(UnsupportedError, match="compiled .* instead of the fp16 asked for"):
        open_session(graph, "openvino", precision="fp16")


@needs_openvino
def test_verify_refuses_an_int8_graph_where_the_runtime_has_no_int8(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from edgemem.export.calibration import synthetic_calibration
    from edgemem.export.onnx import to_onnx

    path = tmp_path / "toy_int8.onnx"
    toy = make_model(seed=0)
    to_onnx(toy, path, precision="int8", calibration=synthetic_calibration(toy.input_shape), verify=False)
    monkeypatch.setattr(hardware, "openvino_capabilities", lambda device="CPU": frozenset({"FP32"}))
    assert main(["verify", str(path), "--runtimes", "ort-cpu,openvino"]) == 2
    err = capsys.readouterr().err.strip()
    assert "int8" in err and "INT8" in err and len(err.splitlines()) == 1


def test_open_session_checks_precision_on_every_runtime(graph: Path) -> None:
    with open_session(graph, "ort-cpu", precision="fp32") as s:
        assert s.runtime == "ort-cpu"
    with pytest.raises(UnsupportedError, match="bf16.*no bf16 mode"):
        open_session(graph, "ort-cpu", precision="bf16")
    with pytest.raises(UnsupportedError, match="int8 on ort-cpu comes from the graph"):
        open_session(graph, "ort-cpu", precision="int8")
    with pytest.raises(UnsupportedError, match="f32 only"):
        open_session(make_model(seed=0), "torch", precision="bf16")

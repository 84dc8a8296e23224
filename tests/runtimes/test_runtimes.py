"""Runtime conformance: every available runtime against the PyTorch reference, resets, state
hand-off between runtimes, state files, and the errors a user can run into.

The graph is a tiny contract-following model (tests/runtime_models.py): the runtimes know no model.
Runtimes that cannot run here (CUDA, TensorRT) are skipped with the reason `edgemem runtimes` gives.
"""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from runtime_models import export, make_model

import edgemem.export  # noqa: F401  (registers the PyTorch runtimes "torch" and "torch-cuda")
from edgemem.cli import main
from edgemem.errors import EdgememError, InputError, StateError, UnsupportedError
from edgemem.hardware import openvino_capabilities
from edgemem.runtimes import RUNTIMES, list_runtimes, load_state, open_session, save_state
from edgemem.runtimes.availability import availability, check
from edgemem.runtimes.probes import ort_provider
from edgemem.runtimes.registry import runs_on_gpu, takes_model

torch.set_num_threads(1)
ATOL = 1e-4
BATCH = 2
AVAIL = {a.runtime: a for a in availability()}
GRAPH_RUNTIMES = [r for r in RUNTIMES if not takes_model(r)]


def runtime_param(rt: str) -> object:
    a = AVAIL[rt]
    return pytest.param(rt, marks=pytest.mark.skipif(not a.available, reason=f"{rt}: {a.detail}"))


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return make_model(seed=0)


@pytest.fixture(scope="module")
def graph(model: torch.nn.Module, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export(model, tmp_path_factory.mktemp("graph") / "tiny.onnx")


def make_stream(steps: int = 7, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Clips [steps, B, 3, 4, 16, 16] and reset flags with boundaries at different steps per slot."""
    rng = np.random.default_rng(seed)
    clips = rng.standard_normal((steps, BATCH, 3, 4, 16, 16)).astype(np.float32)
    reset = np.zeros((steps, BATCH), bool)
    reset[0] = True
    reset[3, 0] = True
    reset[5, 1] = True
    return clips, reset


def open_rt(rt: str, graph: Path, model: torch.nn.Module, **kw: object) -> object:
    return open_session(model if takes_model(rt) else graph, rt, batch=BATCH, **kw)


def reference(model: torch.nn.Module, clips: np.ndarray, reset: np.ndarray) -> tuple[np.ndarray, list[dict]]:
    with open_session(model, "torch", batch=BATCH) as s:
        logits, states = [], []
        for c, r in zip(clips, reset, strict=True):
            logits.append(s.step(c, r))
            states.append(s.get_state())
    return np.stack(logits), states


@pytest.mark.parametrize("rt", [runtime_param(r) for r in RUNTIMES])
def test_matches_reference_over_boundaries(rt: str, graph: Path, model: torch.nn.Module) -> None:
    clips, reset = make_stream()
    ref, ref_states = reference(model, clips, reset)
    with open_rt(rt, graph, model) as s:
        assert s.runtime == rt and s.batch == BATCH
        assert [x.name for x in s.state_spec] == ["mem", "count"]
        assert s.model_card.family == "test_tinymem"
        for i, (c, r) in enumerate(zip(clips, reset, strict=True)):
            out = s.step(c, r)
            assert out.dtype == np.float32 and out.shape == (BATCH, 5)
            np.testing.assert_allclose(out, ref[i], atol=ATOL, rtol=0, err_msg=f"{rt} step {i}")
            for k, v in s.get_state().items():
                np.testing.assert_allclose(v, ref_states[i][k], atol=ATOL, rtol=0, err_msg=f"{rt} {k} step {i}")
    # the memory matters: the same clips without resets give different logits
    assert np.abs(ref[4] - reference(model, clips, np.zeros_like(reset))[0][4]).max() > 1e-3


@pytest.mark.parametrize("rt", [runtime_param(r) for r in RUNTIMES])
def test_reset(rt: str, graph: Path, model: torch.nn.Module) -> None:
    clips, _ = make_stream()
    with open_rt(rt, graph, model) as s, open_rt(rt, graph, model) as fresh:
        first = fresh.step(clips[0])
        for c in clips[:3]:
            s.step(c)
        s.reset()  # whole session
        assert all(not v.any() for v in s.get_state().values())
        np.testing.assert_allclose(s.step(clips[0]), first, atol=ATOL, rtol=0)
        s.step(clips[1])
        s.reset([1])  # one slot: the other keeps its memory
        state = s.get_state()
        assert not state["mem"][1].any() and state["mem"][0].any()
        out = s.step(clips[2])
        fresh.reset()
        np.testing.assert_allclose(out[1], fresh.step(clips[2])[1], atol=ATOL, rtol=0)
        with pytest.raises(InputError, match="slot 5"):
            s.reset([5])


def test_state_handoff_across_runtimes(graph: Path, model: torch.nn.Module) -> None:
    """ORT -> OpenVINO (stateful) -> OpenVINO -> torch, two clips each, continues exactly."""
    chain = [r for r in ("ort-cpu", "openvino-stateful", "openvino", "torch") if AVAIL[r].available]
    clips, reset = make_stream(steps=max(6, 2 * len(chain)))
    ref, _ = reference(model, clips, reset)
    state = None
    for j, rt in enumerate(chain):
        with open_rt(rt, graph, model) as s:
            if state is not None:
                s.set_state(state)
            for i in (2 * j, 2 * j + 1):
                np.testing.assert_allclose(s.step(clips[i], reset[i]), ref[i], atol=ATOL, rtol=0, err_msg=rt)
            state = s.get_state()


@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
def test_state_file_resumes_in_another_process(
    suffix: str, graph: Path, model: torch.nn.Module, tmp_path: Path
) -> None:
    clips, reset = make_stream()
    ref, _ = reference(model, clips, reset)
    first = "openvino" if AVAIL["openvino"].available else "ort-cpu"  # the GPU machines have no openvino
    with open_session(graph, first, batch=BATCH) as s:
        for c, r in zip(clips[:3], reset[:3], strict=True):
            s.step(c, r)
        path = save_state(tmp_path / f"state{suffix}", s.get_state(), s.state_spec, s.model_card)
    saved = load_state(path)
    assert (
        [x.name for x in saved.specs] == ["mem", "count"]
        and saved.card is not None
        and saved.card.family == "test_tinymem"
    )
    np.save(tmp_path / "clips.npy", clips[3:])
    np.save(tmp_path / "reset.npy", reset[3:])
    script = (
        "import numpy as np, sys\n"
        "from edgemem.runtimes import open_session, load_state\n"
        f"s = open_session({str(graph)!r}, 'ort-cpu', batch={BATCH})\n"
        f"s.set_state(load_state({str(path)!r}).state)\n"
        f"c, r = np.load({str(tmp_path / 'clips.npy')!r}), np.load({str(tmp_path / 'reset.npy')!r})\n"
        f"np.save({str(tmp_path / 'out.npy')!r}, np.stack([s.step(a, b) for a, b in zip(c, r)]))\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), ref[3:], atol=ATOL, rtol=0)


def test_state_file_errors(tmp_path: Path, graph: Path) -> None:
    with open_session(graph, "ort-cpu", batch=BATCH) as s:
        with pytest.raises(UnsupportedError, match=r"\.npz or \.safetensors"):
            save_state(tmp_path / "state.pt", s.get_state(), s.state_spec)
        with pytest.raises(StateError, match="state file not found"):
            load_state(tmp_path / "missing.npz")
        np.savez(tmp_path / "foreign.npz", mem=np.zeros(3))
        with pytest.raises(StateError, match="no state spec"):
            load_state(tmp_path / "foreign.npz")
        (tmp_path / "garbage.safetensors").write_bytes(b"not a safetensors file")
        with pytest.raises(StateError, match="cannot read"):
            load_state(tmp_path / "garbage.safetensors")
        with open_session(graph, "ort-cpu", batch=1) as other:  # a batch-1 state does not fit batch 2
            saved = save_state(tmp_path / "b1.npz", other.get_state(), other.state_spec)
        with pytest.raises(StateError, match="'mem' has shape"):
            s.set_state(load_state(saved).state)


@pytest.mark.parametrize("rt", [runtime_param(r) for r in ("ort-cpu", "openvino", "openvino-stateful", "torch")])
def test_set_state_names_the_tensor(rt: str, graph: Path, model: torch.nn.Module) -> None:
    with open_rt(rt, graph, model) as s:
        good = s.get_state()
        with pytest.raises(StateError, match="'count' has shape"):
            s.set_state({**good, "count": np.zeros((BATCH, 2), np.float32)})
        with pytest.raises(StateError, match="'mem' has dtype float64"):
            s.set_state({**good, "mem": good["mem"].astype(np.float64)})
        with pytest.raises(StateError, match=r"missing \['count'\]"):
            s.set_state({"mem": good["mem"]})
        with pytest.raises(InputError, match="frames must have shape"):
            s.step(np.zeros((BATCH, 3, 4, 8, 8), np.float32))
        with pytest.raises(InputError, match="float32"):
            s.step(np.zeros((BATCH, 3, 4, 16, 16), np.float64))
        with pytest.raises(InputError, match="reset must be"):
            s.step(np.zeros((BATCH, 3, 4, 16, 16), np.float32), np.zeros(BATCH, np.int64))
    with pytest.raises(StateError, match="closed"):
        s.step(np.zeros((BATCH, 3, 4, 16, 16), np.float32))


@pytest.mark.parametrize("rt", [runtime_param(r) for r in ("openvino", "openvino-stateful")])
def test_openvino_precision_is_explicit(rt: str, graph: Path) -> None:
    """The compiled model reports the precision asked for: f32 by default, never bf16 by surprise;
    bf16 where this CPU has it (OPTIMIZATION_CAPABILITIES), else an error naming it."""
    with open_session(graph, rt, batch=1) as s:
        assert s.precision == "f32"
    if "BF16" in (openvino_capabilities() or ()):
        with open_session(graph, rt, batch=1, precision="bf16") as s:
            assert s.precision == "bf16"
    else:
        with pytest.raises(UnsupportedError, match="bf16.*BF16"):
            open_session(graph, rt, batch=1, precision="bf16")
    with pytest.raises(UnsupportedError, match="precision"):
        open_session(graph, rt, precision="int3")


def test_static_batch_graph(model: torch.nn.Module, tmp_path: Path) -> None:
    g = export(model, tmp_path / "b1.onnx", batch=1)
    for rt in [r for r in ("ort-cpu", "openvino-stateful") if AVAIL[r].available]:
        with open_session(g, rt) as s:
            assert s.batch == 1
        with pytest.raises(InputError, match="exported for batch 1"):
            open_session(g, rt, batch=2)


def test_graph_not_following_the_contract(graph: Path, tmp_path: Path) -> None:
    plain = onnx.load(str(graph))
    del plain.metadata_props[:]
    onnx.save(plain, str(tmp_path / "plain.onnx"))
    (tmp_path / "garbage.onnx").write_bytes(b"\x00garbage")
    for rt in ("ort-cpu", "openvino", "openvino-stateful"):
        with pytest.raises(StateError, match="not an edgemem graph"):
            open_session(tmp_path / "plain.onnx", rt)
        with pytest.raises(InputError, match="not an ONNX model"):
            open_session(tmp_path / "garbage.onnx", rt)
        with pytest.raises(InputError, match="not found"):
            open_session(tmp_path / "missing.onnx", rt)


def test_unknown_runtime_and_option(graph: Path) -> None:
    with pytest.raises(UnsupportedError, match="unknown runtime 'onnx'"):
        open_session(graph, "onnx")
    with pytest.raises(UnsupportedError, match="does not take option 'colour'"):
        open_session(graph, "ort-cpu", colour="red")


@pytest.mark.parametrize("rt", ["ort-cuda", "ort-tensorrt", "tensorrt", "torch-cuda"])
def test_gpu_runtime_without_gpu_fails_clearly(rt: str, graph: Path, model: torch.nn.Module) -> None:
    assert runs_on_gpu(rt)
    if AVAIL[rt].available:
        pytest.skip(f"{rt} is available here")
    assert any(w in AVAIL[rt].detail for w in ("not installed", "has no", "no NVIDIA GPU", "fell back", "no CUDA"))
    with pytest.raises(EdgememError) as e:
        open_session(model if takes_model(rt) else graph, rt)
    assert "\n" not in str(e.value)
    assert any(w in str(e.value) for w in ("not installed", "has no", "no NVIDIA GPU", "fell back", "no CUDA"))


def test_torch_cuda_is_the_torch_runtime_on_the_cuda_device(model: torch.nn.Module) -> None:
    """Registered as a GPU runtime that opens models (bench tags and builds its cells as for "torch")."""
    assert takes_model("torch") and takes_model("torch-cuda") and not takes_model("ort-cpu")
    assert not runs_on_gpu("torch") and "torch" in AVAIL["torch-cuda"].detail
    with pytest.raises(InputError, match="use the runtime 'torch' with device"):
        open_session(model, "torch-cuda", device="cpu")


def test_provider_fallback_notes_stay_off_stdout(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """ORT's Python layer prints "EP Error ... Falling back" to stdout when a GPU provider cannot load (seen on
    an H200 with onnxruntime-gpu and no TensorRT, where it broke `edgemem runtimes --json`): the probe reports
    the fallback, the note goes to stderr, and the probe graph's IR version is one every supported ORT reads."""
    seen = {}

    class FallingBackSession:
        def __init__(self, model: bytes, **kwargs: object) -> None:
            seen["ir"] = onnx.load_from_string(model).ir_version
            print("EP Error ... when using ['TensorrtExecutionProvider']\nFalling back to ['CPUExecutionProvider']")

        def get_providers(self) -> list[str]:
            return ["CPUExecutionProvider"]

    fake = types.SimpleNamespace(
        __version__="9.9",
        InferenceSession=FallingBackSession,
        get_available_providers=lambda: ["TensorrtExecutionProvider", "CPUExecutionProvider"],
    )
    monkeypatch.setitem(sys.modules, "onnxruntime", fake)
    with pytest.raises(UnsupportedError, match="TensorrtExecutionProvider fell back to CPUExecutionProvider"):
        ort_provider("TensorrtExecutionProvider")()
    out = capsys.readouterr()
    assert out.out == "" and "Falling back" in out.err
    assert seen["ir"] <= 10  # onnxruntime>=1.18 reads IR <= 10; onnx 1.23 writes IR 14 unless told


def test_runtimes_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["runtimes", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    rows = out["runtimes"]
    assert [r["runtime"] for r in rows] == list_runtimes()
    by = {r["runtime"]: r for r in rows}
    assert by["ort-cpu"]["available"] and by["torch"]["available"]
    assert all(r["detail"] for r in rows)
    assert check("openvino").available == by["openvino"]["available"]
    assert out["machine"]["int8_gemm"] in {"amx", "vnni", "avx2", "none"}
    assert all("machine" not in r for r in rows)  # once per report, not per runtime
    assert main(["runtimes"]) == 0
    out = capsys.readouterr().out
    assert "ort-cpu" in out and "int8 GEMMs:" in " ".join(out.split())


@pytest.mark.skipif(not check("openvino").available, reason="openvino not installed")
def test_closing_openvino_sessions_in_any_order_keeps_signals_safe(graph: Path) -> None:
    """Sessions closed first-opened-first (verify, bench and the demo do) must leave the process able to
    handle signals: OpenVINO's per-Core alternate signal stack once dangled here and SIGCHLD then
    crashed the process. Run in a child so that a regression fails this test, not the whole suite."""
    script = f"""
import gc, signal, subprocess
from edgemem.runtimes import open_session
a = open_session({str(graph)!r}, "openvino")
b = open_session({str(graph)!r}, "openvino-stateful")
a.close(); del a; gc.collect()
b.close(); del b; gc.collect()
signal.signal(signal.SIGCHLD, lambda *_: None)
for _ in range(5):
    subprocess.run(["true"], check=True)
print("signals ok")
"""
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and "signals ok" in p.stdout, (p.returncode, p.stderr[-500:])

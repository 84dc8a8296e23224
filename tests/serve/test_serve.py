"""Serving on a real Triton server: repositories from ``edgemem serve export``, remote streams equal to
in-process ONNX Runtime, a serving benchmark, and a server that dies mid-stream.

Needs ``nvidia-pytriton`` (the ``tritonserver`` binary), ``tritonclient[grpc]`` and the ONNX Runtime
backend kit (``$EDGEMEM_TRITON_KIT``, or ``shared/triton`` beside the checkout); skipped otherwise.
One server per module, on free ports of 127.0.0.1.
"""

from __future__ import annotations

import importlib.util
import json
import os
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from runtime_models import export, make_model
from video_maker import make_video

from edgemem.cli import main
from edgemem.errors import StateError
from edgemem.runtimes.ort import OrtSession

KIT = Path(os.environ.get("EDGEMEM_TRITON_KIT") or Path(__file__).resolve().parents[2].parent / "shared" / "triton")
if importlib.util.find_spec("tritonclient") is None or importlib.util.find_spec("pytriton") is None:
    pytest.skip(
        "needs tritonclient[grpc] (pip install -e .[serve]) and the tritonserver of nvidia-pytriton (pip install --no-deps nvidia-pytriton==0.7.0)",
        allow_module_level=True,
    )
if not (KIT / "libtriton_onnxruntime.so").is_file():
    pytest.skip(f"no Triton ONNX Runtime backend kit at {KIT} (set EDGEMEM_TRITON_KIT)", allow_module_level=True)

from edgemem.serve.client import RemoteError, RemoteSession  # noqa: E402
from edgemem.serve.config import ServeOptions  # noqa: E402
from edgemem.serve.repository import write_repository  # noqa: E402
from edgemem.serve.server import TritonServer, assemble_backends, find_tritonserver  # noqa: E402

torch.set_num_threads(1)
STREAMS, CLIPS = 8, 5


def _export(name: str, path: Path, batch: int | None, **kw: object) -> Path:
    from edgemem.export.onnx import to_onnx
    from edgemem.models.registry import create_model

    to_onnx(create_model(name, **kw).eval(), path, batch=batch, verify=False)
    return path


@pytest.fixture(scope="module")
def graphs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from edgemem.export.cm_pair import export_cm_pair
    from edgemem.models.registry import create_model

    d = tmp_path_factory.mktemp("graphs")
    g = {
        "memvit_b1": _export("memvit_tiny", d / "memvit_b1.onnx", 1),
        "memvit_dyn": _export("memvit_tiny", d / "memvit_dyn.onnx", None),
        "cm_dyn": _export("cm_slow_tiny", d / "cm_dyn.onnx", None),
        "slow_fs2": _export("slow_tiny", d / "slow_fs2.onnx", None, frame_scale=2),
        "tiny_dyn": export(make_model(seed=0), d / "tiny_dyn.onnx"),
    }
    g["pair_encode"], g["pair_classify"] = export_cm_pair(create_model("cm_slow_tiny").eval(), d / "pair")
    return g


def _start(repo: Path, work: Path) -> TritonServer:
    binary, libs = find_tritonserver()
    backends = assemble_backends(KIT, work / "kit", libs)
    return TritonServer(repo, binary=binary, libs=libs, backends=backends, log_path=work / "server.log").start(180)


@pytest.fixture(scope="module")
def server(graphs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> TritonServer:
    work = tmp_path_factory.mktemp("triton")
    names = list(graphs)
    write_repository([graphs[n] for n in names], work / "repo", names=names, opts=ServeOptions(max_batch=8))
    # `direct`: a fixed slot per stream, fewer slots (4) than streams (8): the rest wait for an END.
    direct = ServeOptions(max_batch=4, strategy="direct", queue_delay_us=1000)
    write_repository([graphs["memvit_dyn"]], work / "repo", names=["memvit_direct"], opts=direct)
    s = _start(work / "repo", work)
    yield s
    s.stop()


def _clips(seed: int, shape: tuple[int, ...]) -> np.ndarray:
    return np.random.default_rng(seed).random((CLIPS, 1, *shape), dtype=np.float32)


def _restarts(i: int) -> list[bool]:
    """Stream i restarts (START) at clip 0 and at clip 1 + i % (CLIPS - 1): a different clip per stream."""
    return [c == 0 or c == 1 + i % (CLIPS - 1) for c in range(CLIPS)]


@pytest.mark.parametrize("model", ["memvit_b1", "memvit_dyn", "memvit_direct", "cm_dyn", "slow_fs2"])
def test_concurrent_streams_equal_in_process(server: TritonServer, graphs: dict[str, Path], model: str) -> None:
    graph = graphs["memvit_dyn" if model == "memvit_direct" else model]
    out: dict[int, list[np.ndarray]] = {}
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            with RemoteSession(server.url, model, timeout_s=60) as s:
                clips, resets = _clips(i, s.input_shape), _restarts(i)
                logits = []
                for c in range(CLIPS):
                    if c == CLIPS - 1:
                        s.mark_last()
                    logits.append(s.step(clips[c], np.array([resets[c]])))
                out[i] = logits
        except BaseException as e:  # reported by the main thread
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(STREAMS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not errors, errors[0]
    worst = 0.0
    with OrtSession(graph, batch=1, threads=1) as ref:
        for i in range(STREAMS):
            clips, resets = _clips(i, ref.input_shape), _restarts(i)
            for c in range(CLIPS):
                want = ref.step(clips[c], np.array([resets[c]]))
                worst = max(worst, float(np.abs(out[i][c] - want).max()))
    assert worst <= 1e-5, f"{model}: max |triton - ort| = {worst}"


def test_restart_changes_logits_so_the_check_can_fail(server: TritonServer) -> None:
    with RemoteSession(server.url, "memvit_dyn", timeout_s=60) as s:
        x = _clips(0, s.input_shape)
        s.step(x[0], np.array([True]))
        carried = s.step(x[1], np.array([False]))
        fresh = s.step(x[1], np.array([True]))
        assert np.abs(carried - fresh).max() > 1e-4  # the memory matters: a lost state would be caught
        s.mark_last()
        s.step(x[2], np.array([False]))
        with pytest.raises(StateError, match="has ended"):  # never a silent fresh start
            s.step(x[3], np.array([False]))
        s.step(x[3], np.array([True]))  # a reset starts a new sequence


def test_repository_configs(server: TritonServer) -> None:
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as pb

    def cfg(name: str) -> pb.ModelConfig:
        return text_format.Parse((server.repo / name / "config.pbtxt").read_text(), pb.ModelConfig())

    b1, dyn, clip, enc = cfg("memvit_b1"), cfg("memvit_dyn"), cfg("slow_fs2"), cfg("pair_encode")
    assert b1.max_batch_size == 0 and dyn.max_batch_size == 8
    assert [s.input_name for s in dyn.sequence_batching.state] == [
        *(f"state_in.mem.{b}.{kv}" for b in range(4) for kv in "kv"),
        "state_in.mem.valid",
    ]
    assert all(s.initial_state[0].zero_data for s in dyn.sequence_batching.state)
    assert list(b1.sequence_batching.state[0].dims) == [1, 4, 65, 16]  # 4 clips of 64 tokens and cls, 16 wide
    assert list(dyn.sequence_batching.state[0].dims) == [4, 65, 16]
    assert dyn.sequence_batching.control_input[0].name == "reset"
    assert "kind: CONTROL_SEQUENCE_START" in (server.repo / "memvit_dyn" / "config.pbtxt").read_text()
    assert json.loads(dyn.parameters["edgemem.model"].string_value)["name"] == "memvit_tiny"
    assert not clip.HasField("sequence_batching") and clip.HasField("dynamic_batching")
    assert [i.name for i in clip.input] == ["frames"]  # its ignored reset is dropped
    assert [o.name for o in enc.output] == ["features", "contribution"]


def test_cm_pair_served_as_two_models(server: TritonServer, graphs: dict[str, Path]) -> None:
    import onnxruntime as ort
    import tritonclient.grpc as gc

    x = np.random.default_rng(5).random((3, 3, 8, 32, 32), dtype=np.float32)
    client = gc.InferenceServerClient(server.url)
    inp = gc.InferInput("frames", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    res = client.infer("pair_encode", [inp], client_timeout=60)
    ref = ort.InferenceSession(str(graphs["pair_encode"]), providers=["CPUExecutionProvider"])
    feats, contrib = ref.run(["features", "contribution"], {"frames": x})
    assert np.abs(res.as_numpy("features") - feats).max() <= 1e-5
    assert np.abs(res.as_numpy("contribution") - contrib).max() <= 1e-5
    client.close()


def test_stream_cli_with_triton_matches_in_process(
    server: TritonServer, graphs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    vids = [str(make_video(tmp_path / f"v{i}.mp4", frames=40 + 8 * i, fps=30)) for i in range(3)]
    remote, local = tmp_path / "remote.jsonl", tmp_path / "local.jsonl"
    rc = main(["stream", *vids, "--triton", server.url, "--model", "tiny_dyn", "--jsonl", str(remote), "--quiet"])
    assert rc == 0, capsys.readouterr().err
    rc = main(["stream", *vids, "--model", str(graphs["tiny_dyn"]), "--jsonl", str(local), "--quiet"])
    assert rc == 0, capsys.readouterr().err
    key = lambda r: (r["source"], r["clip_index"])  # noqa: E731
    got = sorted((json.loads(ln) for ln in remote.read_text().splitlines()), key=key)
    want = sorted((json.loads(ln) for ln in local.read_text().splitlines()), key=key)
    assert [key(r) for r in got] == [key(r) for r in want] and len(got) > 6
    for a, b in zip(got, want, strict=True):
        assert [t["index"] for t in a["topk"]] == [t["index"] for t in b["topk"]]
        assert max(abs(x["score"] - y["score"]) for x, y in zip(a["topk"], b["topk"], strict=True)) <= 1e-5


def test_serve_bench_results_merge_into_report(server: TritonServer, tmp_path: Path) -> None:
    from edgemem.bench.schema import read_results, write_result
    from edgemem.serve.bench import serve_bench

    results = serve_bench(server.url, "memvit_dyn", [1, 4], clips=3, warmup=1, timeout_s=60)
    for r in results:
        write_result(tmp_path, r)
    back = read_results([tmp_path])
    assert sorted(r["batch"] for r in back) == [1, 4] and {r["runtime"] for r in back} == {"triton-onnxruntime"}
    four = next(r for r in back if r["batch"] == 4)["serving"]
    assert four["inferences"] == 4 * 3 and 1 <= four["executions"] <= 12
    assert sum(int(b) * n for b, n in four["batch_histogram"].items()) == 12


def test_server_killed_mid_stream_is_reported_per_stream(
    graphs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from edgemem.serve.remote_stream import run_remote_streams

    write_repository([graphs["tiny_dyn"]], tmp_path / "repo", names=["tiny"])
    srv = _start(tmp_path / "repo", tmp_path)
    vids = [str(make_video(tmp_path / f"long{i}.mp4", frames=150, fps=30)) for i in range(2)]
    seen = []

    def kill_after_two(rec: object, stats: object) -> None:
        seen.append(rec)
        if len(seen) == 2:
            srv.kill()

    try:
        _, outcomes = run_remote_streams(srv.url, "tiny", vids, on_clip=[kill_after_two], request_timeout_s=20)
    finally:
        srv.stop()
    assert all(o.error for o in outcomes)
    assert any("memory lost" in o.error and "at clip" in o.error for o in outcomes), [o.error for o in outcomes]
    # The command: one line per failed stream, then the summary; exit status 2, no hang.
    rc = main(["stream", vids[0], "--triton", srv.url, "--model", "tiny", "--quiet", "--request-timeout", "5"])
    err = capsys.readouterr().err
    assert rc == 2 and "1 of 1 streams failed" in err and vids[0] in err
    with pytest.raises(RemoteError, match="cannot read the config"):
        RemoteSession(srv.url, "tiny", timeout_s=5)


def test_start_without_server_or_backend_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "repo").mkdir()
    rc = main(["serve", "start", "--repo", str(tmp_path / "repo"), "--tritonserver", str(tmp_path / "none")])
    err = capsys.readouterr().err
    assert rc == 2 and "is not an executable file" in err and len(err.strip().splitlines()) == 1
    rc = main(["serve", "start", "--repo", str(tmp_path / "repo"), "--backend-directory", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and "no onnxruntime/ backend" in err

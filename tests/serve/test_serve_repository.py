"""``edgemem serve export`` without a server: configs checked against Triton's schema, the served graph
(``reset`` as ``[B, 1]``) equal to the exported one, refusals, and nothing half-written.

Needs only ``tritonclient`` (Triton's ``model_config_pb2``); the server tests are in test_serve.py.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from runtime_models import export, make_model

from edgemem.cli import main
from edgemem.errors import InputError, UnsupportedError

if importlib.util.find_spec("tritonclient") is None:
    pytest.skip("needs tritonclient[grpc] (pip install -e .[serve])", allow_module_level=True)

from google.protobuf import text_format  # noqa: E402
from tritonclient.grpc import model_config_pb2 as pb  # noqa: E402

from edgemem.serve.config import ServeOptions  # noqa: E402
from edgemem.serve.repository import write_repository  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def graphs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("graphs")
    return {
        "dyn": export(make_model(seed=0), d / "tiny_dyn.onnx"),
        "b1": export(make_model(seed=0), d / "tiny_b1.onnx", batch=1),
        "b2": export(make_model(seed=0), d / "tiny_b2.onnx", batch=2),
    }


def _config(repo: Path, name: str) -> pb.ModelConfig:
    return text_format.Parse((repo / name / "config.pbtxt").read_text(), pb.ModelConfig())


def _run(path: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"]).run(None, feeds)


def test_dynamic_graph_gets_a_reset_of_shape_b_1_and_computes_the_same(graphs: dict[str, Path], tmp_path: Path) -> None:
    write_repository([graphs["dyn"]], tmp_path / "repo", opts=ServeOptions(max_batch=4, strategy="direct"))
    cfg = _config(tmp_path / "repo", "tiny_dyn")
    assert cfg.max_batch_size == 4 and cfg.sequence_batching.HasField("direct")
    assert [(s.input_name, s.output_name, list(s.dims)) for s in cfg.sequence_batching.state] == [
        ("state_in.mem", "state_out.mem", [2, 8]),
        ("state_in.count", "state_out.count", [1]),
    ]
    assert [i.name for i in cfg.input] == ["frames"] and [o.name for o in cfg.output] == ["logits"]
    served = tmp_path / "repo" / "tiny_dyn" / "1" / "model.onnx"
    reset_in = next(i for i in onnx.load(str(served)).graph.input if i.name == "reset")
    assert [d.dim_param or d.dim_value for d in reset_in.type.tensor_type.shape.dim] == ["batch", 1]
    rng = np.random.default_rng(0)
    frames = rng.random((3, 3, 4, 16, 16), dtype=np.float32)
    mem, count = rng.random((3, 2, 8), dtype=np.float32), np.full((3, 1), 2.0, np.float32)
    reset = np.array([True, False, True])
    want = _run(graphs["dyn"], {"frames": frames, "reset": reset, "state_in.mem": mem, "state_in.count": count})
    got = _run(served, {"frames": frames, "reset": reset[:, None], "state_in.mem": mem, "state_in.count": count})
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a, b)


def test_batch_one_graph_is_served_with_max_batch_size_0(graphs: dict[str, Path], tmp_path: Path) -> None:
    write_repository([graphs["b1"]], tmp_path / "repo", names=["m"])
    cfg = _config(tmp_path / "repo", "m")
    assert cfg.max_batch_size == 0 and cfg.sequence_batching.HasField("oldest")
    assert list(cfg.input[0].dims) == [1, 3, 4, 16, 16] and list(cfg.sequence_batching.state[0].dims) == [1, 2, 8]
    assert cfg.sequence_batching.max_sequence_idle_microseconds == 60_000_000
    assert cfg.parameters["edgemem.contract"].string_value == "2"
    served = tmp_path / "repo" / "m" / "1" / "model.onnx"
    assert served.read_bytes() != b"" and onnx.load(str(served)).graph.input[1].name == "reset"


def test_refusals_leave_nothing_written(graphs: dict[str, Path], tmp_path: Path, capsys) -> None:
    repo = tmp_path / "repo"
    rc = main(["serve", "export", str(graphs["dyn"]), str(graphs["b2"]), "--repo", str(repo)])
    err = capsys.readouterr().err
    assert rc == 2 and "static batch of 2" in err and len(err.strip().splitlines()) == 1
    assert not repo.exists() or not any(repo.iterdir())  # the valid first graph was not written either
    with pytest.raises(UnsupportedError, match="runs on --kind gpu"):
        write_repository([graphs["dyn"]], repo, opts=ServeOptions(accelerator="tensorrt"))
    with pytest.raises(InputError, match="served as model 'x'"):
        write_repository([graphs["dyn"], graphs["b1"]], repo, names=["x", "x"])
    with pytest.raises(InputError, match="one name per graph"):
        write_repository([graphs["dyn"]], repo, names=["a", "b"])
    rc = main(["serve", "export", str(graphs["b1"]), "--repo", str(repo), "--max-batch", "4"])
    assert rc == 2 and "--max-batch applies to dynamic-batch graphs" in capsys.readouterr().err
    rc = main(["serve", "export", str(graphs["b1"]), "--repo", str(repo), "--max-sequences", "0"])  # not 256
    assert rc == 2 and "--max-sequences must be >= 1" in capsys.readouterr().err
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no staging folder left behind


def test_export_replaces_a_model_in_place(graphs: dict[str, Path], tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    write_repository([graphs["dyn"]], repo, names=["m"], opts=ServeOptions(max_batch=2))
    write_repository([graphs["b1"]], repo, names=["other"])
    write_repository([graphs["dyn"]], repo, names=["m"], opts=ServeOptions(max_batch=16, instances=3))
    cfg = _config(repo, "m")
    assert cfg.max_batch_size == 16 and cfg.instance_group[0].count == 3
    assert sorted(p.name for p in repo.iterdir()) == ["m", "other"]

"""The CM two-scan pair on ONNX Runtime (and OpenVINO) equals the PyTorch video-level output."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from edgemem.errors import InputError, StateError
from edgemem.export.cm_pair import export_cm_pair
from edgemem.models import create_model
from edgemem.runtimes.cm_runtime import CMVideoClassifier

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, Path]:
    torch.manual_seed(0)
    m = create_model("cm_slow_tiny")
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm3d):
                mod.weight.uniform_(0.5, 1.5)
        m.backbone.head.projection.weight.normal_(std=0.5)
    m.eval()
    stem = tmp_path_factory.mktemp("pair") / "cm_tiny"
    export_cm_pair(m, stem)
    return m, stem


def test_pair_on_ort_equals_pytorch_views(pair: tuple[torch.nn.Module, Path]) -> None:
    m, stem = pair
    views = torch.randn(2, 3, 4, 3, 8, 32, 32)
    with torch.no_grad():
        want = m.predict_views(views).numpy()
        per_clip = m.two_scan(views[:, 1]).numpy()
    clf = CMVideoClassifier.open(stem, "ort-cpu", threads=1)
    got = clf.predict(views.numpy())
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(clf.predict(views[0].numpy()), want[0], rtol=1e-4, atol=1e-6)
    # the raw graphs: memory from all N clips of one spatial position = the paper's N-clip forward
    enc = clf.encode({"frames": views[:, 1].reshape(-1, 3, 8, 32, 32).numpy()})
    memory = enc["contribution"].reshape(2, 4, 16, 16).mean(1)
    logits = clf.classify({"features": enc["features"], "memory": np.repeat(memory, 4, 0)})["logits"]
    np.testing.assert_allclose(logits.reshape(2, 4, -1), per_clip, rtol=1e-4, atol=1e-5)


def test_pair_on_openvino_f32(pair: tuple[torch.nn.Module, Path]) -> None:
    pytest.importorskip("openvino")
    m, stem = pair
    views = torch.randn(1, 3, 2, 3, 8, 32, 32)
    with torch.no_grad():
        want = m.predict_views(views).numpy()
    got = CMVideoClassifier.open(stem, "openvino", threads=1).predict(views.numpy())
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_pair_metadata_and_bad_inputs(pair: tuple[torch.nn.Module, Path], tmp_path: Path) -> None:
    _, stem = pair
    meta = {p.key: p.value for p in onnx.load(f"{stem}.encode.onnx").metadata_props}
    assert meta["edgemem.role"] == "cm.encode" and meta["edgemem.state"] == "[]"
    clf = CMVideoClassifier.open(stem, "ort-cpu", threads=1)
    with pytest.raises(InputError, match="views must have shape"):
        clf.predict(np.zeros((3, 4, 3, 4, 32, 32), np.float32))
    with pytest.raises(InputError, match="centre"):
        clf.predict(np.zeros((3, 2, 3, 8, 32, 32), np.float32), centre=5)
    # a pair whose halves come from different models is refused
    cls = onnx.load(f"{stem}.classify.onnx")
    for p in cls.metadata_props:
        if p.key == "edgemem.cm":
            p.value = p.value.replace('"memory_shape": [16, 16]', '"memory_shape": [32, 32]')
    onnx.save(cls, tmp_path / "mixed.classify.onnx")
    (tmp_path / "mixed.encode.onnx").write_bytes(Path(f"{stem}.encode.onnx").read_bytes())
    with pytest.raises(StateError, match="different models"):
        CMVideoClassifier.open(tmp_path / "mixed")
    (tmp_path / "swap.encode.onnx").write_bytes(Path(f"{stem}.classify.onnx").read_bytes())
    (tmp_path / "swap.classify.onnx").write_bytes(Path(f"{stem}.classify.onnx").read_bytes())
    with pytest.raises(StateError, match="not a CM"):
        CMVideoClassifier.open(tmp_path / "swap")
    with pytest.raises(InputError, match="not found"):
        CMVideoClassifier.open(tmp_path / "absent")


def test_online_cm_through_the_generic_exporter(tmp_path: Path) -> None:
    """The online CM is a plain StreamingModel: ``to_onnx`` exports and verifies it with no special case."""
    from edgemem.export.onnx import to_onnx

    torch.manual_seed(0)
    m = create_model("cm_slow_tiny").eval()
    result = to_onnx(m, tmp_path / "cm.onnx", batch=2, clips=5, boundaries=1)
    assert result.report is not None and result.report.passed
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "cm.onnx")).metadata_props}
    assert '"cm.sum"' in meta["edgemem.state"] and '"kind": "cm"' in meta["edgemem.model"]

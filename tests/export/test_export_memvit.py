"""Export of the real MViT/MeMViT models; the official fixture reproduced on ONNX Runtime from metadata alone."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import OFFICIAL_TINY as FIXTURE

from edgemem.cli import main
from edgemem.export.onnx import to_onnx
from edgemem.models import create_model


def metadata_only_loop(path: Path, clips: np.ndarray, first: np.ndarray) -> np.ndarray:
    """What any runtime does: read only ``edgemem.state``, zero states, feed frames/reset, carry state."""
    model = onnx.load(str(path), load_external_data=False)
    specs = json.loads({p.key: p.value for p in model.metadata_props}["edgemem.state"])
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    batch = clips.shape[1]
    state = {s["name"]: np.zeros([batch if isinstance(d, str) else d for d in s["shape"]], s["dtype"]) for s in specs}
    names = [o.name for o in sess.get_outputs()]
    logits = []
    for t in range(len(clips)):
        feeds = {"frames": clips[t].astype(np.float32), "reset": np.asarray(first[t], dtype=bool).reshape(batch)}
        feeds.update({f"state_in.{k}": v for k, v in state.items()})
        outs = dict(zip(names, sess.run(None, feeds), strict=True))
        state = {k: outs[f"state_out.{k}"] for k in state}
        logits.append(outs["logits"])
    return np.stack(logits)


@pytest.mark.parametrize("sampler, stream", [("all", "s1_all_b1"), ("gap2", "s2_gap2_b1")])
def test_official_fixture_from_yaml_and_pyth(tmp_path, capsys, sampler: str, stream: str) -> None:
    out = tmp_path / f"tiny_{sampler}.onnx"
    rc = main(["export", str(FIXTURE / f"tiny_config_sampler_{sampler}.yaml"),
               "--checkpoint", str(FIXTURE / "tiny_memvit.pyth"), "--out", str(out)])  # fmt: skip
    printed = capsys.readouterr().out
    assert rc == 0 and "PASSED" in printed and out.is_file()
    data = np.load(FIXTURE / "tiny_memvit_stream.npz")
    got = metadata_only_loop(out, data[f"{stream}/clips"], data[f"{stream}/is_first_clip"])
    ref = data[f"{stream}/logits"]
    assert got.shape == ref.shape
    assert np.abs(got - ref).max() < 1e-4
    # Memory matters in this fixture: a memory-less replay would be far off.
    if stream == "s1_all_b1":
        assert np.abs(data[f"{stream}/logits_if_no_memory"] - ref)[1:].max() > 1e-2
    # `edgemem verify` rebuilds the reference from the card and the graph's own weights.
    assert main(["verify", str(out), "--runtimes", "ort-cpu,openvino", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["passed"] and [r["runtime"] for r in report["runtimes"]] == ["ort-cpu", "openvino"]
    assert len(report["runtimes"][0]["drift"]["logits"]) == 16


def test_mvit_tiny_preset_exports_and_verifies(tmp_path) -> None:
    result = to_onnx(create_model("mvit_tiny").eval(), tmp_path / "mvit_tiny.onnx", clips=16)
    assert result.report.passed and result.report.runtimes[0].outputs[0].max_abs < 1e-4
    ops = result.stats.ops
    assert not {"If", "Loop", "Scan"} & set(ops)
    assert result.stats.nodes < 1000 and result.bytes < 4 * 2**20  # relative positions stay compact


@pytest.mark.skipif(not os.environ.get("EDGEMEM_SLOW"), reason="full-size export takes minutes; set EDGEMEM_SLOW=1")
def test_memvit16_full_size_export(tmp_path) -> None:
    start = time.perf_counter()
    result = to_onnx(create_model("memvit16_16x4").eval(), tmp_path / "memvit16.onnx", clips=16)
    print(
        f"memvit16_16x4: {result.bytes / 2**20:.1f} MiB, {result.stats.nodes} nodes, {time.perf_counter() - start:.0f} s"
    )
    assert result.report.passed
    assert result.stats.nodes < 5000 and result.bytes < 400 * 2**20

"""The official MeMViT fixture through every CPU runtime: a graph exported from the official tiny
checkpoint replays the official streams (logits within 1e-4) and hands its state from ONNX Runtime
to OpenVINO mid-stream."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import OFFICIAL_TINY as FIXTURES

from edgemem.runtimes import load_state, open_session, save_state
from edgemem.runtimes.availability import check

ATOL = 1e-4
RUNTIMES = [r for r in ("ort-cpu", "openvino", "openvino-stateful") if check(r).available]


@pytest.fixture(scope="module")
def graph(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from edgemem.export.onnx import to_onnx
    from edgemem.models.resolve import resolve_model

    torch.set_num_threads(1)
    model = resolve_model(str(FIXTURES / "tiny_config_sampler_all.yaml"), str(FIXTURES / "tiny_memvit.pyth"))
    out = tmp_path_factory.mktemp("memvit") / "official_tiny_all.onnx"
    return to_onnx(model.eval(), out, batch=1, verify=False).path


@pytest.fixture(scope="module")
def stream() -> dict[str, np.ndarray]:
    z = np.load(FIXTURES / "tiny_memvit_stream.npz")
    return {k: z[f"s1_all_b1/{k}"] for k in ("clips", "is_first_clip", "logits")}


def replay(session: object, clips: np.ndarray, first: np.ndarray) -> np.ndarray:
    return np.stack(
        [session.step(c.astype(np.float32), np.array([bool(f)])) for c, f in zip(clips, first, strict=True)]
    )


@pytest.mark.parametrize("rt", RUNTIMES)
def test_official_stream(rt: str, graph: Path, stream: dict[str, np.ndarray]) -> None:
    with open_session(graph, rt, threads=1) as s:
        assert s.model_card.memory is not None and s.model_card.memory.kind == "memvit"
        out = replay(s, stream["clips"], stream["is_first_clip"])
    np.testing.assert_allclose(out, stream["logits"], atol=ATOL, rtol=0)


def test_state_from_ort_after_three_clips_continues_in_openvino(
    graph: Path, stream: dict[str, np.ndarray], tmp_path: Path
) -> None:
    clips, first, ref = stream["clips"], stream["is_first_clip"], stream["logits"]
    assert not first[1:4].any()  # clips 1-3 use the memory of clip 0-2
    with open_session(graph, "ort-cpu", threads=1) as s:
        replay(s, clips[:3], first[:3])
        state, spec = s.get_state(), s.state_spec
    assert any(v.any() for v in state.values())
    path = save_state(tmp_path / "after3.safetensors", state, spec)
    for rt in ("openvino", "openvino-stateful"):
        with open_session(graph, rt, threads=1) as s:
            s.set_state(load_state(path).state)
            np.testing.assert_allclose(replay(s, clips[3:], first[3:]), ref[3:], atol=ATOL, rtol=0, err_msg=rt)

"""A contract-1 graph (exported before contract 2, kept in tests/fixtures/contract_v1) still opens and
replays the official MeMViT stream on every CPU runtime within 1e-4; its card reads without cost."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import OFFICIAL_TINY

from edgemem.contract import META_CONTRACT, read_contract
from edgemem.runtimes import open_session
from edgemem.runtimes.availability import check

V1_GRAPH = Path(__file__).resolve().parents[1] / "fixtures" / "contract_v1" / "official_tiny_all_v1.onnx"
ATOL = 1e-4


def test_fixture_is_a_contract1_graph() -> None:
    meta = {p.key: p.value for p in onnx.load(str(V1_GRAPH), load_external_data=False).metadata_props}
    assert meta[META_CONTRACT] == "1"
    c = read_contract(V1_GRAPH)
    assert c.version == "1" and c.card.cost is None and c.card.backbone is None
    assert c.card.family == "mvit" and c.card.clip.frames == 8 and c.card.clip.crop_size == 32
    assert c.card.memory is not None and c.card.memory.kind == "memvit" and c.card.memory.temporal_support_clips == 4


@pytest.mark.parametrize("rt", ["ort-cpu", "openvino"])
def test_v1_graph_replays_the_official_stream(rt: str) -> None:
    if not check(rt).available:
        pytest.skip(f"{rt}: {check(rt).detail}")
    z = np.load(OFFICIAL_TINY / "tiny_memvit_stream.npz")
    clips, first, ref = (z[f"s1_all_b1/{k}"] for k in ("clips", "is_first_clip", "logits"))
    with open_session(V1_GRAPH, rt, threads=1) as s:
        assert s.model_card.memory is not None and s.model_card.cost is None
        out = np.stack([s.step(c.astype(np.float32), np.array([bool(f)])) for c, f in zip(clips, first, strict=True)])
    np.testing.assert_allclose(out, ref, atol=ATOL, rtol=0)

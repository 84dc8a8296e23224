"""The cost block of a new graph's card (measured at export) is what ``edgemem info MODEL --json`` prints."""

from __future__ import annotations

import json

import pytest
import torch

from edgemem.cli import main
from edgemem.contract import CONTRACT_VERSION, read_contract
from edgemem.export.onnx import to_onnx
from edgemem.models import create_model


@pytest.mark.parametrize("name, backbone", [("memvit_tiny", "mvit_tiny"), ("slow_tiny", None)])
def test_graph_card_carries_the_cost_info_prints(name: str, backbone: str | None, tmp_path, capsys) -> None:
    assert main(["info", name, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    torch.manual_seed(0)
    path = to_onnx(create_model(name).eval(), tmp_path / f"{name}.onnx", verify=False).path
    c = read_contract(path)
    assert c.version == CONTRACT_VERSION == "2"
    cost = c.card.cost
    assert cost is not None
    assert cost.params == info["params"] > 0
    assert cost.gflops_step == info["gflops_step"] > 0
    assert cost.gflops_first_step == info["gflops_first_step"]
    assert cost.state_bytes == info["state_bytes"]["total"]
    support = info["temporal_support"]
    assert (cost.temporal_support_clips, cost.temporal_support_s) == (support["clips"], support["seconds"])
    assert c.card.backbone == info["backbone"] == backbone
    assert (cost.state_bytes > 0) == (c.card.memory is not None)

"""Every registered preset (``list_models()``, not a hand list): state specs, ``init_state``, the model
card round trip (built on the meta device, so full-size presets cost no memory), and for the tiny
presets an exported graph that ONNX Runtime runs equal to PyTorch; duplicate names are refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from edgemem import contract as C
from edgemem.errors import EdgememError
from edgemem.models import create_model, from_card, list_models, register_model
from edgemem.models.registry import register_family

torch.set_num_threads(1)
MODELS = list_models()
TINY = [n for n in MODELS if "_tiny" in n]  # memvit_tiny_long too


def _meta(name: str) -> Any:
    with torch.device("meta"):
        return create_model(name)


def test_every_family_has_presets_and_tiny_ones() -> None:
    assert len(MODELS) >= 15
    assert {"memvit_tiny", "mvit_tiny", "cm_slow_tiny", "slow_tiny"} <= set(TINY)


@pytest.mark.parametrize("name", MODELS)
def test_state_specs_and_init_state(name: str) -> None:
    m = _meta(name)
    specs = m.state_specs(3)
    assert len({s.name for s in specs}) == len(specs)
    state = m.init_state(3)
    assert list(state) == [s.name for s in specs]
    C.check_state(state, specs, batch=3)
    for s in specs:
        assert s.shape[0] == 3 and all(isinstance(d, int) and d > 0 for d in s.shape), s
        assert str(state[s.name].dtype).removeprefix("torch.") == s.dtype
    assert [s.with_batch(3) for s in m.state_specs(1)] == specs
    assert len(m.input_shape) == 4 and m.input_shape[0] == 3


@pytest.mark.parametrize("name", MODELS)
def test_model_card_round_trip(name: str) -> None:
    m = _meta(name)
    card = m.model_card()
    assert card.name == name
    with torch.device("meta"):
        again = from_card(card)
    assert again.model_card() == card
    assert again.state_specs(2) == m.state_specs(2)
    assert again.input_shape == m.input_shape
    assert {k: v.shape for k, v in again.state_dict().items()} == {k: v.shape for k, v in m.state_dict().items()}


@pytest.mark.parametrize("name", TINY)
def test_tiny_preset_exports_and_ort_equals_pytorch(name: str, tmp_path: Path) -> None:
    """The export verifies the graph on ONNX Runtime against the model over a stream with resets."""
    from edgemem.export.onnx import to_onnx

    torch.manual_seed(0)
    m = create_model(name).eval()
    res = to_onnx(m, tmp_path / f"{name}.onnx", batch=2, clips=4, boundaries=1)
    assert res.report is not None and res.report.passed
    (ort,) = res.report.runtimes
    assert ort.runtime == "ort-cpu" and ort.error is None and ort.outputs
    logits = next(o for o in ort.outputs if o.name == C.LOGITS)
    assert logits.max_abs <= 1e-4 + 1e-4 * logits.max_ref and res.report.steps == 4
    assert C.read_contract(res.path).card.name == name


def test_duplicate_names_are_refused() -> None:
    def memvit_tiny() -> None: ...

    with pytest.raises(EdgememError, match="'memvit_tiny' is already registered"):
        register_model(memvit_tiny)
    with pytest.raises(EdgememError, match="family 'mvit' is already registered"):
        register_family("mvit")(lambda card: None)
    assert create_model("memvit_tiny").model_card().name == "memvit_tiny"  # the original stays


@pytest.mark.parametrize("name", MODELS)
def test_memory_presets_declare_a_registered_backbone(name: str) -> None:
    """A memory preset names the memory-less preset it is compared with (bench pairs by it); others none."""
    card = _meta(name).model_card()
    if card.memory is None:
        assert card.backbone is None
    else:
        assert card.backbone in MODELS and _meta(card.backbone).model_card().memory is None


def test_zoo_weights_declare_their_shipped_backbone() -> None:
    assert create_model("memvit_tiny_cuematch").model_card().backbone == "mvit_tiny_cuematch"
    assert create_model("cm_slow_tiny_cuematch").model_card().backbone == "slow_tiny_cuematch"

"""The typed model card of contract 2: strict JSON both ways, contract-1 cards read, concrete specs."""

from __future__ import annotations

import json

import pytest
from export_toys import make_toy

from edgemem.contract import ClipSpec, ConcreteSpec, Cost, ModelCard, TensorSpec, parse_card, stored_card
from edgemem.errors import StateError


def card() -> ModelCard:
    return make_toy().model_card().with_(cost=Cost(10, 0.5, 0.25, 108, 3, 0.4), backbone="toy_plain")


def test_json_round_trip_is_exact() -> None:
    c = card()
    d = json.loads(json.dumps(c.to_json()))
    assert ModelCard.from_json(d) == c
    assert (
        set(d) == set(ModelCard.SCHEMA)
        and set(d["clip"]) == set(ClipSpec.SCHEMA)
        and set(d["cost"]) == set(Cost.SCHEMA)
    )


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda d: d.update(extra=1), r"unknown keys \['extra'\]"),
        (lambda d: d.pop("backbone"), r"lacks \['backbone'\]"),
        (lambda d: d["clip"].update(fps=30), r"\.clip.*unknown keys \['fps'\]"),
        (lambda d: d["clip"].update(frames=True), "'frames' is True"),
        (lambda d: d["clip"].update(mean=[]), "'mean' must be a non-empty list"),
        (lambda d: d["clip"].update(target_fps=0), "'target_fps' must be positive"),
        (lambda d: d["cost"].pop("params"), r"\.cost.*lacks \['params'\]"),
        (lambda d: d["cost"].update(flops=1), r"\.cost.*unknown keys \['flops'\]"),
        (lambda d: d.update(memory={"slots": 3}), "'kind'"),
        (lambda d: d["memory"].pop("temporal_support_clips"), "temporal_support_clips"),
        (lambda d: d.update(num_classes="5"), "'num_classes' is '5'"),
        (lambda d: d.update(class_names=["a"]), "'class_names' must be 5 strings"),
        (lambda d: d.update(head_act="relu"), "head_act"),
    ],
)
def test_from_json_is_strict(edit, match: str) -> None:
    d = json.loads(json.dumps(card().to_json()))
    edit(d)
    with pytest.raises(StateError, match=match):
        ModelCard.from_json(d)


def v1_card() -> dict:
    """The flat card contract 1 wrote (clip keys at the top, no backbone/cost; extra keys allowed)."""
    c = card().to_json()
    clip = c.pop("clip")
    c.pop("backbone"), c.pop("cost")
    return {**c, **clip, "memory": {"kind": "toy", "layers": [0, 1], "slots": 3}, "something_else": 1}


def test_contract1_card_reads_without_backbone_and_cost() -> None:
    c = ModelCard.from_v1(v1_card())
    assert c.backbone is None and c.cost is None
    assert c.clip == ClipSpec(4, 2, 16) and c.memory is not None and c.memory.temporal_support_clips == 6
    assert parse_card(v1_card(), "1") == c == stored_card(v1_card())
    assert stored_card(card().to_json()) == card()
    with pytest.raises(StateError, match="unknown keys"):
        parse_card(v1_card(), "2")
    with pytest.raises(StateError, match=r"lacks \['crop_size'\]"):
        ModelCard.from_v1({k: v for k, v in v1_card().items() if k != "crop_size"})
    with pytest.raises(StateError, match="'frames' is True"):
        ModelCard.from_v1({**v1_card(), "frames": True})


def test_symbolic_and_concrete_specs() -> None:
    s = TensorSpec("mem", ("batch", 3, 8))
    assert s.concrete(2) == ConcreteSpec("mem", (2, 3, 8), "float32")
    assert s.concrete(2).zeros().shape == (2, 3, 8)
    assert TensorSpec("v", (4, 3)).concrete() == ConcreteSpec("v", (4, 3))
    with pytest.raises(StateError, match="give the batch size"):
        s.concrete()
    with pytest.raises(StateError, match="symbolic"):
        TensorSpec("x", (1, "n")).concrete(1)

"""The graph contract: metadata schema, I/O names/shapes/dtypes, read_contract on exported graphs."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from export_toys import make_toy

from edgemem.contract import (
    META_CONTRACT,
    META_STATE,
    GraphContract,
    TensorSpec,
    read_contract,
    validate_state_json,
    write_contract,
)
from edgemem.errors import InputError, StateError
from edgemem.export.onnx import to_onnx


@pytest.fixture(scope="module")
def toy_graph(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("contract") / "toy.onnx"
    to_onnx(make_toy(), path, verify=False)
    return str(path)


def test_read_contract_names_shapes_dtypes(toy_graph: str) -> None:
    c = read_contract(toy_graph)
    assert isinstance(c, GraphContract)
    assert c.input_names == ["frames", "reset", "state_in.mem", "state_in.valid"]
    assert c.output_names == ["logits", "state_out.mem", "state_out.valid"]
    assert c.frames == TensorSpec("frames", (1, 3, 4, 16, 16), "float32")
    assert c.reset == TensorSpec("reset", (1,), "bool")
    assert c.logits == TensorSpec("logits", (1, 5), "float32")
    assert c.state == (TensorSpec("mem", (1, 3, 8)), TensorSpec("valid", (1, 3)))
    assert c.card.family == "test_toy" and c.export["precision"] == "f32"
    assert c.card.cost is not None and c.card.cost.state_bytes == (3 * 8 + 3) * 4
    model = onnx.load(toy_graph)
    assert [i.name for i in model.graph.input] == c.input_names
    assert [o.name for o in model.graph.output] == c.output_names
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta[META_CONTRACT] == "2"
    assert json.loads(meta[META_STATE]) == [
        {"name": "mem", "shape": [1, 3, 8], "dtype": "float32"},
        {"name": "valid", "shape": [1, 3], "dtype": "float32"},
    ]
    zero = c.zero_state()
    assert zero["mem"].shape == (1, 3, 8) and not zero["mem"].any()


def test_memoryless_graph_has_no_state_io(tmp_path) -> None:
    path = tmp_path / "clip.onnx"
    to_onnx(make_toy(memory=False), path)
    c = read_contract(path)
    assert c.state == () and c.input_names == ["frames", "reset"] and c.output_names == ["logits"]


@pytest.mark.parametrize(
    "items, match",
    [
        ({"name": "a"}, "must be a JSON list"),
        ([{"name": "a", "shape": [1, 2]}], "keys name, shape, dtype"),
        ([{"name": "a", "shape": [], "dtype": "float32"}], "non-empty list"),
        ([{"name": "a", "shape": [1, 0], "dtype": "float32"}], "positive ints"),
        ([{"name": "a", "shape": [1, True], "dtype": "float32"}], "positive ints"),
        ([{"name": "a", "shape": [1], "dtype": "complex64"}], "dtype"),
        (
            [{"name": "a", "shape": [1], "dtype": "float32"}, {"name": "a", "shape": [1], "dtype": "float32"}],
            "repeated",
        ),
    ],
)
def test_state_schema_rejects(items: object, match: str) -> None:
    with pytest.raises(StateError, match=match):
        validate_state_json(items)


def test_state_schema_accepts_dynamic_batch() -> None:
    specs = validate_state_json([{"name": "m", "shape": ["batch", 3, 8], "dtype": "float32"}])
    assert specs == [TensorSpec("m", ("batch", 3, 8))]


def test_read_contract_rejects_foreign_and_tampered(toy_graph: str, tmp_path) -> None:
    model = onnx.load(toy_graph)
    plain = onnx.ModelProto()
    plain.CopyFrom(model)
    del plain.metadata_props[:]
    with pytest.raises(StateError, match="not an edgemem graph"):
        read_contract(plain)
    wrong = onnx.ModelProto()
    wrong.CopyFrom(model)
    specs = [TensorSpec("mem", (1, 4, 8)), TensorSpec("valid", (1, 3))]
    write_contract(wrong, specs, make_toy().model_card(), {})
    with pytest.raises(StateError, match="state_in.mem"):
        read_contract(wrong)
    renamed = onnx.ModelProto()
    renamed.CopyFrom(model)
    write_contract(renamed, [TensorSpec("memory", (1, 3, 8)), TensorSpec("valid", (1, 3))], make_toy().model_card(), {})
    with pytest.raises(StateError, match="does not match the contract"):
        read_contract(renamed)
    garbage = tmp_path / "x.onnx"
    garbage.write_bytes(b"not a protobuf at all")
    with pytest.raises(InputError):
        read_contract(garbage)
    with pytest.raises(InputError, match="not found"):
        read_contract(tmp_path / "missing.onnx")


def test_feeds_and_split_outputs(toy_graph: str) -> None:
    c = read_contract(toy_graph)
    state = c.zero_state()
    feeds = c.feeds(np.zeros((1, 3, 4, 16, 16), np.float32), np.array([True]), state)
    assert sorted(feeds) == sorted(c.input_names)
    logits, new = c.split_outputs({"logits": np.zeros((1, 5)), "state_out.mem": 1, "state_out.valid": 2})
    assert new == {"mem": 1, "valid": 2}

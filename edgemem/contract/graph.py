"""The graph-level contract: ``metadata_props`` of an exported graph, validated and cross-checked
against the graph's inputs and outputs. Writes contract 2; reads contracts 1 and 2."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgemem.contract.card import ModelCard, parse_card
from edgemem.contract.specs import (
    FRAMES,
    LOGITS,
    META_CONTRACT,
    META_EXPORT,
    META_MODEL,
    META_STATE,
    RESET,
    TensorSpec,
    specs_to_json,
    state_in_name,
    state_out_name,
    validate_state_json,
)
from edgemem.errors import StateError

# Ops that make a graph int8 (QDQ static, dynamic, QOperator formats).
INT8_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "MatMulInteger", "ConvInteger",
                      "QLinearMatMul", "QLinearConv"})  # fmt: skip

CONTRACT_VERSION = "2"
READABLE_VERSIONS = ("1", "2")  # contract 1: flat card without backbone/cost (ModelCard.from_v1)


_ONNX_DTYPES = {1: "float32", 10: "float16", 16: "bfloat16", 11: "float64", 7: "int64", 6: "int32",
                3: "int8", 2: "uint8", 9: "bool"}  # fmt: skip


def _value_spec(value_info: Any) -> TensorSpec:
    """TensorSpec of an ONNX ValueInfoProto (dim_param strings for symbolic dimensions)."""
    t = value_info.type.tensor_type
    dims = tuple(d.dim_param if d.HasField("dim_param") else d.dim_value for d in t.shape.dim)
    return TensorSpec(value_info.name, dims, _ONNX_DTYPES.get(t.elem_type, f"onnx:{t.elem_type}"))


@dataclass(frozen=True)
class GraphContract:
    """What a runtime needs to drive an edgemem graph, read from the graph alone.

    ``frames``/``reset``/``logits`` are the graph's own I/O specs, ``state`` the ``edgemem.state``
    specs (in graph input order), ``card`` the model card, ``export`` the optional export record.
    """

    frames: TensorSpec
    reset: TensorSpec
    logits: TensorSpec
    state: tuple[TensorSpec, ...]
    card: ModelCard
    export: dict[str, Any]
    version: str = CONTRACT_VERSION
    # The graph holds int8 ops (``INT8_OPS``), whatever its export record says: a graph quantized outside
    # ``edgemem export`` has no record saying so (``precision.of_graph`` reads both).
    quantized: bool = False

    @property
    def batch(self) -> int | str:
        """The batch size, or the name of the dynamic batch dimension."""
        return self.frames.shape[0]

    @property
    def input_names(self) -> list[str]:
        return [FRAMES, RESET, *(state_in_name(s.name) for s in self.state)]

    @property
    def output_names(self) -> list[str]:
        return [LOGITS, *(state_out_name(s.name) for s in self.state)]

    def zero_state(self, batch: int | None = None) -> dict[str, np.ndarray]:
        """All-zero (empty) state as numpy arrays keyed by state name; ``batch`` is needed when dynamic."""
        b = self._batch(batch)
        return {s.name: s.concrete(b).zeros() for s in self.state}

    def feeds(self, frames: np.ndarray, reset: np.ndarray, state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The graph's input dict for one step."""
        return {FRAMES: frames, RESET: reset, **{state_in_name(k): v for k, v in state.items()}}

    def split_outputs(self, outputs: dict[str, np.ndarray]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """``(logits, state)`` from a dict of graph outputs (state keyed by state name)."""
        return outputs[LOGITS], {s.name: outputs[state_out_name(s.name)] for s in self.state}

    def _batch(self, batch: int | None) -> int:
        if isinstance(self.batch, int):
            if batch is not None and batch != self.batch:
                raise StateError(f"this graph has a fixed batch of {self.batch}, not {batch}")
            return self.batch
        if batch is None:
            raise StateError("this graph has a dynamic batch: give the batch size")
        return batch


def write_contract(model: Any, state: list[TensorSpec], card: ModelCard, export: dict[str, Any]) -> None:
    """Set the contract's ``metadata_props`` (version 2) on an ``onnx.ModelProto`` (replacing earlier values)."""
    validate_state_json([s.to_json() for s in state])
    card_json = card.to_json()
    ModelCard.from_json(card_json)  # what is written must read back
    meta = {META_CONTRACT: CONTRACT_VERSION, META_STATE: specs_to_json(state), META_MODEL: json.dumps(card_json)}
    if export:
        meta[META_EXPORT] = json.dumps(export)
    kept = [(p.key, p.value) for p in model.metadata_props if p.key not in meta]
    del model.metadata_props[:]
    for k, v in [*kept, *meta.items()]:
        entry = model.metadata_props.add()
        entry.key, entry.value = k, v


def read_contract(path_or_model: Any) -> GraphContract:
    """Read and cross-check the contract of an ONNX graph (a path or an ``onnx.ModelProto``).

    Checks the metadata schema, then that the graph's inputs are exactly ``frames``, ``reset`` and
    ``state_in.<name>`` and its outputs ``logits`` and ``state_out.<name>`` with the declared
    shapes and dtypes. Raises InputError for an unreadable file, StateError for a contract breach.
    """
    import onnx

    if isinstance(path_or_model, onnx.ModelProto):
        model = path_or_model
    else:
        from pathlib import Path

        from edgemem.errors import InputError

        p = Path(path_or_model)
        if not p.is_file():
            raise InputError(f"graph not found: {p}")
        try:
            model = onnx.load(str(p), load_external_data=False)
        except Exception as e:  # protobuf raises several unrelated types
            raise InputError(
                f"{p} is not an ONNX model: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
            ) from None
    meta = {p.key: p.value for p in model.metadata_props}
    if meta.get(META_CONTRACT) is None:
        raise StateError(f"not an edgemem graph: no '{META_CONTRACT}' metadata")
    version = meta[META_CONTRACT]
    if version not in READABLE_VERSIONS:
        raise StateError(f"graph contract version {version!r}; this edgemem reads {' and '.join(READABLE_VERSIONS)}")
    for key in (META_STATE, META_MODEL):
        if key not in meta:
            raise StateError(f"edgemem graph without '{key}' metadata")
    try:
        state_items, card_json = json.loads(meta[META_STATE]), json.loads(meta[META_MODEL])
        export = json.loads(meta.get(META_EXPORT, "{}"))
    except json.JSONDecodeError as e:
        raise StateError(f"edgemem metadata is not valid JSON: {e}") from None
    specs = validate_state_json(state_items)
    card = parse_card(card_json, version)
    inputs = {v.name: _value_spec(v) for v in model.graph.input}
    outputs = {v.name: _value_spec(v) for v in model.graph.output}
    want_in = [FRAMES, RESET, *(state_in_name(s.name) for s in specs)]
    want_out = [LOGITS, *(state_out_name(s.name) for s in specs)]
    if sorted(inputs) != sorted(want_in) or sorted(outputs) != sorted(want_out):
        raise StateError(f"graph I/O {sorted(inputs)} -> {sorted(outputs)} does not match the contract "
                         f"{sorted(want_in)} -> {sorted(want_out)}")  # fmt: skip
    frames, reset, logits = inputs[FRAMES], inputs[RESET], outputs[LOGITS]
    batch = frames.shape[0] if frames.shape else None
    _expect(frames, "float32", 5, batch)
    _expect(reset, "bool", 1, batch)
    _expect(logits, "float32", 2, batch)
    if logits.shape[1] != card.num_classes:
        raise StateError(f"logits have {logits.shape[1]} classes, the model card says {card.num_classes}")
    for s in specs:
        for io in (inputs[state_in_name(s.name)], outputs[state_out_name(s.name)]):
            if (
                io.dtype != s.dtype
                or len(io.shape) != len(s.shape)
                or any(not isinstance(a, str) and a != b for a, b in zip(s.shape, io.shape, strict=True))
            ):
                raise StateError(
                    f"graph {io.name} is {io.dtype} {list(io.shape)}, metadata says {s.dtype} {list(s.shape)}"
                )
    quantized = any(n.op_type in INT8_OPS for n in model.graph.node)
    return GraphContract(frames, reset, logits, tuple(specs), card, export, version, quantized)


def _expect(spec: TensorSpec, dtype: str, rank: int, batch: int | str | None) -> None:
    if spec.dtype != dtype or len(spec.shape) != rank or spec.shape[0] != batch:
        raise StateError(
            f"graph {spec.name} is {spec.dtype} {list(spec.shape)}: expected {dtype}, rank {rank}, batch {batch}"
        )

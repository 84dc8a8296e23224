"""The state contract: tensor specs, graph I/O names and metadata keys.

Every streaming model has a fixed-shape state (named tensors, zeros = empty). In PyTorch it is
``model.step(frames, state, reset) -> (logits, state)``; in a graph it is the inputs
``frames``, ``reset``, ``state_in.<name>`` and the outputs ``logits``, ``state_out.<name>``,
described by the graph's metadata. Exporters, runtimes, verifiers and benchmarks read this
module and nothing model-specific.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgemem.errors import StateError

CONTRACT_VERSION = "1"

FRAMES = "frames"
RESET = "reset"
LOGITS = "logits"
STATE_IN = "state_in."
STATE_OUT = "state_out."

META_CONTRACT = "edgemem.contract"
META_STATE = "edgemem.state"
META_MODEL = "edgemem.model"

BATCH_DIM = "batch"


@dataclass(frozen=True)
class TensorSpec:
    """Name, shape (batch dimension first; a string marks a dynamic dimension) and dtype."""

    name: str
    shape: tuple[int | str, ...]
    dtype: str = "float32"

    def with_batch(self, batch: int | str) -> TensorSpec:
        return TensorSpec(self.name, (batch, *self.shape[1:]), self.dtype)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> TensorSpec:
        try:
            return cls(str(d["name"]), tuple(d["shape"]), str(d["dtype"]))
        except (KeyError, TypeError) as e:
            raise StateError(f"malformed state spec entry {d!r}: {e}") from None

    @property
    def nbytes_per_item(self) -> int:
        """Bytes of one batch item (all dimensions but the first)."""
        n = int(np.dtype(self.dtype).itemsize)
        for s in self.shape[1:]:
            n *= int(s)
        return n


def state_in_name(name: str) -> str:
    return STATE_IN + name


def state_out_name(name: str) -> str:
    return STATE_OUT + name


def specs_to_json(specs: list[TensorSpec]) -> str:
    return json.dumps([s.to_json() for s in specs])


def specs_from_json(text: str) -> list[TensorSpec]:
    try:
        items = json.loads(text)
    except json.JSONDecodeError as e:
        raise StateError(f"'{META_STATE}' metadata is not valid JSON: {e}") from None
    if not isinstance(items, list):
        raise StateError(f"'{META_STATE}' metadata must be a JSON list")
    return [TensorSpec.from_json(d) for d in items]


def check_state(state: dict[str, Any], specs: list[TensorSpec], batch: int | None = None) -> None:
    """Raise StateError naming the first tensor that does not match the specs.

    ``state`` values may be torch tensors or numpy arrays; a string dimension in a spec
    matches any size (but all batch dimensions must agree with ``batch`` when given).
    """
    expected = {s.name for s in specs}
    got = set(state)
    if got != expected:
        missing, extra = sorted(expected - got), sorted(got - expected)
        parts = ([f"missing {missing}"] if missing else []) + ([f"unexpected {extra}"] if extra else [])
        raise StateError("state does not belong to this model: " + ", ".join(parts))
    for s in specs:
        t = state[s.name]
        shape = tuple(t.shape)
        want = tuple(batch if (i == 0 and batch is not None) else d for i, d in enumerate(s.shape))
        ok = len(shape) == len(want) and all(isinstance(w, str) or w == g for w, g in zip(want, shape, strict=True))
        if not ok:
            raise StateError(f"state tensor '{s.name}' has shape {list(shape)}, expected {list(want)}")
        dt = str(t.dtype).replace("torch.", "")
        if dt != s.dtype:
            raise StateError(f"state tensor '{s.name}' has dtype {dt}, expected {s.dtype}")


# --- The graph-level contract: metadata_props of an exported graph, validated and cross-checked ---

META_EXPORT = "edgemem.export"  # optional: JSON {"precision", "quantize", "opset", "torch", "edgemem"}

DTYPES = ("float32", "float16", "bfloat16", "float64", "int64", "int32", "int8", "uint8", "bool")

# Model card keys and the JSON types each may hold (None = JSON null allowed).
MODEL_CARD_SCHEMA: dict[str, tuple[type | None, ...]] = {
    "name": (str, None),
    "family": (str,),
    "source": (str, None),
    "config": (dict,),
    "frames": (int,),
    "sampling_rate": (int,),
    "crop_size": (int,),
    "target_fps": (int, float),
    "mean": (list,),
    "std": (list,),
    "num_classes": (int,),
    "class_names": (list, None),
    "frame_scale": (int,),
    "memory": (dict, None),
}


def _type_ok(value: Any, allowed: tuple[type | None, ...]) -> bool:
    if value is None:
        return None in allowed
    if isinstance(value, bool):  # bool is an int in Python, never in a card
        return bool in allowed
    return any(t is not None and isinstance(value, t) for t in allowed)


def validate_state_json(items: Any) -> list[TensorSpec]:
    """Validate the decoded ``edgemem.state`` value: a list of ``{name, shape, dtype}``, names unique,
    shape non-empty with positive ints or strings (dynamic), the first dimension being the batch."""
    if not isinstance(items, list):
        raise StateError(f"'{META_STATE}' must be a JSON list, got {type(items).__name__}")
    specs, seen = [], set()
    for d in items:
        if not isinstance(d, dict) or set(d) != {"name", "shape", "dtype"}:
            raise StateError(f"'{META_STATE}' entries must be objects with keys name, shape, dtype; got {d!r}")
        name, shape, dtype = d["name"], d["shape"], d["dtype"]
        if not isinstance(name, str) or not name or name in seen:
            raise StateError(f"'{META_STATE}': state name {name!r} is empty, not a string or repeated")
        seen.add(name)
        if not isinstance(shape, list) or not shape:
            raise StateError(f"'{META_STATE}': shape of '{name}' must be a non-empty list (batch first)")
        for s in shape:
            if not (isinstance(s, str) and s) and not (isinstance(s, int) and not isinstance(s, bool) and s > 0):
                raise StateError(f"'{META_STATE}': shape of '{name}' has {s!r}; dims are positive ints or names")
        if dtype not in DTYPES:
            raise StateError(f"'{META_STATE}': dtype of '{name}' is {dtype!r}, expected one of {list(DTYPES)}")
        specs.append(TensorSpec(name, tuple(shape), dtype))
    return specs


def validate_model_card(card: Any) -> dict[str, Any]:
    """Validate a model card (``edgemem.model``): every key of MODEL_CARD_SCHEMA with its JSON type,
    mean/std of one number per channel, ``memory`` null or a dict with ``kind``. Extra keys are allowed."""
    if not isinstance(card, dict):
        raise StateError(f"'{META_MODEL}' must be a JSON object, got {type(card).__name__}")
    missing = [k for k in MODEL_CARD_SCHEMA if k not in card]
    if missing:
        raise StateError(f"'{META_MODEL}' lacks {missing}")
    for key, allowed in MODEL_CARD_SCHEMA.items():
        if not _type_ok(card[key], allowed):
            names = [("null" if t is None else t.__name__) for t in allowed]
            raise StateError(f"'{META_MODEL}': '{key}' is {card[key]!r}, expected {' or '.join(names)}")
    for key in ("mean", "std"):
        v = card[key]
        if not v or not all(_type_ok(x, (int, float)) for x in v):
            raise StateError(f"'{META_MODEL}': '{key}' must be a non-empty list of numbers")
    if card["memory"] is not None and not isinstance(card["memory"].get("kind"), str):
        raise StateError(f"'{META_MODEL}': 'memory' must be null or an object with a 'kind'")
    return card


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
    card: dict[str, Any]
    export: dict[str, Any]
    version: str = CONTRACT_VERSION

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
        return {s.name: np.zeros((b, *s.shape[1:]), dtype=s.dtype) for s in self.state}

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

    def metadata(self) -> dict[str, str]:
        """The ``metadata_props`` entries of this contract."""
        meta = {META_CONTRACT: self.version, META_STATE: specs_to_json(list(self.state)),
                META_MODEL: json.dumps(self.card)}  # fmt: skip
        if self.export:
            meta[META_EXPORT] = json.dumps(self.export)
        return meta


def write_contract(model: Any, state: list[TensorSpec], card: dict[str, Any], export: dict[str, Any]) -> None:
    """Set the contract's ``metadata_props`` on an ``onnx.ModelProto`` (replacing earlier values)."""
    validate_state_json([s.to_json() for s in state])
    validate_model_card(card)
    meta = {META_CONTRACT: CONTRACT_VERSION, META_STATE: specs_to_json(state), META_MODEL: json.dumps(card)}
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
    if meta[META_CONTRACT] != CONTRACT_VERSION:
        raise StateError(f"graph contract version {meta[META_CONTRACT]!r}; this edgemem reads {CONTRACT_VERSION!r}")
    for key in (META_STATE, META_MODEL):
        if key not in meta:
            raise StateError(f"edgemem graph without '{key}' metadata")
    try:
        state_items, card = json.loads(meta[META_STATE]), json.loads(meta[META_MODEL])
        export = json.loads(meta.get(META_EXPORT, "{}"))
    except json.JSONDecodeError as e:
        raise StateError(f"edgemem metadata is not valid JSON: {e}") from None
    specs = validate_state_json(state_items)
    validate_model_card(card)
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
    if logits.shape[1] != card["num_classes"]:
        raise StateError(f"logits have {logits.shape[1]} classes, the model card says {card['num_classes']}")
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
    return GraphContract(frames, reset, logits, tuple(specs), card, export, meta[META_CONTRACT])


def _expect(spec: TensorSpec, dtype: str, rank: int, batch: int | str | None) -> None:
    if spec.dtype != dtype or len(spec.shape) != rank or spec.shape[0] != batch:
        raise StateError(
            f"graph {spec.name} is {spec.dtype} {list(spec.shape)}: expected {dtype}, rank {rank}, batch {batch}"
        )

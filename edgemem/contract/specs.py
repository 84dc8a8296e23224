"""Tensor specs of the state, the graph's I/O names and the state check.

A ``TensorSpec`` may hold a symbolic dimension (a string, e.g. a dynamic ``batch``); ``concrete(batch)``
gives the ``ConcreteSpec`` of ints that arrays are allocated from.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgemem.errors import StateError

FRAMES = "frames"
RESET = "reset"
LOGITS = "logits"
STATE_IN = "state_in."
STATE_OUT = "state_out."

META_CONTRACT = "edgemem.contract"
META_STATE = "edgemem.state"
META_MODEL = "edgemem.model"
META_EXPORT = "edgemem.export"  # optional: JSON {"precision", "quantize", "opset", "torch", "edgemem"}

BATCH_DIM = "batch"
DTYPES = ("float32", "float16", "bfloat16", "float64", "int64", "int32", "int8", "uint8", "bool")


@dataclass(frozen=True)
class ConcreteSpec:
    """Name, shape of ints (batch first) and dtype: what an array of this tensor is allocated with."""

    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"

    def zeros(self) -> np.ndarray:
        return np.zeros(self.shape, dtype=self.dtype)


@dataclass(frozen=True)
class TensorSpec:
    """Name, shape (batch dimension first; a string marks a symbolic dimension) and dtype."""

    name: str
    shape: tuple[int | str, ...]
    dtype: str = "float32"

    def with_batch(self, batch: int | str) -> TensorSpec:
        return TensorSpec(self.name, (batch, *self.shape[1:]), self.dtype)

    def concrete(self, batch: int | None = None) -> ConcreteSpec:
        """The spec with the batch dimension set to ``batch`` (needed when it is symbolic); any other
        symbolic dimension is a StateError."""
        first = self.shape[0] if batch is None else batch
        dims = (first, *self.shape[1:])
        if not all(isinstance(d, int) and not isinstance(d, bool) for d in dims):
            raise StateError(f"state tensor '{self.name}' has symbolic dims {list(dims)}: give the batch size")
        return ConcreteSpec(self.name, tuple(int(d) for d in dims), self.dtype)

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

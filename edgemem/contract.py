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

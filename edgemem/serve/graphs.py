"""What serving a graph needs, from its metadata and I/O signature alone (never its nodes' meaning).

Three kinds of graph: a streaming step graph with state (served by Triton's sequence batcher with
implicit state), a step graph without state (a clip model or a frame-scaled baseline: plain dynamic
batching), and a half of the CM two-scan pair (``edgemem.role`` = ``cm.encode``/``cm.classify``:
plain dynamic batching, its own inputs and outputs).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgemem import contract as C
from edgemem.errors import InputError, StateError, UnsupportedError
from edgemem.runtimes.cm_runtime import META_ROLE, ROLE_CLASSIFY, ROLE_ENCODE

PAIR_ROLES = (ROLE_ENCODE, ROLE_CLASSIFY)  # the CM pair's graphs (edgemem.export.cm_pair)

STATEFUL, CLIP, PAIR = "stateful", "clip", "pair"

# edgemem dtype -> Triton data type
TRITON_TYPES = {
    "float32": "TYPE_FP32", "float16": "TYPE_FP16", "bfloat16": "TYPE_BF16", "float64": "TYPE_FP64",
    "int64": "TYPE_INT64", "int32": "TYPE_INT32", "int8": "TYPE_INT8", "uint8": "TYPE_UINT8", "bool": "TYPE_BOOL",
}  # fmt: skip


@dataclass(frozen=True)
class ServedGraph:
    """A graph as a server sees it: kind, batch (int, or None when dynamic), I/O specs and metadata."""

    path: Path
    kind: str  # STATEFUL, CLIP or PAIR
    batch: int | None
    inputs: tuple[C.TensorSpec, ...]  # graph inputs (state inputs included)
    outputs: tuple[C.TensorSpec, ...]  # graph outputs (state outputs included)
    state: tuple[C.TensorSpec, ...]
    metadata: dict[str, str]  # every edgemem.* metadata entry
    reset_used: bool  # whether any node reads the `reset` input
    role: str | None = None

    @property
    def card(self) -> C.ModelCard:
        return C.parse_card(json.loads(self.metadata[C.META_MODEL]), self.metadata.get(C.META_CONTRACT, "1"))

    def spec(self, name: str) -> C.TensorSpec:
        for s in (*self.inputs, *self.outputs):
            if s.name == name:
                return s
        raise KeyError(name)


def _spec(value_info: Any) -> C.TensorSpec:
    t = value_info.type.tensor_type
    dims = tuple(d.dim_param if d.HasField("dim_param") else d.dim_value for d in t.shape.dim)
    return C.TensorSpec(value_info.name, dims, C._ONNX_DTYPES.get(t.elem_type, f"onnx:{t.elem_type}"))


def _load(path: Path) -> Any:
    import onnx

    if not path.is_file():
        raise InputError(f"graph not found: {path}")
    try:
        return onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf raises several unrelated types
        raise InputError(f"{path} is not an ONNX model: {str(e).splitlines()[0] if str(e) else e}") from None


def _batch_of(specs: list[C.TensorSpec], path: Path) -> int | None:
    """The common first dimension of ``specs``: an int, or None when it is symbolic in all of them."""
    firsts = {s.shape[0] if s.shape else None for s in specs}
    if len(firsts) != 1 or None in firsts:
        raise StateError(
            f"{path.name}: inputs and outputs do not share one batch dimension ({sorted(map(str, firsts))})"
        )
    (b,) = firsts
    return None if isinstance(b, str) else int(b)


def read_served_graph(path: str | Path) -> ServedGraph:
    """Classify ``path`` and read what a Triton model configuration needs from it."""
    path = Path(path)
    model = _load(path)
    meta = {p.key: p.value for p in model.metadata_props if p.key.startswith("edgemem.")}
    inputs = tuple(_spec(v) for v in model.graph.input)
    outputs = tuple(_spec(v) for v in model.graph.output)
    consumed = {i for n in model.graph.node for i in n.input}
    role = meta.get(META_ROLE)
    if role is not None:
        if role not in PAIR_ROLES:
            raise UnsupportedError(f"{path.name} has role {role!r}; edgemem serves step graphs and {list(PAIR_ROLES)}")
        if C.META_MODEL not in meta:
            raise StateError(f"{path.name}: CM pair graph without '{C.META_MODEL}' metadata")
        C.parse_card(json.loads(meta[C.META_MODEL]), meta.get(C.META_CONTRACT, "1"))
        batch = _batch_of([*inputs, *outputs], path)
        return ServedGraph(path, PAIR, batch, inputs, outputs, (), meta, False, role)
    contract = C.read_contract(model)
    kind = STATEFUL if contract.state else CLIP
    b = contract.batch
    return ServedGraph(
        path, kind, b if isinstance(b, int) else None, inputs, outputs, contract.state, meta, C.RESET in consumed
    )

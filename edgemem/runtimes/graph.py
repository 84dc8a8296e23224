"""Read what a session needs from an ONNX graph: its state specs, model card and clip shape.

Only the graph's metadata and I/O signature are read (no weights). A graph that does not follow
the state contract (``edgemem.contract``) is refused with an error naming what is wrong.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgemem import contract as C
from edgemem.errors import EdgememError, InputError


class GraphError(EdgememError):
    """A file that is not a readable ONNX graph following the edgemem state contract."""


@dataclass(frozen=True)
class GraphInfo:
    path: Path
    specs: list[C.TensorSpec]
    card: dict[str, Any]
    input_shape: tuple[int, int, int, int]  # (C, T, H, W)
    static_batch: int | None  # the batch a static graph was exported for, None if dynamic

    def resolve_batch(self, batch: int | None) -> int:
        """The session batch: the requested one, or the graph's static batch (1 if dynamic)."""
        if batch is None:
            return self.static_batch or 1
        if self.static_batch is not None and batch != self.static_batch:
            raise InputError(
                f"{self.path.name} was exported for batch {self.static_batch}; re-export it for batch {batch}"
            )
        return int(batch)


def _dims(value_info: Any) -> list[int | str]:
    return [
        d.dim_param if d.HasField("dim_param") or not d.HasField("dim_value") else d.dim_value
        for d in value_info.type.tensor_type.shape.dim
    ]


def read_graph(path: str | Path) -> GraphInfo:
    """Validate ``path`` against the contract and return its specs, card and clip shape."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise GraphError(f"model file not found: {path}")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # onnx raises DecodeError / ValueError / OSError for garbage files
        raise GraphError(f"{path.name} is not a readable ONNX file: {type(e).__name__}: {e}") from None
    meta = {p.key: p.value for p in model.metadata_props}
    version = meta.get(C.META_CONTRACT)
    if version is None:
        raise GraphError(f"{path.name} has no '{C.META_CONTRACT}' metadata: not an edgemem streaming graph")
    if version != C.CONTRACT_VERSION:
        raise GraphError(f"{path.name} follows contract version {version}; this edgemem reads {C.CONTRACT_VERSION}")
    if C.META_MODEL not in meta or C.META_STATE not in meta:
        raise GraphError(f"{path.name} lacks '{C.META_MODEL}' or '{C.META_STATE}' metadata")
    try:
        card = json.loads(meta[C.META_MODEL])
    except json.JSONDecodeError as e:
        raise GraphError(f"{path.name}: '{C.META_MODEL}' metadata is not valid JSON: {e}") from None
    specs = C.specs_from_json(meta[C.META_STATE])
    for key in ("num_classes", "frames", "crop_size"):
        if key not in card:
            raise GraphError(f"{path.name}: model card lacks '{key}'")

    inits = {i.name for i in model.graph.initializer}
    inputs = {i.name: _dims(i) for i in model.graph.input if i.name not in inits}
    outputs = {o.name: _dims(o) for o in model.graph.output}
    want_in = {C.FRAMES, C.RESET, *(C.state_in_name(s.name) for s in specs)}
    want_out = {C.LOGITS, *(C.state_out_name(s.name) for s in specs)}
    for kind, got, want in (("inputs", inputs, want_in), ("outputs", outputs, want_out)):
        if set(got) != want:
            missing, extra = sorted(want - set(got)), sorted(set(got) - want)
            raise GraphError(f"{path.name} {kind} do not follow the contract: missing {missing}, unexpected {extra}")
    frames = inputs[C.FRAMES]
    if len(frames) != 5 or not all(isinstance(d, int) and d > 0 for d in frames[1:]):
        raise GraphError(f"{path.name}: input 'frames' must be [batch, C, T, H, W] with static C,T,H,W, got {frames}")
    for s in specs:
        for name in (C.state_in_name(s.name), C.state_out_name(s.name)):
            dims = (inputs | outputs)[name]
            if len(dims) != len(s.shape) or any(
                isinstance(d, int) and isinstance(w, int) and d != w for d, w in zip(dims[1:], s.shape[1:], strict=True)
            ):
                raise GraphError(f"{path.name}: '{name}' has shape {dims}, state spec says {list(s.shape)}")
    b = frames[0]
    return GraphInfo(path, specs, card, tuple(frames[1:]), b if isinstance(b, int) and b > 0 else None)

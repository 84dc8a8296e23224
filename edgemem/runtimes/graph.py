"""What a session needs from an ONNX graph, read through the contract (``edgemem.contract.read_contract``).

Only the graph's metadata and I/O signature are read (no weights); a graph that does not follow
the contract is refused with the contract's one-line error.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgemem.contract import ModelCard, TensorSpec, read_contract
from edgemem.errors import InputError


@dataclass(frozen=True)
class GraphInfo:
    path: Path
    specs: list[TensorSpec]
    card: ModelCard
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


def read_graph(path: str | Path) -> GraphInfo:
    """Validate ``path`` against the contract and return its state specs, card and clip shape."""
    path = Path(path)
    contract = read_contract(path)
    c, t, h, w = contract.frames.shape[1:]
    if not all(isinstance(d, int) and d > 0 for d in (c, t, h, w)):
        raise InputError(f"{path.name}: 'frames' must have static C, T, H, W, got {list(contract.frames.shape)}")
    b = contract.batch
    return GraphInfo(path, list(contract.state), contract.card, (int(c), int(t), int(h), int(w)), b if isinstance(b, int) else None)

"""What a session needs from an ONNX graph, read through the contract (``edgemem.contract.read_contract``).

A graph that does not follow the contract is refused with the contract's one-line error. The file is
parsed once: ``read_graph`` returns a ``GraphInfo`` (with the parsed ``GraphContract``), and every
session, ``verify_graph`` and ``reference_model`` take that ``GraphInfo`` in place of the path
(``read_graph(info)`` returns it as it is), so a 138 MiB graph is not parsed again per consumer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgemem.contract import GraphContract, ModelCard, TensorSpec, read_contract
from edgemem.errors import InputError


@dataclass(frozen=True)
class GraphInfo:
    path: Path
    specs: list[TensorSpec]
    card: ModelCard
    input_shape: tuple[int, int, int, int]  # (C, T, H, W)
    static_batch: int | None  # the batch a static graph was exported for, None if dynamic
    contract: GraphContract  # the parsed contract (export record, card, state, I/O specs)

    def resolve_batch(self, batch: int | None) -> int:
        """The session batch: the requested one, or the graph's static batch (1 if dynamic)."""
        if batch is None:
            return self.static_batch or 1
        if self.static_batch is not None and batch != self.static_batch:
            raise InputError(
                f"{self.path.name} was exported for batch {self.static_batch}; re-export it for batch {batch}"
            )
        return int(batch)


def read_graph(path: str | Path | GraphInfo, contract: GraphContract | None = None) -> GraphInfo:
    """Validate ``path`` against the contract and return its state specs, card and clip shape.

    A ``GraphInfo`` is returned as it is (already parsed); ``contract``, when the caller has parsed
    the graph already (``read_contract(proto)``), is used instead of reading the file again."""
    if isinstance(path, GraphInfo):
        return path
    path = Path(path)
    contract = contract if contract is not None else read_contract(path)
    c, t, h, w = contract.frames.shape[1:]
    if not all(isinstance(d, int) and d > 0 for d in (c, t, h, w)):
        raise InputError(f"{path.name}: 'frames' must have static C, T, H, W, got {list(contract.frames.shape)}")
    b = contract.batch
    static = b if isinstance(b, int) else None
    return GraphInfo(path, list(contract.state), contract.card, (int(c), int(t), int(h), int(w)), static, contract)

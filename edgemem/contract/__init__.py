"""The graph contract: tensor specs, graph I/O names, the typed model card and the graph metadata.

Every streaming model has a fixed-shape state (named tensors, zeros = empty). In PyTorch it is
``model.step(frames, state, reset) -> (logits, state)``; in a graph it is the inputs
``frames``, ``reset``, ``state_in.<name>`` and the outputs ``logits``, ``state_out.<name>``,
described by the graph's metadata. Exporters, runtimes, verifiers and benchmarks read this
package and nothing model-specific: ``specs`` (state specs and names), ``card`` (``ModelCard``),
``graph`` (``GraphContract``, ``read_contract``, ``write_contract``).
"""

from edgemem.contract.card import ClipSpec, Cost, MemorySpec, ModelCard, parse_card, stored_card
from edgemem.contract.graph import _ONNX_DTYPES as _ONNX_DTYPES  # serve/graphs.py reads ONNX element types
from edgemem.contract.graph import CONTRACT_VERSION, READABLE_VERSIONS, GraphContract, read_contract, write_contract
from edgemem.contract.specs import (
    BATCH_DIM,
    DTYPES,
    FRAMES,
    LOGITS,
    META_CONTRACT,
    META_EXPORT,
    META_MODEL,
    META_STATE,
    RESET,
    STATE_IN,
    STATE_OUT,
    ConcreteSpec,
    TensorSpec,
    check_state,
    specs_from_json,
    specs_to_json,
    state_in_name,
    state_out_name,
    validate_state_json,
)

__all__ = [
    "BATCH_DIM", "CONTRACT_VERSION", "DTYPES", "FRAMES", "LOGITS", "META_CONTRACT", "META_EXPORT", "META_MODEL",
    "META_STATE", "READABLE_VERSIONS", "RESET", "STATE_IN", "STATE_OUT", "ClipSpec", "ConcreteSpec", "Cost",
    "GraphContract", "MemorySpec", "ModelCard", "TensorSpec", "check_state", "parse_card", "read_contract",
    "specs_from_json", "specs_to_json", "state_in_name", "state_out_name", "stored_card", "validate_state_json",
    "write_contract",
]  # fmt: skip

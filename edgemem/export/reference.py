"""The PyTorch reference of an exported graph: rebuilt from its model card, weights from the graph."""

from __future__ import annotations

from pathlib import Path

import torch

from edgemem.errors import CheckpointError


def reference_model(graph: str | Path, checkpoint: str | None = None) -> torch.nn.Module:
    """``from_card(card)`` with the weights read back from the graph's initializers (fp16 widened,
    int8 dequantized; see ``graph.weights_from_graph``) or, when given, from ``checkpoint``."""
    import onnx

    from edgemem.contract import read_contract
    from edgemem.export.graph import weights_from_graph
    from edgemem.models.checkpoint import load_state_strict
    from edgemem.models.registry import from_card
    from edgemem.models.resolve import load_checkpoint

    contract = read_contract(graph)
    model = from_card(contract.card)
    if checkpoint is not None:
        load_checkpoint(model, str(checkpoint))
        return model.eval()
    own = model.state_dict()
    found, missing = weights_from_graph(onnx.load(str(graph)), list(own))
    unused = set(contract.export.get("unused_weights", []))  # the step never reads them: keep init values
    found.update({k: own[k].numpy() for k in missing if k in unused})
    missing = [k for k in missing if k not in unused]
    if missing:
        shown = ", ".join(missing[:4]) + (" ..." if len(missing) > 4 else "")
        raise CheckpointError(
            f"{Path(graph).name} does not carry {len(missing)} weights in a recoverable form ({shown}); "
            "pass --checkpoint"
        )
    load_state_strict(model, {k: torch.from_numpy(v.copy()).to(own[k].dtype) for k, v in found.items()})
    return model.eval()

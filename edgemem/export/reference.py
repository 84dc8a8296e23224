"""The PyTorch reference of an exported graph: rebuilt from its model card, weights from the graph."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from edgemem.errors import CheckpointError
from edgemem.runtimes.graph import GraphInfo, read_graph


def reference_model(graph: str | Path | GraphInfo, checkpoint: str | None = None, proto: Any = None) -> torch.nn.Module:
    """``from_card(card)`` with the weights read back from the graph's initializers (fp16 widened,
    int8 dequantized; see ``graph.weights_from_graph``) or, when given, from ``checkpoint`` (a .pyth, or
    the name of shipped weights: ``edgemem models --zoo``).
    ``graph`` may be a parsed ``GraphInfo`` and ``proto`` the loaded ``onnx.ModelProto`` (not read again)."""
    import onnx

    from edgemem.export.graph import weights_from_graph
    from edgemem.models.checkpoint import load_state_strict
    from edgemem.models.pretrained import is_zoo_name, zoo_cards
    from edgemem.models.registry import from_card
    from edgemem.models.resolve import load_checkpoint

    info = read_graph(graph)
    contract = info.contract
    model = from_card(contract.card)
    if checkpoint is not None:
        if not Path(checkpoint).exists() and is_zoo_name(str(checkpoint)):  # shipped weights by name
            checkpoint = zoo_cards()[str(checkpoint)]["path"]
        load_checkpoint(model, str(checkpoint))
        return model.eval()
    own = model.state_dict()
    found, missing = weights_from_graph(proto if proto is not None else onnx.load(str(info.path)), list(own))
    unused = set(contract.export.get("unused_weights", []))  # the step never reads them: keep init values
    found.update({k: own[k].numpy() for k in missing if k in unused})
    missing = [k for k in missing if k not in unused]
    if missing:
        shown = ", ".join(missing[:4]) + (" ..." if len(missing) > 4 else "")
        raise CheckpointError(
            f"{info.path.name} does not carry {len(missing)} weights in a recoverable form ({shown}); pass --checkpoint"
        )
    load_state_strict(model, {k: torch.from_numpy(v.copy()).to(own[k].dtype) for k, v in found.items()})
    return model.eval()

"""The PyTorch reference session: a ``StreamingModel`` stepped in eval mode, state as tensors.

Built from a model object, a preset / PySlowFast YAML (optionally with a ``.pyth`` checkpoint), or
an ONNX graph: the architecture rebuilt from the graph's model card and the weights read back
from the graph's initializers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgemem.errors import CheckpointError
from edgemem.runtimes.base import Session, State


def weights_from_graph(path: Path) -> dict[str, torch.Tensor]:
    """The graph's initializers as tensors, by name (the exporter keeps state_dict names)."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path), load_external_data=True).graph
    return {i.name: torch.from_numpy(numpy_helper.to_array(i).copy()) for i in graph.initializer}


def model_from_graph(path: Path) -> Any:
    """Rebuild the model of an edgemem ONNX graph: ``from_card`` + weights from its initializers."""
    from edgemem.models.checkpoint import load_state_strict
    from edgemem.models.registry import from_card
    from edgemem.runtimes.graph import read_graph

    info = read_graph(path)
    model = from_card(info.card)
    weights = weights_from_graph(path)
    wanted = model.state_dict()
    missing = sorted(k for k in wanted if k not in weights)
    if missing:
        raise CheckpointError(
            f"{path.name} does not carry the weights {missing[:5]}{' ...' if len(missing) > 5 else ''}"
            " under their state_dict names; load the PyTorch checkpoint instead"
        )
    load_state_strict(model, {k: weights[k] for k in wanted})
    return model


class TorchSession(Session):
    """The PyTorch reference: exact fp32 semantics of ``StreamingModel.step``."""

    runtime = "torch"

    def __init__(
        self,
        model: Any,
        *,
        checkpoint: str | None = None,
        batch: int | None = None,
        threads: int | None = None,
        device: str = "cpu",
    ) -> None:
        from edgemem.models.streaming import StreamingModel

        if threads:
            torch.set_num_threads(int(threads))
        if isinstance(model, (str, Path)) and str(model).lower().endswith(".onnx"):
            model = model_from_graph(Path(model))
        elif isinstance(model, (str, Path)):
            from edgemem.models.resolve import resolve_model

            model = resolve_model(str(model), checkpoint)
        if not isinstance(model, StreamingModel):
            raise CheckpointError(f"torch session needs a StreamingModel, got {type(model).__name__}")
        self._model = model.to(device).eval()
        self._device = torch.device(device)
        specs = model.state_specs(1)
        super().__init__(specs, model.model_card(), model.input_shape, batch or 1)
        self._state = model.init_state(self.batch)

    @property
    def model(self) -> Any:
        return self._model

    def _run(self, frames: np.ndarray, reset: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            x = torch.from_numpy(frames).to(self._device)
            r = torch.from_numpy(reset).to(self._device)
            logits, self._state = self._model.step(x, self._state, r)
        return logits.float().cpu().numpy()

    def _read_state(self) -> State:
        return {k: v.detach().cpu().numpy() for k, v in self._state.items()}

    def _write_state(self, state: State) -> None:
        self._state = {k: torch.from_numpy(v.copy()).to(self._device) for k, v in state.items()}

    def _close(self) -> None:
        del self._model, self._state

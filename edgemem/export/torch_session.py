"""The PyTorch reference session: a ``StreamingModel`` stepped in eval mode, state as tensors.

Built from a model object, a preset / PySlowFast YAML (optionally with a ``.pyth`` checkpoint), or
an ONNX graph: the architecture rebuilt from the graph's model card and the weights read back
from the graph's initializers (``edgemem.export.reference.reference_model``, shared with verify).
It lives in ``export`` (it builds models) and is registered as runtimes ``torch`` (any device,
default the CPU) and ``torch-cuda`` by ``edgemem.export``. On a CUDA device it runs fp32 as fp32:
TF32 matmuls and convolutions are turned off for the process (torch's flags are global), as the
fp32 tolerances of ``verify`` assume.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgemem.errors import CheckpointError
from edgemem.hardware import default_threads, resolve_threads
from edgemem.runtimes.base import Session, State


class TorchSession(Session):
    """The PyTorch reference: exact fp32 semantics of ``StreamingModel.step``."""

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

        # Default: torch's own count capped by the usable CPUs (a lower count set by the caller stays).
        n = resolve_threads(threads) if threads is not None else min(torch.get_num_threads(), default_threads())
        torch.set_num_threads(n)
        if isinstance(model, (str, Path)) and str(model).lower().endswith(".onnx"):
            from edgemem.export.reference import reference_model

            model = reference_model(model, checkpoint)
        elif isinstance(model, (str, Path)):
            from edgemem.models.resolve import resolve_model

            model = resolve_model(str(model), checkpoint)
        if not isinstance(model, StreamingModel):
            raise CheckpointError(f"torch session needs a StreamingModel, got {type(model).__name__}")
        self._device = torch.device(device)
        self.runtime = "torch-cuda" if self._device.type == "cuda" else "torch"
        if self._device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False
        self._model = model.to(self._device).eval()
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

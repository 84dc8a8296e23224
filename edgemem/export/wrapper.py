"""The module the exporter traces: ``model.step`` with the state dict flattened into positional
graph inputs/outputs in ``state_specs`` order (``frames, reset, *state_in -> logits, *state_out``)."""

from __future__ import annotations

from torch import Tensor, nn

from edgemem.contract import FRAMES, LOGITS, RESET, TensorSpec, state_in_name, state_out_name
from edgemem.models.streaming import StreamingModel

# The wrapper holds the model under this attribute, so parameter names gain this prefix in the trace.
PREFIX = "model."


class StepGraph(nn.Module):
    """``forward(frames, reset, *state) -> (logits, *new_state)`` around ``model.step``."""

    def __init__(self, model: StreamingModel, specs: list[TensorSpec]) -> None:
        super().__init__()
        self.model = model
        self.names = [s.name for s in specs]

    @property
    def input_names(self) -> list[str]:
        return [FRAMES, RESET, *(state_in_name(n) for n in self.names)]

    @property
    def output_names(self) -> list[str]:
        return [LOGITS, *(state_out_name(n) for n in self.names)]

    def forward(self, frames: Tensor, reset: Tensor, *state: Tensor) -> tuple[Tensor, ...]:
        logits, new = self.model.step(frames, dict(zip(self.names, state, strict=True)), reset)
        return (logits, *(new[n] for n in self.names))

"""Base class of every streaming model: fixed-shape state, ``init_state`` and ``step``."""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import torch
from torch import Tensor, nn

from edgemem.contract import TensorSpec, check_state
from edgemem.errors import InputError

State = dict[str, Tensor]


class StreamingModel(nn.Module):
    """A video model that classifies one clip per ``step`` and carries memory in ``state``.

    Subclasses define ``input_shape`` (C, T, H, W), ``state_specs(batch)``, ``step`` and
    ``model_card``. ``forward(frames)`` classifies clips with empty memory. ``class_names`` (set
    by whoever knows them: a trainer, a zoo entry) goes into the model card.
    """

    class_names: list[str] | None = None

    @property
    @abstractmethod
    def input_shape(self) -> tuple[int, int, int, int]:
        """(C, T, H, W) of one clip."""

    @property
    @abstractmethod
    def num_classes(self) -> int: ...

    @abstractmethod
    def state_specs(self, batch_size: int | str = 1) -> list[TensorSpec]:
        """Name, shape (batch first) and dtype of every state tensor, in a stable order."""

    @abstractmethod
    def step(self, frames: Tensor, state: State, reset: Tensor | None = None) -> tuple[Tensor, State]:
        """Classify one clip per batch slot: ``(logits [B, classes], new state)``.

        ``reset[b]`` true empties slot b's memory before the clip. Pure function of its inputs.
        """

    @abstractmethod
    def model_card(self) -> dict[str, Any]:
        """JSON-serialisable description: enough to rebuild the model (``from_card``) and feed it."""

    def init_state(self, batch_size: int = 1) -> State:
        """All-zero (empty) state for ``batch_size`` streams."""
        device = self._device()
        return {
            s.name: torch.zeros(s.shape, dtype=getattr(torch, s.dtype), device=device)
            for s in self.state_specs(batch_size)
        }

    def check_frames(self, frames: Tensor) -> None:
        """Raise InputError naming the expected shape/dtype if ``frames`` is not a batch of clips."""
        c, t, h, w = self.input_shape
        if not isinstance(frames, Tensor) or frames.dim() != 5 or tuple(frames.shape[1:]) != (c, t, h, w):
            got = list(frames.shape) if isinstance(frames, Tensor) else type(frames).__name__
            raise InputError(f"frames must have shape [B, {c}, {t}, {h}, {w}], got {got}")
        if frames.dtype != torch.float32:
            raise InputError(f"frames must be float32, got {str(frames.dtype).replace('torch.', '')}")

    def check_step_inputs(self, frames: Tensor, state: State, reset: Tensor | None) -> None:
        """Raise InputError/StateError naming what does not match this model."""
        self.check_frames(frames)
        b = frames.shape[0]
        if reset is not None and (reset.dtype != torch.bool or tuple(reset.shape) != (b,)):
            raise InputError(f"reset must be a bool tensor of shape [{b}], got {reset.dtype} {list(reset.shape)}")
        check_state(state, self.state_specs(b), batch=b)

    def state_bytes(self) -> dict[str, int]:
        """Bytes of state per stream, per tensor."""
        return {s.name: s.nbytes_per_item for s in self.state_specs(1)}

    def _device(self) -> torch.device:
        p = next(self.parameters(), None)
        return p.device if p is not None else torch.device("cpu")

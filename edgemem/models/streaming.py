"""Base class of every streaming model: fixed-shape state, ``init_state`` and ``step``."""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import torch
from torch import Tensor, nn

from edgemem.contract import ClipSpec, MemorySpec, ModelCard, TensorSpec, check_state
from edgemem.errors import InputError

State = dict[str, Tensor]


class StreamingModel(nn.Module):
    """A video model that classifies one clip per ``step`` and carries memory in ``state``.

    Subclasses define ``input_shape`` (C, T, H, W), ``state_specs(batch)``, ``step`` and the card
    hooks (``card_identity``, ``card_config``, ``clip_spec``, ``memory_spec``, ``card_view``) from
    which ``model_card`` writes the one card of every family. ``forward(frames)`` classifies clips
    with empty memory. ``class_names`` (set by whoever knows them: a trainer, a zoo entry) and
    ``backbone_preset`` (the memory-less preset to compare with, declared by the preset) go into the card.
    """

    family: str
    class_names: list[str] | None = None
    backbone_preset: str | None = None

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
    def card_identity(self) -> tuple[str | None, str | None]:
        """(preset name or None, source: the preset or the config file it came from)."""

    @abstractmethod
    def card_config(self) -> dict[str, Any]:
        """The family's JSON description, enough for ``from_card`` to rebuild the model."""

    @abstractmethod
    def clip_spec(self) -> ClipSpec:
        """The input clip (frames of the whole, frame-scaled clip)."""

    def memory_spec(self) -> MemorySpec | None:
        return None

    def card_view(self) -> tuple[int, str, str]:
        """(frame scale, head activation of the logits, view)."""
        return 1, "softmax", "train"

    def model_card(self) -> ModelCard:
        """The typed model card (no cost: the exporter measures and adds it)."""
        name, source = self.card_identity()
        frame_scale, head_act, view = self.card_view()
        return ModelCard(
            family=self.family, config=self.card_config(), clip=self.clip_spec(), num_classes=self.num_classes,
            name=name, source=source, class_names=None if self.class_names is None else tuple(self.class_names),
            frame_scale=frame_scale, memory=self.memory_spec(), backbone=self.backbone_preset,
            head_act=head_act, view=view,
        )  # fmt: skip

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

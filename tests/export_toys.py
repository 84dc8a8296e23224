"""Small streaming models the export tests run on (no MeMViT internals: the exporter must not need them).

``ToyMemory``: conv patch embedding, attention over the current tokens plus a running memory of
earlier clips' summaries with a validity mask, and per-slot reset. ``ToyClip``: a memory-less clip
classifier (no state). Both register the family ``test_toy`` so that ``from_card`` rebuilds them.
Importing this module (as the other test files do) registers the family.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from edgemem.contract import ClipSpec, MemorySpec, ModelCard, TensorSpec
from edgemem.models.registry import register_family
from edgemem.models.streaming import State, StreamingModel


class ToyMemory(StreamingModel):
    """Attention over current tokens + ``slots`` memory entries (FIFO, validity-masked)."""

    def __init__(self, num_classes: int = 5, dim: int = 8, slots: int = 3, memory: bool = True) -> None:
        super().__init__()
        self.dim, self.slots, self.memory = dim, slots, memory
        self._classes = num_classes
        self.embed = nn.Conv3d(3, dim, kernel_size=(2, 4, 4), stride=(2, 4, 4))
        self.norm = nn.LayerNorm(dim)
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.head = nn.Linear(dim, num_classes)

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        return (3, 4, 16, 16)

    @property
    def num_classes(self) -> int:
        return self._classes

    def state_specs(self, batch_size: int | str = 1) -> list[TensorSpec]:
        if not self.memory:
            return []
        return [
            TensorSpec("mem", (batch_size, self.slots, self.dim)),
            TensorSpec("valid", (batch_size, self.slots)),
        ]

    def step(self, frames: Tensor, state: State, reset: Tensor | None = None) -> tuple[Tensor, State]:
        x = self.norm(self.embed(frames).flatten(2).transpose(1, 2))  # [B, N, D]
        q = self.q(x)
        if self.memory:
            keep = torch.ones_like(state["valid"][:, :1]) if reset is None else (~reset).float()[:, None]
            mem, valid = state["mem"] * keep[:, :, None], state["valid"] * keep
            kv_in = torch.cat([mem, x], dim=1)
            bias = torch.cat([(valid - 1.0) * 1e4, torch.zeros_like(x[:, :, 0])], dim=1)
        else:
            kv_in, bias = x, torch.zeros_like(x[:, :, 0])
        k, v = self.kv(kv_in).chunk(2, dim=-1)
        att = (q @ k.transpose(1, 2)) / math.sqrt(self.dim) + bias[:, None, :]
        out = (att.softmax(-1) @ v).mean(1)
        logits = self.head(out)
        if not self.memory:
            return logits, {}
        summary = x.mean(1, keepdim=True)
        new = {
            "mem": torch.cat([mem[:, 1:], summary], dim=1),
            "valid": torch.cat([valid[:, 1:], torch.ones_like(valid[:, :1])], dim=1),
        }
        return logits, new

    def forward(self, frames: Tensor) -> Tensor:
        return self.step(frames, self.init_state(frames.shape[0]))[0]

    family = "test_toy"

    def card_identity(self) -> tuple[str | None, str | None]:
        return None, "tests"

    def card_config(self) -> dict[str, Any]:
        return {"num_classes": self._classes, "dim": self.dim, "slots": self.slots, "memory": self.memory}

    def clip_spec(self) -> ClipSpec:
        return ClipSpec(frames=4, sampling_rate=2, crop_size=16)

    def memory_spec(self) -> MemorySpec | None:
        return MemorySpec("toy", self.slots, {"slots": self.slots}) if self.memory else None


@register_family("test_toy")
def _from_card(card: ModelCard) -> ToyMemory:
    return ToyMemory(**card.config).eval()


def make_toy(memory: bool = True, seed: int = 0) -> ToyMemory:
    torch.manual_seed(seed)
    return ToyMemory(memory=memory).eval()

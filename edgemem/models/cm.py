"""Collaborative Memory (Yang et al., CVPR 2021): memory interaction (eqs. 2-3) and context infusion (eq. 4).

Clip features are token matrices ``X_n`` (``k x d``: k = t*h*w positions, d channels). With the
default variants and ``W = linear.weight.T``:

- push (eq. 2): ``M = 1/N sum_n (X_n W_k)^T (X_n W_v)``, a ``d' x d'`` matrix (``d' = d / reduction``);
- pop (eq. 3): ``M_n = (X_n W_q) M``, ``k x d'``;
- gating (eq. 4): ``X^_n = (1 + sigmoid(GAP(M_n) W_O + b_O)) * X_n``, GAP over the k tokens.

Variants: ``interaction="avgpool"`` (``M`` = mean over clips and tokens of ``X_n W_I``, ``M_n = M``; its
projection is the submodule ``proj``) and ``infusion="residual"`` (``X^_n = M_n W_O + b_O + X_n``).
``token_scale=True`` divides each clip's eq. 2 contribution by k (not in the paper; off by default).

The memory is a mean of per-clip *contributions*, which is what the two-scan and online paths keep:
``contribution(x)`` is one clip's term of eq. 2, ``pop(memory, x)`` is eq. 3.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from edgemem.errors import InputError, UnsupportedError

INTERACTIONS = ("associative", "avgpool")
INFUSIONS = ("gating", "residual")


class CollaborativeMemory(nn.Module):
    """The CM module over clip tokens ``[B, N, K, D]`` (B videos, N clips, K tokens, D channels)."""

    def __init__(
        self,
        dim: int,
        reduction: int = 4,
        interaction: str = "associative",
        infusion: str = "gating",
        token_scale: bool = False,
    ) -> None:
        super().__init__()
        if interaction not in INTERACTIONS:
            raise UnsupportedError(f"CM interaction '{interaction}' not in {INTERACTIONS}")
        if infusion not in INFUSIONS:
            raise UnsupportedError(f"CM infusion '{infusion}' not in {INFUSIONS}")
        if reduction < 1 or dim % reduction:
            raise UnsupportedError(f"CM reduction {reduction} must divide the feature dimension {dim}")
        self.dim = dim
        self.reduction = reduction
        self.inner_dim = dim // reduction
        self.interaction = interaction
        self.infusion = infusion
        self.token_scale = token_scale
        d = self.inner_dim
        if interaction == "associative":
            self.q = nn.Linear(dim, d, bias=False)
            self.k = nn.Linear(dim, d, bias=False)
            self.v = nn.Linear(dim, d, bias=False)
        else:
            self.proj = nn.Linear(dim, d, bias=False)
        self.o = nn.Linear(d, dim)

    @property
    def memory_shape(self) -> tuple[int, int]:
        """Shape of the memory (and of one clip's contribution) per video, batch excluded."""
        return (self.inner_dim, self.inner_dim) if self.interaction == "associative" else (1, self.inner_dim)

    def _check_tokens(self, x: Tensor, what: str = "x") -> None:
        if x.dim() < 3 or x.shape[-1] != self.dim:
            raise InputError(f"CM {what} must be [..., K, {self.dim}] clip tokens, got {list(x.shape)}")

    def contribution(self, x: Tensor) -> Tensor:
        """One clip's term of eq. 2: ``[..., K, D] -> [..., *memory_shape]``."""
        self._check_tokens(x)
        if self.interaction == "associative":
            c = self.k(x).transpose(-1, -2) @ self.v(x)
            return c / x.shape[-2] if self.token_scale else c
        return self.proj(x).mean(dim=-2, keepdim=True)

    def push(self, x: Tensor) -> Tensor:
        """Eq. 2: memory of each video from all its clips, ``[B, N, K, D] -> [B, *memory_shape]``."""
        if x.dim() != 4:
            raise InputError(f"CM push takes [B, N, K, D] clip tokens, got {list(x.shape)}")
        return self.contribution(x).mean(dim=1)

    def pop(self, memory: Tensor, x: Tensor) -> Tensor:
        """Eq. 3: clip-specific memory ``M_n`` for clip tokens ``x [B, ..., K, D]`` and ``memory [B, *shape]``.

        Returns ``[B, ..., K, d']`` (associative) or ``[B, ..., 1, d']`` (avgpool: ``M_n = M``).
        """
        self._check_tokens(x)
        if tuple(memory.shape[1:]) != self.memory_shape or memory.shape[0] != x.shape[0]:
            raise InputError(
                f"CM memory must be [{x.shape[0]}, {self.memory_shape[0]}, {self.memory_shape[1]}], "
                f"got {list(memory.shape)}"
            )
        m = memory.reshape(memory.shape[0], *([1] * (x.dim() - 3)), *self.memory_shape)
        if self.interaction == "associative":
            return self.q(x) @ m
        return m.expand(*x.shape[:-2], 1, self.inner_dim)

    def infuse(self, x: Tensor, clip_memory: Tensor) -> Tensor:
        """Eq. 4 (gating) or the residual variant: enhanced tokens of the shape of ``x``."""
        if self.infusion == "gating":
            gate = torch.sigmoid(self.o(clip_memory.mean(dim=-2, keepdim=True)))
            return (1.0 + gate) * x
        return self.o(clip_memory) + x

    def read(self, memory: Tensor, x: Tensor) -> Tensor:
        """Pop then infuse: clip tokens ``x`` enhanced by ``memory``."""
        return self.infuse(x, self.pop(memory, x))

    def forward(self, x: Tensor) -> Tensor:
        """``[B, N, K, D] -> [B, N, K, D]``: every clip enhanced by the memory of its whole video."""
        return self.read(self.push(x), x)

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, reduction={self.reduction}, interaction={self.interaction}, "
            f"infusion={self.infusion}, token_scale={self.token_scale}"
        )

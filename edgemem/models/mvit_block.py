"""The MViTv2 transformer block: norm -> multiscale attention (+ pooled skip) -> norm -> MLP.

Submodule names equal the official ones (``memvit/models/attention.py``) so that state dicts load.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from edgemem.models.mvit_attention import MultiScaleAttention, layer_norm, pool_tokens
from edgemem.models.mvit_config import BlockSpec, MViTConfig


class Mlp(nn.Module):
    def __init__(self, dim_in: int, hidden: int, dim_out: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim_in, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim_out)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


def drop_path(x: Tensor, p: float, training: bool) -> Tensor:
    """Stochastic depth per sample (training only)."""
    if p == 0.0 or not training:
        return x
    keep = 1.0 - p
    mask = (keep + torch.rand((x.shape[0],) + (1,) * (x.ndim - 1), dtype=x.dtype, device=x.device)).floor()
    return x / keep * mask


class MultiScaleBlock(nn.Module):
    """Transformer block: norm1 -> attention (+ pooled skip) -> norm2 -> MLP; official key names."""

    def __init__(self, spec: BlockSpec, cfg: MViTConfig) -> None:
        super().__init__()
        self.spec = spec
        self.cls = cfg.cls_embed
        self.dim_mul_in_att = cfg.dim_mul_in_att
        self.norm1 = layer_norm(spec.dim)
        self.attn = MultiScaleAttention(spec, cfg)
        self.norm2 = layer_norm(spec.att_dim)
        self.mlp = Mlp(spec.att_dim, int(spec.att_dim * cfg.mlp_ratio), spec.dim_out)
        if spec.dim != spec.dim_out:
            self.proj = nn.Linear(spec.dim, spec.dim_out)
        self.pool_skip = None
        if spec.skip_kernel and any(k > 1 for k in spec.skip_kernel):
            pad = tuple(k // 2 for k in spec.skip_kernel)
            self.pool_skip = nn.MaxPool3d(spec.skip_kernel, spec.stride_q, pad, ceil_mode=False)
        self.drop_path = spec.drop_path

    def forward(
        self, x: Tensor, mem_k: Tensor | None = None, mem_v: Tensor | None = None, mem_ok: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        x_norm = self.norm1(x)
        x_block, k_raw, v_raw = self.attn(x_norm, mem_k, mem_v, mem_ok)
        if self.dim_mul_in_att and self.spec.dim != self.spec.dim_out:
            x = self.proj(x_norm)
        if self.pool_skip is not None:
            x = pool_tokens(x, self.spec.x_thw, self.pool_skip, 1, self.cls, None)
        x = x + drop_path(x_block, self.drop_path, self.training)
        x_norm = self.norm2(x)
        x_mlp = self.mlp(x_norm)
        if not self.dim_mul_in_att and self.spec.dim != self.spec.dim_out:
            x = self.proj(x_norm)
        x = x + drop_path(x_mlp, self.drop_path, self.training)
        return x, k_raw, v_raw

"""Memory-less clip backbones (ResNet3D, X3D) as streaming models with an empty state.

A clip backbone splits into ``forward_features`` (frames -> last-stage feature map ``[B, D, t, h, w]``)
and ``forward_head`` (feature map -> logits), so Collaborative Memory can sit between the two.
``frame_scale=k`` builds the baseline fed k x more frames per clip (same weights, longer clip): its
config's ``clip`` is the longer clip, which is what the card and the data read.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import torch
from torch import Tensor, nn

from edgemem.contract import ClipSpec, TensorSpec
from edgemem.models.streaming import State, StreamingModel


def to_tokens(feat: Tensor) -> Tensor:
    """``[B, D, t, h, w] -> [B, t*h*w, D]``."""
    return feat.flatten(2).transpose(1, 2)


def from_tokens(tokens: Tensor, like: Tensor) -> Tensor:
    """Inverse of :func:`to_tokens` for a feature map shaped like ``like``."""
    return tokens.transpose(1, 2).reshape(like.shape)


# MODEL.HEAD_ACT: what a graph's logits mean (the activation the official eval head applies).
HEAD_ACTS = ("softmax", "sigmoid", "none")


def official_eval_scores(proj: Tensor, act: str) -> Tensor:
    """PySlowFast's fully convolutional eval head on per-position class scores ``[B, t, h, w, C] -> [B, C]``.

    One position: the scores as they are (the official head returns ``act`` of them). Several: the
    official head applies ``act`` per position and averages; returned here as logits whose ``act`` is
    that average (log of the mean softmax, logit of the mean sigmoid, the mean itself for ``none``),
    so that every consumer applies ``act`` to a graph's output and gets the official numbers.
    """
    b, c = proj.shape[0], proj.shape[-1]
    pos = proj.reshape(b, -1, c)
    if pos.shape[1] == 1:
        return pos[:, 0]
    if act == "none":
        return pos.mean(1)
    info = torch.finfo(proj.dtype)
    if act == "softmax":
        return pos.softmax(-1).mean(1).clamp_min(info.tiny).log()
    p = pos.sigmoid().mean(1).clamp(info.tiny, 1.0 - info.eps)
    return p.log() - (-p).log1p()


def init_conv_bn(module: nn.Module, zero_init_final_bn: bool = False) -> None:
    """PySlowFast-style init: He (fan-out) convs, unit BN, N(0, 0.01) heads; with ``zero_init_final_bn``
    (``RESNET.ZERO_INIT_FINAL_BN``) each residual branch's final BN starts at 0 (the block = its shortcut)."""
    for m in module.modules():
        if isinstance(m, nn.Conv3d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm3d):
            zero = zero_init_final_bn and getattr(m, "transform_final_bn", False)
            nn.init.constant_(m.weight, 0.0 if zero else 1.0)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.01)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class ClipBackbone(StreamingModel):
    """Base of the clip backbones. Subclasses set ``self.cfg`` (a dataclass with ``clip`` and the card fields),
    ``self.family``, ``self.preset`` and implement ``forward_features``/``forward_head``/``feature_dim``."""

    cfg: Any
    family: str
    preset: str | None

    @property
    def feature_dim(self) -> int:
        raise NotImplementedError

    def forward_features(self, frames: Tensor) -> Tensor:
        raise NotImplementedError

    def forward_head(self, feat: Tensor) -> Tensor:
        raise NotImplementedError

    def feature_tokens(self, feat: Tensor) -> Tensor:
        """Feature map as tokens ``[B, K, D]`` (what Collaborative Memory reads)."""
        return to_tokens(feat)

    def tokens_to_feature(self, tokens: Tensor, feat: Tensor) -> Tensor:
        """Tokens back to the layout of ``feat`` (what ``forward_head`` reads)."""
        return from_tokens(tokens, feat)

    def forward(self, frames: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(frames))

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        return self.cfg.clip.shape

    @property
    def num_classes(self) -> int:
        return int(self.cfg.num_classes)

    def state_specs(self, batch_size: int | str = 1) -> list[TensorSpec]:
        return []

    def step(self, frames: Tensor, state: State, reset: Tensor | None = None) -> tuple[Tensor, State]:
        """Classify one clip; there is no memory, so ``state`` stays empty and ``reset`` is a no-op."""
        self.check_step_inputs(frames, state, reset)
        return self.forward(frames), {}

    def card_identity(self) -> tuple[str | None, str | None]:
        return self.preset, self.preset or "config"

    def card_config(self) -> dict[str, Any]:
        return _jsonable({**asdict(self.cfg), "clip": self.cfg.clip.to_json()})

    def clip_spec(self) -> ClipSpec:
        return self.cfg.clip

    def card_view(self) -> tuple[int, str, str]:
        c = self.cfg
        return c.frame_scale, getattr(c, "head_act", "softmax"), getattr(c, "view", "train")


def _jsonable(x: Any) -> Any:
    if isinstance(x, (tuple, list)):
        return [_jsonable(v) for v in x]
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    return x

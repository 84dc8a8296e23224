"""X3D clip backbones (Feichtenhofer, CVPR 2020) with PySlowFast module names: XS, S, M.

Names match PySlowFast's ``X3D`` (``s1.pathway0_stem.conv_xy``, ``s2.pathway0_res0.branch2.se.fc1``,
``head.conv_5``, ``head.lin_5``, ``head.projection``) so the official ``x3d_*.pyth`` files load as they
are. ``forward_features`` returns the res5 map (``[B, 192, t, h, w]`` at width factor 2);
``forward_head`` is the X3D head (conv_5, pool, lin_5, dropout, projection); the pool is global (the
presets) or, for a model built from a PySlowFast config, the official eval head's (training-size
kernel, stride 1, activation per position averaged: ``clip_base.official_eval_scores``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from edgemem.contract import ClipSpec, ModelCard
from edgemem.errors import UnsupportedError
from edgemem.models.clip_base import ClipBackbone, init_conv_bn, official_eval_scores
from edgemem.models.clip_field import check_frame_scale, clip_of, preset_config
from edgemem.models.registry import register_family, register_model
from edgemem.models.resnet3d import KINETICS_MEAN, KINETICS_STD, Stem


def round_width(width: float, multiplier: float, divisor: int = 8) -> int:
    """Scale a channel count and round it to a multiple of ``divisor`` (never below 90% of the target)."""
    width *= multiplier
    new = max(divisor, int(width + divisor / 2) // divisor * divisor)
    if new < 0.9 * width:
        new += divisor
    return int(new)


@dataclass(frozen=True)
class X3DConfig:
    """X3D expansion factors and input (PySlowFast ``X3D.*`` / ``DATA.*``); ``clip`` is the whole
    input clip (a frame-scaled baseline's ``frame_scale`` times longer)."""

    width_factor: float = 2.0
    depth_factor: float = 2.2
    bottleneck_factor: float = 2.25
    dim_c1: int = 12
    dim_c5: int = 2048
    se_ratio: float = 0.0625
    num_classes: int = 400
    dropout: float = 0.5
    clip: ClipSpec = ClipSpec(13, 6, 160, 30, KINETICS_MEAN, KINETICS_STD)
    frame_scale: int = 1
    zero_init_final_bn: bool = False  # RESNET.ZERO_INIT_FINAL_BN (initialisation only)
    scale_res2: bool = False  # X3D.SCALE_RES2: res2 width 2 x DIM_C1 (rounded)
    bn_lin5: bool = False  # X3D.BN_LIN5: BatchNorm after lin_5
    # Official eval head pool (t, h, w; stride 1) and MODEL.HEAD_ACT; None: global average (the presets).
    head_pool: tuple[int, int, int] | None = None
    head_act: str = "softmax"
    view: str = "train"  # "train": input at DATA.TRAIN_CROP_SIZE, "test": at DATA.TEST_CROP_SIZE

    def __post_init__(self) -> None:
        check_frame_scale(self.clip, self.frame_scale)
        if self.head_act not in ("softmax", "sigmoid"):
            raise UnsupportedError(
                f"not supported: MODEL.HEAD_ACT={self.head_act!r} for X3D (the official X3DHead has softmax, sigmoid)"
            )

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> X3DConfig:
        """A stored config: the ``clip`` object, or the flat clip fields of configs written before."""
        d = dict(d)
        clip = clip_of(d, cls.clip)
        if d.get("head_pool") is not None:
            d["head_pool"] = tuple(d["head_pool"])
        return cls(**d, clip=clip)


class Swish(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x * x.sigmoid()


class X3DStem(nn.Module):
    """conv_xy (1x3x3, stride 1x2x2), depthwise temporal conv (5x1x1), bn, relu."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv_xy = nn.Conv3d(cin, cout, (1, 3, 3), (1, 2, 2), (0, 1, 1), bias=False)
        self.conv = nn.Conv3d(cout, cout, (5, 1, 1), 1, (2, 0, 0), groups=cout, bias=False)
        self.bn = nn.BatchNorm3d(cout)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.bn(self.conv(self.conv_xy(x))))


class SE(nn.Module):
    """Squeeze-excitation over a 3D map."""

    def __init__(self, dim: int, ratio: float) -> None:
        super().__init__()
        fc = round_width(dim, ratio)
        self.avg_pool = nn.AdaptiveAvgPool3d(1)
        self.fc1 = nn.Conv3d(dim, fc, 1)
        self.fc1_act = nn.ReLU()
        self.fc2 = nn.Conv3d(fc, dim, 1)
        self.fc2_sig = nn.Sigmoid()

    def forward(self, x: Tensor) -> Tensor:
        return x * self.fc2_sig(self.fc2(self.fc1_act(self.fc1(self.avg_pool(x)))))


class X3DTransform(nn.Module):
    """a: 1x1x1, b: 3x3x3 channel-wise (stride), optional SE, swish, c: 1x1x1."""

    def __init__(self, cin: int, cout: int, inner: int, stride: int, se_ratio: float) -> None:
        super().__init__()
        self.a = nn.Conv3d(cin, inner, 1, bias=False)
        self.a_bn = nn.BatchNorm3d(inner)
        self.a_relu = nn.ReLU(inplace=True)
        self.b = nn.Conv3d(inner, inner, 3, (1, stride, stride), 1, groups=inner, bias=False)
        self.b_bn = nn.BatchNorm3d(inner)
        if se_ratio > 0:
            self.se = SE(inner, se_ratio)
        self.b_relu = Swish()
        self.c = nn.Conv3d(inner, cout, 1, bias=False)
        self.c_bn = nn.BatchNorm3d(cout)
        self.c_bn.transform_final_bn = True  # type: ignore[assignment]  # torch: Tensor | Module only

    def forward(self, x: Tensor) -> Tensor:
        x = self.b_bn(self.b(self.a_relu(self.a_bn(self.a(x)))))
        if hasattr(self, "se"):
            x = self.se(x)
        return self.c_bn(self.c(self.b_relu(x)))


class X3DBlock(nn.Module):
    def __init__(self, cin: int, cout: int, inner: int, stride: int, se_ratio: float) -> None:
        super().__init__()
        if cin != cout or stride != 1:
            self.branch1 = nn.Conv3d(cin, cout, 1, (1, stride, stride), bias=False)
            self.branch1_bn = nn.BatchNorm3d(cout)
        self.branch2 = X3DTransform(cin, cout, inner, stride, se_ratio)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        short = self.branch1_bn(self.branch1(x)) if hasattr(self, "branch1") else x
        return self.relu(short + self.branch2(x))


class X3DStage(nn.Module):
    """``pathway0_res{i}``; SE on every other block (0, 2, 4, ...)."""

    def __init__(self, n: int, cin: int, cout: int, inner: int, se_ratio: float) -> None:
        super().__init__()
        self.n = n
        for i in range(n):
            se = se_ratio if i % 2 == 0 else 0.0
            self.add_module(f"pathway0_res{i}", X3DBlock(cin if i == 0 else cout, cout, inner, 2 if i == 0 else 1, se))

    def forward(self, x: Tensor) -> Tensor:
        for i in range(self.n):
            x = getattr(self, f"pathway0_res{i}")(x)
        return x


class X3DHead(nn.Module):
    """conv_5 (1x1x1) + bn + relu, global average pool, lin_5 (1x1x1) + relu, dropout, projection."""

    def __init__(
        self, cin: int, inner: int, cout: int, num_classes: int, dropout: float, cfg: X3DConfig | None = None
    ) -> None:
        super().__init__()
        self.pool = cfg.head_pool if cfg else None
        self.act = cfg.head_act if cfg else "softmax"
        self.conv_5 = nn.Conv3d(cin, inner, 1, bias=False)
        self.conv_5_bn = nn.BatchNorm3d(inner)
        self.conv_5_relu = nn.ReLU(inplace=True)
        self.lin_5 = nn.Conv3d(inner, cout, 1, bias=False)
        if cfg is not None and cfg.bn_lin5:
            self.lin_5_bn = nn.BatchNorm3d(cout)
        self.lin_5_relu = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(dropout)
        self.projection = nn.Linear(cout, num_classes)

    def forward(self, feat: Tensor) -> Tensor:
        x = self.conv_5_relu(self.conv_5_bn(self.conv_5(feat)))
        x = x.mean(dim=(2, 3, 4), keepdim=True) if self.pool is None else F.avg_pool3d(x, self.pool, stride=1)
        x = self.lin_5(x)
        if hasattr(self, "lin_5_bn"):
            x = self.lin_5_bn(x)
        x = self.lin_5_relu(x)
        if self.pool is None:
            return self.projection(self.dropout(x.flatten(1)))
        return official_eval_scores(self.projection(self.dropout(x.permute(0, 2, 3, 4, 1))), self.act)


class X3D(ClipBackbone):
    """A PySlowFast X3D; ``forward_features`` returns the res5 map ``[B, D, t, h, w]``."""

    family = "x3d"
    s2: X3DStage  # s2..s5 are added by name in __init__
    s3: X3DStage
    s4: X3DStage
    s5: X3DStage

    def __init__(self, cfg: X3DConfig, preset: str | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.preset = preset
        dim_res1 = round_width(cfg.dim_c1, cfg.width_factor)
        self.s1 = Stem(X3DStem(3, dim_res1))
        stage_dims = [round_width(cfg.dim_c1, 2.0) if cfg.scale_res2 else cfg.dim_c1]
        for _ in range(3):
            stage_dims.append(round_width(stage_dims[-1], 2.0))
        cin = dim_res1
        for i, (blocks, base) in enumerate(zip((1, 2, 5, 3), stage_dims, strict=True)):
            cout = round_width(base, cfg.width_factor)
            inner = int(cfg.bottleneck_factor * cout)
            n = int(math.ceil(cfg.depth_factor * blocks))
            self.add_module(f"s{i + 2}", X3DStage(n, cin, cout, inner, cfg.se_ratio))
            cin = cout
        self._dim = cin
        self.head = X3DHead(cin, inner, cfg.dim_c5, cfg.num_classes, cfg.dropout, cfg)
        init_conv_bn(self, cfg.zero_init_final_bn)

    @property
    def feature_dim(self) -> int:
        return self._dim

    def forward_features(self, frames: Tensor) -> Tensor:
        return self.s5(self.s4(self.s3(self.s2(self.s1(frames)))))

    def forward_head(self, feat: Tensor) -> Tensor:
        return self.head(feat)


@register_family("x3d")
def _from_card(card: ModelCard) -> X3D:
    return X3D(X3DConfig.from_dict(card.config), preset=card.name)


X3D_PRESETS: dict[str, dict[str, Any]] = {
    "x3d_xs": dict(clip=ClipSpec(frames=4, sampling_rate=12, crop_size=160, target_fps=30)),
    "x3d_s": dict(clip=ClipSpec(frames=13, sampling_rate=6, crop_size=160, target_fps=30)),
    "x3d_m": dict(clip=ClipSpec(frames=16, sampling_rate=5, crop_size=224, target_fps=30)),
}


def _build(name: str, kw: dict[str, Any]) -> X3D:
    # The official X3D configs set RESNET.ZERO_INIT_FINAL_BN: True.
    return X3D(preset_config(X3DConfig, {**X3D_PRESETS[name], "zero_init_final_bn": True}, kw, "X3D"), preset=name)


@register_model
def x3d_xs(**kw: Any) -> X3D:
    """X3D-XS, 4x12 at 160 px (``Kinetics/X3D_XS``; 3.8 M parameters)."""
    return _build("x3d_xs", kw)


@register_model
def x3d_s(**kw: Any) -> X3D:
    """X3D-S, 13x6 at 160 px (``Kinetics/X3D_S``)."""
    return _build("x3d_s", kw)


@register_model
def x3d_m(**kw: Any) -> X3D:
    """X3D-M, 16x5 at 224 px (``Kinetics/X3D_M``)."""
    return _build("x3d_m", kw)

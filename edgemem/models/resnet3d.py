"""ResNet3D clip backbones with PySlowFast module names: Slow-only, C2D, I3D (+ non-local), R18/50/101.

Parameter names match PySlowFast's ``ResNet`` (``s1.pathway0_stem.conv``, ``s2.pathway0_res0.branch2.a``,
``s4.pathway0_nonlocal3.conv_theta``, ``head.projection``), so official ``.pyth`` files load as they are.
The head either averages the last-stage map globally (the presets) or, for a model built from a
PySlowFast config, runs the official eval head: AvgPool3d with the training-size kernel and stride 1,
the projection at every position and, when there are several, the head activation per position
averaged (``clip_base.official_eval_scores``) -- at any input size, as the official test does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edgemem.contract import ClipSpec, ModelCard
from edgemem.errors import UnsupportedError
from edgemem.models.clip_base import HEAD_ACTS, ClipBackbone, init_conv_bn, official_eval_scores
from edgemem.models.clip_field import check_frame_scale, clip_of, preset_config
from edgemem.models.registry import register_family, register_model

STAGE_DEPTH = {18: (2, 2, 2, 2), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}

# Temporal kernel sizes of conv1 and of res2..res5 (cycled over the blocks of a stage).
TEMPORAL_KERNELS: dict[str, tuple[tuple[int, ...], ...]] = {
    "2d": ((1,), (1,), (1,), (1,), (1,)),
    "c2d": ((1,), (1,), (1,), (1,), (1,)),
    "slow_c2d": ((1,), (1,), (1,), (1,), (1,)),
    "i3d": ((5,), (3,), (3, 1), (3, 1), (1, 3)),
    "slow_i3d": ((5,), (3,), (3, 1), (3, 1), (1, 3)),
    "slow": ((1,), (1,), (1,), (3,), (3,)),
}
# Temporal max-pool after res2 (C2D and I3D halve time there).
POOL1_T = {"2d": 1, "c2d": 2, "slow_c2d": 1, "i3d": 2, "slow_i3d": 1, "slow": 1}

KINETICS_MEAN = (0.45, 0.45, 0.45)
KINETICS_STD = (0.225, 0.225, 0.225)


@dataclass(frozen=True)
class ResNetConfig:
    """Architecture and input of a ResNet3D (PySlowFast ``MODEL.ARCH`` / ``RESNET.*`` / ``NONLOCAL.*``);
    ``clip`` is the whole input clip (a frame-scaled baseline's ``frame_scale`` times longer)."""

    arch: str = "slow"
    depth: int = 50
    trans_func: str = "bottleneck"  # "bottleneck" | "basic" (the 18-layout)
    width_per_group: int = 64
    num_groups: int = 1
    expansion: int = 4  # stage output width = width_per_group * expansion * 2**stage (PySlowFast: 4)
    # Block indices (per stage res2..res5) followed by a non-local block, and its pooling.
    nonlocal_location: tuple[tuple[int, ...], ...] = ((), (), (), ())
    nonlocal_pool: tuple[int, int, int] = (1, 2, 2)
    nonlocal_instantiation: str = "dot_product"
    # Blocks per stage that use the temporal kernel (PySlowFast NUM_BLOCK_TEMP_KERNEL); None: all.
    temp_kernel_blocks: tuple[int, int, int, int] | None = None
    spatial_strides: tuple[int, int, int, int] = (1, 2, 2, 2)  # res2..res5 (RESNET.SPATIAL_STRIDES)
    nonlocal_group: tuple[int, int, int, int] = (1, 1, 1, 1)  # time folded into batch (NONLOCAL.GROUP)
    spatial_dilations: tuple[int, int, int, int] = (1, 1, 1, 1)  # the 1x3x3 convs (RESNET.SPATIAL_DILATIONS)
    # The official eval head: its AvgPool3d kernel (t, h, w; stride 1) and MODEL.HEAD_ACT, which says
    # what the logits mean (softmax/sigmoid scores, or none). None: global average (the presets).
    head_pool: tuple[int, int, int] | None = None
    head_act: str = "softmax"
    view: str = "train"  # "train": input at DATA.TRAIN_CROP_SIZE, "test": at DATA.TEST_CROP_SIZE
    num_classes: int = 400
    dropout: float = 0.5
    clip: ClipSpec = ClipSpec(8, 8, 224, 30, KINETICS_MEAN, KINETICS_STD)
    frame_scale: int = 1
    zero_init_final_bn: bool = False  # RESNET.ZERO_INIT_FINAL_BN (initialisation only)

    def __post_init__(self) -> None:
        if self.arch not in TEMPORAL_KERNELS:
            raise UnsupportedError(f"ResNet3D arch '{self.arch}' not in {sorted(TEMPORAL_KERNELS)}")
        if self.depth not in STAGE_DEPTH:
            raise UnsupportedError(f"ResNet3D depth {self.depth} not in {sorted(STAGE_DEPTH)}")
        if self.trans_func not in ("bottleneck", "basic"):
            raise UnsupportedError(f"ResNet3D trans_func '{self.trans_func}' not in ['bottleneck', 'basic']")
        if len(self.nonlocal_location) != 4:
            raise UnsupportedError("nonlocal_location needs one tuple of block indices per stage res2..res5")
        if self.nonlocal_instantiation not in ("dot_product", "softmax"):
            raise UnsupportedError(f"non-local instantiation '{self.nonlocal_instantiation}' unsupported")
        check_frame_scale(self.clip, self.frame_scale)
        if self.head_act not in HEAD_ACTS:
            raise UnsupportedError(f"not supported: MODEL.HEAD_ACT={self.head_act!r} (one of {list(HEAD_ACTS)})")
        blocks = STAGE_DEPTH[self.depth]
        if self.temp_kernel_blocks and any(n > b for n, b in zip(self.temp_kernel_blocks, blocks, strict=True)):
            raise UnsupportedError(
                f"not supported: RESNET.NUM_BLOCK_TEMP_KERNEL={[[n] for n in self.temp_kernel_blocks]} has more blocks "
                f"than depth {self.depth} has per stage {list(blocks)} (the official ResStage asserts)"
            )

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ResNetConfig:
        """A stored config: the ``clip`` object, or the flat clip fields of configs written before."""
        d = dict(d)
        clip = clip_of(d, cls.clip)
        for k in (
            "nonlocal_pool",
            "temp_kernel_blocks",
            "spatial_strides",
            "nonlocal_group",
            "spatial_dilations",
            "head_pool",
        ):
            if d.get(k) is not None:
                d[k] = tuple(d[k])
        if "nonlocal_location" in d:
            d["nonlocal_location"] = tuple(tuple(s) for s in d["nonlocal_location"])
        return cls(**d, clip=clip)


def _conv(cin: int, cout: int, k: tuple[int, int, int], s: tuple[int, int, int] = (1, 1, 1), **kw: Any) -> nn.Conv3d:
    pad = kw.pop("padding", (k[0] // 2, k[1] // 2, k[2] // 2))
    return nn.Conv3d(cin, cout, k, stride=s, padding=pad, bias=kw.pop("bias", False), **kw)


def _final_bn(c: int) -> nn.BatchNorm3d:
    bn = nn.BatchNorm3d(c)
    # zero-initialised with RESNET.ZERO_INIT_FINAL_BN (torch types Module attributes as Tensor | Module)
    bn.transform_final_bn = True  # type: ignore[assignment]
    return bn


class BasicStem(nn.Module):
    """conv (t x 7 x 7, stride 1x2x2), bn, relu, 1x3x3 max pool (stride 1x2x2)."""

    def __init__(self, cin: int, cout: int, t: int) -> None:
        super().__init__()
        self.conv = _conv(cin, cout, (t, 7, 7), (1, 2, 2))
        self.bn = nn.BatchNorm3d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.pool_layer = nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.pool_layer(self.relu(self.bn(self.conv(x))))


class Bottleneck(nn.Module):
    """a: t x 1 x 1, b: 1 x 3 x 3 (stride, groups, spatial dilation), c: 1 x 1 x 1."""

    def __init__(self, cin: int, cout: int, inner: int, t: int, stride: int, groups: int, dilation: int = 1) -> None:
        super().__init__()
        self.a = _conv(cin, inner, (t, 1, 1))
        self.a_bn = nn.BatchNorm3d(inner)
        self.a_relu = nn.ReLU(inplace=True)
        d = (1, dilation, dilation)
        self.b = _conv(inner, inner, (1, 3, 3), (1, stride, stride), groups=groups, padding=(0, *d[1:]), dilation=d)
        self.b_bn = nn.BatchNorm3d(inner)
        self.b_relu = nn.ReLU(inplace=True)
        self.c = _conv(inner, cout, (1, 1, 1))
        self.c_bn = _final_bn(cout)

    def forward(self, x: Tensor) -> Tensor:
        x = self.a_relu(self.a_bn(self.a(x)))
        x = self.b_relu(self.b_bn(self.b(x)))
        return self.c_bn(self.c(x))


class BasicTransform(nn.Module):
    """a: t x 3 x 3 (stride), b: 1 x 3 x 3 (spatial dilation) (the 18-layout block)."""

    def __init__(self, cin: int, cout: int, inner: int, t: int, stride: int, groups: int, dilation: int = 1) -> None:
        super().__init__()
        self.a = _conv(cin, cout, (t, 3, 3), (1, stride, stride))
        self.a_bn = nn.BatchNorm3d(cout)
        self.a_relu = nn.ReLU(inplace=True)
        self.b = _conv(cout, cout, (1, 3, 3), padding=(0, dilation, dilation), dilation=(1, dilation, dilation))
        self.b_bn = _final_bn(cout)

    def forward(self, x: Tensor) -> Tensor:
        return self.b_bn(self.b(self.a_relu(self.a_bn(self.a(x)))))


class ResBlock(nn.Module):
    """Residual block: ``relu(branch1(x) + branch2(x))`` with a 1x1x1 projection shortcut when needed."""

    def __init__(
        self, cin: int, cout: int, inner: int, t: int, stride: int, groups: int, trans: type, dilation: int = 1
    ) -> None:
        super().__init__()
        if cin != cout or stride != 1:
            self.branch1 = _conv(cin, cout, (1, 1, 1), (1, stride, stride))
            self.branch1_bn = nn.BatchNorm3d(cout)
        self.branch2 = trans(cin, cout, inner, t, stride, groups, dilation)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        short = self.branch1_bn(self.branch1(x)) if hasattr(self, "branch1") else x
        return self.relu(short + self.branch2(x))


class Nonlocal(nn.Module):
    """Non-local block (Wang et al.): embedded dot-product (or softmax) attention over t*h*w, residual."""

    def __init__(self, dim: int, pool: tuple[int, int, int], instantiation: str, group: int = 1) -> None:
        super().__init__()
        self.group = group  # > 1: time split into ``group`` chunks attended separately (NONLOCAL.GROUP)
        inner = dim // 2
        self.conv_theta = nn.Conv3d(dim, inner, 1)
        self.conv_phi = nn.Conv3d(dim, inner, 1)
        self.conv_g = nn.Conv3d(dim, inner, 1)
        self.conv_out = nn.Conv3d(inner, dim, 1)
        self.bn = _final_bn(dim)
        self.use_pool = any(p > 1 for p in pool)
        if self.use_pool:
            self.pool = nn.MaxPool3d(pool, stride=pool)
        self.instantiation = instantiation
        self.inner = inner

    def forward(self, x: Tensor) -> Tensor:
        g = self.group
        if g == 1:
            return self._attend(x)
        b, c, t, h, w = x.shape
        chunks = x.reshape(b, c, g, t // g, h, w).transpose(1, 2).reshape(b * g, c, t // g, h, w)
        y = self._attend(chunks).reshape(b, g, c, t // g, h, w).transpose(1, 2)
        return y.reshape(b, c, t, h, w)

    def _attend(self, x: Tensor) -> Tensor:
        b, _, t, h, w = x.shape
        theta = self.conv_theta(x).flatten(2)
        src = self.pool(x) if self.use_pool else x
        phi, g = self.conv_phi(src).flatten(2), self.conv_g(src).flatten(2)
        att = theta.transpose(1, 2) @ phi  # [b, thw, p]
        if self.instantiation == "softmax":
            att = torch.softmax(att * self.inner**-0.5, dim=2)
        else:
            att = att / phi.shape[2]
        y = (g @ att.transpose(1, 2)).reshape(b, self.inner, t, h, w)
        return x + self.bn(self.conv_out(y))


class ResStage(nn.Module):
    """Blocks ``pathway0_res{i}`` (temporal kernels cycled) and ``pathway0_nonlocal{i}`` after listed blocks."""

    def __init__(self, cfg: ResNetConfig, stage: int, cin: int, cout: int, inner: int, stride: int) -> None:
        super().__init__()
        kernels = TEMPORAL_KERNELS[cfg.arch][stage + 1]
        trans = Bottleneck if cfg.trans_func == "bottleneck" else BasicTransform
        self.order: list[str] = []
        limit = cfg.temp_kernel_blocks[stage] if cfg.temp_kernel_blocks else None
        for i in range(STAGE_DEPTH[cfg.depth][stage]):
            t = kernels[i % len(kernels)] if limit is None or i < limit else 1
            blk = ResBlock(
                cin if i == 0 else cout, cout, inner, t, stride if i == 0 else 1, cfg.num_groups, trans,
                cfg.spatial_dilations[stage],
            )  # fmt: skip
            self.add_module(f"pathway0_res{i}", blk)
            self.order.append(f"pathway0_res{i}")
            if i in cfg.nonlocal_location[stage]:
                nl = Nonlocal(cout, cfg.nonlocal_pool, cfg.nonlocal_instantiation, cfg.nonlocal_group[stage])
                self.add_module(f"pathway0_nonlocal{i}", nl)
                self.order.append(f"pathway0_nonlocal{i}")

    def forward(self, x: Tensor) -> Tensor:
        for name in self.order:
            x = getattr(self, name)(x)
        return x


class Stem(nn.Module):
    """PySlowFast ``VideoModelStem`` wrapper (``s1.pathway0_stem``)."""

    def __init__(self, stem: nn.Module) -> None:
        super().__init__()
        self.pathway0_stem = stem

    def forward(self, x: Tensor) -> Tensor:
        return self.pathway0_stem(x)


class ResNetHead(nn.Module):
    """Average pool (global, or the official kernel with stride 1), dropout, projection (``head.projection``)."""

    def __init__(
        self, dim: int, num_classes: int, dropout: float, pool: tuple[int, int, int] | None = None, act: str = "softmax"
    ) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.projection = nn.Linear(dim, num_classes)
        self.pool, self.act = pool, act

    def forward(self, feat: Tensor) -> Tensor:
        if self.pool is None:
            return self.projection(self.dropout(feat.mean(dim=(2, 3, 4))))
        x = F.avg_pool3d(feat, self.pool, stride=1).permute(0, 2, 3, 4, 1)
        return official_eval_scores(self.projection(self.dropout(x)), self.act)


class ResNet3D(ClipBackbone):
    """A PySlowFast ResNet3D; ``forward_features`` returns the res5 map ``[B, D, t, h, w]``."""

    family = "resnet3d"
    s2: ResStage  # s2..s5 are added by name in __init__
    s3: ResStage
    s4: ResStage
    s5: ResStage

    def __init__(self, cfg: ResNetConfig, preset: str | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.preset = preset
        w = cfg.width_per_group
        self.s1 = Stem(BasicStem(3, w, TEMPORAL_KERNELS[cfg.arch][0][0]))
        cin = w
        for stage in range(4):
            cout = w * cfg.expansion * 2**stage
            inner = w * cfg.num_groups * 2**stage
            self.add_module(f"s{stage + 2}", ResStage(cfg, stage, cin, cout, inner, cfg.spatial_strides[stage]))
            if stage == 0:
                pt = POOL1_T[cfg.arch]
                self.pathway0_pool = nn.MaxPool3d((pt, 1, 1), (pt, 1, 1))
            cin = cout
        self._dim = cin
        self.head = ResNetHead(cin, cfg.num_classes, cfg.dropout, cfg.head_pool, cfg.head_act)
        init_conv_bn(self, cfg.zero_init_final_bn)

    @property
    def feature_dim(self) -> int:
        return self._dim

    def forward_features(self, frames: Tensor) -> Tensor:
        x = self.s2(self.s1(frames))
        x = self.pathway0_pool(x)
        return self.s5(self.s4(self.s3(x)))

    def forward_head(self, feat: Tensor) -> Tensor:
        return self.head(feat)


@register_family("resnet3d")
def _from_card(card: ModelCard) -> ResNet3D:
    return ResNet3D(ResNetConfig.from_dict(card.config), preset=card.name)


def _build(name: str, defaults: dict[str, Any], overrides: dict[str, Any]) -> ResNet3D:
    return ResNet3D(preset_config(ResNetConfig, defaults, overrides, "ResNet3D"), preset=name)


# The official Kinetics configs set RESNET.ZERO_INIT_FINAL_BN: True; the tiny presets keep PySlowFast's
# default (False): at 32x32 the last stage's strided shortcut reads one position of a 2x2 map.
SLOW_R50_8X8: dict[str, Any] = dict(
    arch="slow",
    depth=50,
    clip=ClipSpec(frames=8, sampling_rate=8, crop_size=224, target_fps=30),
    zero_init_final_bn=True,
)
SLOW_TINY: dict[str, Any] = dict(
    arch="slow",
    depth=18,
    trans_func="basic",
    width_per_group=8,
    expansion=1,
    num_classes=10,
    dropout=0.0,
    clip=ClipSpec(frames=8, sampling_rate=2, crop_size=32, target_fps=30),
)


@register_model
def slow_r50_8x8(**kw: Any) -> ResNet3D:
    """Slow-only R50 8x8 (PySlowFast ``Kinetics/c2/SLOW_8x8_R50``; 32.5 M parameters, 54.5 GFLOPs/view)."""
    return _build("slow_r50_8x8", SLOW_R50_8X8, kw)


@register_model
def i3d_r50_8x8(**kw: Any) -> ResNet3D:
    """I3D R50 8x8 (``Kinetics/c2/I3D_8x8_R50``)."""
    return _build("i3d_r50_8x8", dict(SLOW_R50_8X8, arch="i3d"), kw)


@register_model
def i3d_nln_r50_8x8(**kw: Any) -> ResNet3D:
    """I3D R50 8x8 with non-local blocks in res3 (1, 3) and res4 (1, 3, 5) (``Kinetics/c2/I3D_NLN_8x8_R50``)."""
    nl = dict(nonlocal_location=((), (1, 3), (1, 3, 5), ()))
    return _build("i3d_nln_r50_8x8", dict(SLOW_R50_8X8, arch="i3d", **nl), kw)


@register_model
def c2d_r50_8x8(**kw: Any) -> ResNet3D:
    """C2D R50 8x8 (``Kinetics/c2/C2D_NOPOOL_8x8_R50``: no temporal pool)."""
    return _build("c2d_r50_8x8", dict(SLOW_R50_8X8, arch="slow_c2d"), kw)


@register_model
def slow_tiny(**kw: Any) -> ResNet3D:
    """Tiny Slow-only (18-layout, widths 8..64) on 8-frame 32x32 clips: trains on a CPU in minutes."""
    return _build("slow_tiny", SLOW_TINY, kw)

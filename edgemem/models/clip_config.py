"""PySlowFast YAML configs (``MODEL_NAME`` ResNet / X3D) read into ResNetConfig / X3DConfig, built or refused.

Every option the official ``ResNet``/``X3D`` builders read is either built as they build it or refused
with ``not supported: KEY=VALUE`` (SlowFast pathways, X3D dilation, stride on the 1x1 conv, grouped X3D
3x3x3, sub-batch BN, detection heads, ...). Options that only matter for training or data loading are
read and ignored by design (docs/EXPORT.md lists them). Defaults are PySlowFast's.

``view`` chooses the input size: ``train`` (``DATA.TRAIN_CROP_SIZE``) or ``test``
(``DATA.TEST_CROP_SIZE``); either way the head is the official eval head (training-size pool with
stride 1, ``MODEL.HEAD_ACT`` per position, averaged), so the output equals the official eval output.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any

from edgemem.errors import UnsupportedError
from edgemem.models.clip_base import ClipBackbone
from edgemem.models.pyslowfast_keys import Lookup, read_clip, read_tree
from edgemem.models.resnet3d import (
    KINETICS_MEAN,
    KINETICS_STD,
    POOL1_T,
    STAGE_DEPTH,
    TEMPORAL_KERNELS,
    ResNet3D,
    ResNetConfig,
)
from edgemem.models.x3d import X3D, X3DConfig

_DEFAULTS: dict[str, Any] = {
    "MODEL.ARCH": "slowfast",
    "MODEL.MODEL_NAME": "SlowFast",
    "MODEL.NUM_CLASSES": 400,
    "MODEL.DROPOUT_RATE": 0.5,
    "MODEL.HEAD_ACT": "softmax",
    "MODEL.NUM_CLASSES_LIST": [],
    "DATA.NUM_FRAMES": 8,
    "DATA.SAMPLING_RATE": 8,
    "DATA.TRAIN_CROP_SIZE": 224,
    "DATA.TEST_CROP_SIZE": 256,
    "DATA.TARGET_FPS": 30,
    "DATA.MEAN": list(KINETICS_MEAN),
    "DATA.STD": list(KINETICS_STD),
    "DATA.INPUT_CHANNEL_NUM": [3, 3],
    "DATA.REVERSE_INPUT_CHANNEL": False,
    "BN.NORM_TYPE": "batchnorm",
    "DETECTION.ENABLE": False,
    "MULTIGRID.SHORT_CYCLE": False,
    "CONTRASTIVE.NUM_MLP_LAYERS": 1,
    "CONTRASTIVE.PREDICTOR_DEPTHS": [],
    "RESNET.DEPTH": 50,
    "RESNET.ZERO_INIT_FINAL_BN": False,
    "RESNET.WIDTH_PER_GROUP": 64,
    "RESNET.NUM_GROUPS": 1,
    "RESNET.TRANS_FUNC": "bottleneck_transform",
    "RESNET.STRIDE_1X1": False,
    "RESNET.NUM_BLOCK_TEMP_KERNEL": [[3], [4], [6], [3]],
    "RESNET.SPATIAL_STRIDES": [[1], [2], [2], [2]],
    "RESNET.SPATIAL_DILATIONS": [[1], [1], [1], [1]],
    "NONLOCAL.LOCATION": [[[]], [[]], [[]], [[]]],
    "NONLOCAL.GROUP": [[1], [1], [1], [1]],
    "NONLOCAL.POOL": [[[1, 2, 2], [1, 2, 2]]] * 4,
    "NONLOCAL.INSTANTIATION": "dot_product",
    "X3D.WIDTH_FACTOR": 1.0,
    "X3D.DEPTH_FACTOR": 1.0,
    "X3D.BOTTLENECK_FACTOR": 1.0,
    "X3D.DIM_C5": 2048,
    "X3D.DIM_C1": 12,
    "X3D.SCALE_RES2": False,
    "X3D.BN_LIN5": False,
    "X3D.CHANNELWISE_3x3x3": True,
}
_TRANS = {"bottleneck_transform": "bottleneck", "basic_transform": "basic"}
# BN.NORM_TYPE values that are a plain BatchNorm3d at inference (same parameters, same eval maths).
_PLAIN_BN = ("batchnorm", "sync_batchnorm", "sync_batchnorm_apex")
VIEWS = ("train", "test")


def _per_stage(c: Lookup, key: str) -> tuple[int, ...]:
    """A ``[[v], [v], [v], [v]]`` option (one pathway) as four ints."""
    v = c(key)
    ok = isinstance(v, list) and len(v) == 4 and all(isinstance(s, list) and len(s) == 1 for s in v)
    c.refuse_unless(key, ok, "one single-pathway entry per stage res2..res5")
    return tuple(int(s[0]) for s in v)


def _common(c: Lookup, view: str) -> dict[str, Any]:
    """Options shared by ResNet and X3D, with their refusals."""
    if view not in VIEWS:
        raise UnsupportedError(f"not supported: view {view!r} (one of {list(VIEWS)})")
    c.refuse_unless("DETECTION.ENABLE", not c("DETECTION.ENABLE"), "the AVA detection head")
    c.refuse_unless("MODEL.NUM_CLASSES_LIST", not c("MODEL.NUM_CLASSES_LIST"), "several classification heads")
    c.refuse_unless("DATA.INPUT_CHANNEL_NUM", list(c("DATA.INPUT_CHANNEL_NUM")) == [3],
                    "a single-pathway model takes one 3-channel (RGB) input; the official stem asserts one entry")  # fmt: skip
    c.refuse_unless("DATA.REVERSE_INPUT_CHANNEL", not c("DATA.REVERSE_INPUT_CHANNEL"), "BGR input")
    c.refuse_unless("BN.NORM_TYPE", c("BN.NORM_TYPE") in _PLAIN_BN, f"built: {list(_PLAIN_BN)}")
    c.refuse_unless("CONTRASTIVE.NUM_MLP_LAYERS", c("CONTRASTIVE.NUM_MLP_LAYERS") == 1, "an MLP head")
    c.refuse_unless("CONTRASTIVE.PREDICTOR_DEPTHS", not c("CONTRASTIVE.PREDICTOR_DEPTHS"), "predictor heads")
    c.refuse_unless("RESNET.STRIDE_1X1", not c("RESNET.STRIDE_1X1"))
    c.refuse_unless("RESNET.DEPTH", c("RESNET.DEPTH") in STAGE_DEPTH,
                    f"the official builders accept {sorted(STAGE_DEPTH)}")  # fmt: skip
    for key in ("DATA.NUM_FRAMES", "DATA.TRAIN_CROP_SIZE", "DATA.TEST_CROP_SIZE", "MODEL.NUM_CLASSES"):
        c.refuse_unless(key, c(key) >= 1, "must be positive")
    # The official assert_and_infer_cfg asserts these.
    c.refuse_unless("RESNET.NUM_GROUPS", c("RESNET.NUM_GROUPS") > 0, "must be positive")
    c.refuse_unless("RESNET.WIDTH_PER_GROUP", c("RESNET.WIDTH_PER_GROUP") > 0, "must be positive")
    c.refuse_unless("RESNET.WIDTH_PER_GROUP", c("RESNET.WIDTH_PER_GROUP") % c("RESNET.NUM_GROUPS") == 0,
                    "must be a multiple of RESNET.NUM_GROUPS")  # fmt: skip
    return dict(
        num_classes=int(c("MODEL.NUM_CLASSES")),
        dropout=float(c("MODEL.DROPOUT_RATE")),
        clip=read_clip(c, view),
        zero_init_final_bn=bool(c("RESNET.ZERO_INIT_FINAL_BN")),
        head_act=str(c("MODEL.HEAD_ACT")),
        view=view,
    )


def _conv_out(n: int, k: int, s: int, p: int) -> int:
    return (n + 2 * p - k) // s + 1


def _check_head_fits(c: Lookup, pool: tuple[int, ...] | None, grid: tuple[int, ...], crop: int) -> None:
    if pool is not None and any(p > g or p < 1 for p, g in zip(pool, grid, strict=True)):
        raise UnsupportedError(
            f"not supported: DATA.TRAIN_CROP_SIZE={c('DATA.TRAIN_CROP_SIZE')} with {crop}px clips: the official "
            f"head's pool {list(pool)} does not fit the {list(grid)} last-stage map (the official model fails too)"
        )


def resnet_config(tree: Mapping[str, Any], view: str = "train") -> ResNetConfig:
    """``MODEL_NAME: ResNet`` (``MODEL.ARCH`` 2d / c2d / i3d / slow_c2d / slow_i3d / slow) -> ResNetConfig."""
    c = Lookup(tree, _DEFAULTS)
    common = _common(c, view)
    arch = str(c("MODEL.ARCH"))
    c.refuse_unless("MODEL.ARCH", arch in TEMPORAL_KERNELS, f"single-pathway ResNet archs: {sorted(TEMPORAL_KERNELS)}")
    c.refuse_unless("RESNET.TRANS_FUNC", c("RESNET.TRANS_FUNC") in _TRANS, f"ResNet blocks: {sorted(_TRANS)}")
    c.refuse_unless("MODEL.HEAD_ACT", common["head_act"] in ("softmax", "sigmoid", "none"))
    strides = _per_stage(c, "RESNET.SPATIAL_STRIDES")
    dilations = _per_stage(c, "RESNET.SPATIAL_DILATIONS")
    c.refuse_unless("RESNET.SPATIAL_DILATIONS", min(dilations) >= 1)
    c.refuse_unless("RESNET.SPATIAL_STRIDES", set(strides) <= {1, 2}, "strides 1 or 2")
    groups = _per_stage(c, "NONLOCAL.GROUP")
    locations = tuple(tuple(int(i) for i in stage[0]) for stage in c("NONLOCAL.LOCATION"))
    pools = {tuple(c("NONLOCAL.POOL")[s][0]) for s in range(4) if locations[s]}
    c.refuse_unless("NONLOCAL.POOL", len(pools) <= 1, "one pool size for every stage with non-local blocks")
    c.refuse_unless("NONLOCAL.INSTANTIATION", c("NONLOCAL.INSTANTIATION") in ("dot_product", "softmax"))
    # Geometry at the view's input: frames per stage (for NONLOCAL.GROUP) and the last-stage map.
    pool_t = POOL1_T[arch]
    clip = common["clip"]
    frames = clip.frames
    stage_t = (frames, frames // pool_t, frames // pool_t, frames // pool_t)
    for s in range(4):
        if locations[s] and stage_t[s] % groups[s]:
            raise UnsupportedError(
                f"not supported: NONLOCAL.GROUP={[[g] for g in groups]}: res{s + 2} has {stage_t[s]} frames, "
                f"not divisible into {groups[s]} groups (the official reshape fails)"
            )
    side = _conv_out(_conv_out(clip.crop_size, 7, 2, 3), 3, 2, 1)
    for s in strides:
        side = _conv_out(side, 1, s, 0)
    train_side = int(c("DATA.TRAIN_CROP_SIZE")) // 32
    head_pool = None if c("MULTIGRID.SHORT_CYCLE") else (frames // pool_t, train_side, train_side)
    _check_head_fits(c, head_pool, (stage_t[3], side, side), clip.crop_size)
    return ResNetConfig(
        arch=arch,
        depth=int(c("RESNET.DEPTH")),
        trans_func=_TRANS[c("RESNET.TRANS_FUNC")],
        width_per_group=int(c("RESNET.WIDTH_PER_GROUP")),
        num_groups=int(c("RESNET.NUM_GROUPS")),
        nonlocal_location=locations,
        nonlocal_pool=tuple(int(x) for x in pools.pop()) if pools else (1, 2, 2),  # type: ignore[arg-type]
        nonlocal_instantiation=str(c("NONLOCAL.INSTANTIATION")),
        nonlocal_group=groups,  # type: ignore[arg-type]
        temp_kernel_blocks=_per_stage(c, "RESNET.NUM_BLOCK_TEMP_KERNEL"),  # type: ignore[arg-type]
        spatial_strides=strides,  # type: ignore[arg-type]
        spatial_dilations=dilations,  # type: ignore[arg-type]
        head_pool=head_pool,
        **common,
    )


def x3d_config(tree: Mapping[str, Any], view: str = "train") -> X3DConfig:
    """``MODEL_NAME: X3D`` (``MODEL.ARCH: x3d``, ``RESNET.TRANS_FUNC: x3d_transform``) -> X3DConfig."""
    c = Lookup(tree, _DEFAULTS)
    common = _common(c, view)
    c.refuse_unless("MODEL.ARCH", c("MODEL.ARCH") == "x3d", "X3D is built with the x3d temporal kernels")
    c.refuse_unless("RESNET.TRANS_FUNC", c("RESNET.TRANS_FUNC") == "x3d_transform", "X3D blocks are x3d_transform")
    c.refuse_unless("X3D.CHANNELWISE_3x3x3", bool(c("X3D.CHANNELWISE_3x3x3")))
    c.refuse_unless("NONLOCAL.LOCATION", all(not s[0] for s in c("NONLOCAL.LOCATION")), "non-local blocks in X3D")
    c.refuse_unless("RESNET.SPATIAL_DILATIONS", set(_per_stage(c, "RESNET.SPATIAL_DILATIONS")) == {1}, "X3D")
    train_side = math.ceil(int(c("DATA.TRAIN_CROP_SIZE")) / 32)
    clip = common["clip"]
    head_pool = (clip.frames, train_side, train_side)
    side = _conv_out(clip.crop_size, 3, 2, 1)
    for _ in range(4):
        side = _conv_out(side, 3, 2, 1)
    _check_head_fits(c, head_pool, (clip.frames, side, side), clip.crop_size)
    return X3DConfig(
        width_factor=float(c("X3D.WIDTH_FACTOR")),
        depth_factor=float(c("X3D.DEPTH_FACTOR")),
        bottleneck_factor=float(c("X3D.BOTTLENECK_FACTOR")),
        dim_c1=int(c("X3D.DIM_C1")),
        dim_c5=int(c("X3D.DIM_C5")),
        scale_res2=bool(c("X3D.SCALE_RES2")),
        bn_lin5=bool(c("X3D.BN_LIN5")),
        head_pool=head_pool,
        **common,
    )


def is_clip_config(tree: Mapping[str, Any]) -> bool:
    """True for the PySlowFast configs this module builds (ResNet/X3D families)."""
    model = tree.get("MODEL")
    return isinstance(model, Mapping) and model.get("MODEL_NAME") in ("ResNet", "X3D")


def backbone_from_pyslowfast(config: str | os.PathLike[str] | Mapping[str, Any], view: str = "train") -> ClipBackbone:
    """Build (random init) the clip backbone of a PySlowFast YAML (path or parsed dict)."""
    tree, source = read_tree(config)
    name = tree["MODEL"].get("MODEL_NAME", _DEFAULTS["MODEL.MODEL_NAME"])
    if name == "X3D":
        return X3D(x3d_config(tree, view))
    if name == "ResNet":
        return ResNet3D(resnet_config(tree, view))
    raise UnsupportedError(f"not supported: MODEL.MODEL_NAME={name!r} (ResNet, X3D and MViT are built)")

"""PySlowFast YAML configs (``MODEL.ARCH`` slow/c2d/i3d or x3d) read into ResNetConfig / X3DConfig.

Only what changes the architecture or the input is read; options edgemem does not build (SlowFast
pathways, dilation, stride on the 1x1 conv, X3D BN_LIN5/SCALE_RES2, grouped 3x3x3) are refused with
the key named, rather than silently building a different network. Defaults are PySlowFast's.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from edgemem.errors import UnsupportedError
from edgemem.models.clip_base import ClipBackbone
from edgemem.models.resnet3d import KINETICS_MEAN, KINETICS_STD, TEMPORAL_KERNELS, ResNet3D, ResNetConfig
from edgemem.models.x3d import X3D, X3DConfig

_DEFAULTS: dict[str, Any] = {
    "MODEL.ARCH": "slow",
    "MODEL.MODEL_NAME": "ResNet",
    "MODEL.NUM_CLASSES": 400,
    "MODEL.DROPOUT_RATE": 0.5,
    "DATA.NUM_FRAMES": 8,
    "DATA.SAMPLING_RATE": 8,
    "DATA.TRAIN_CROP_SIZE": 224,
    "DATA.TARGET_FPS": 30,
    "DATA.MEAN": list(KINETICS_MEAN),
    "DATA.STD": list(KINETICS_STD),
    "RESNET.DEPTH": 50,
    "RESNET.ZERO_INIT_FINAL_BN": False,
    "RESNET.WIDTH_PER_GROUP": 64,
    "RESNET.NUM_GROUPS": 1,
    "RESNET.TRANS_FUNC": "bottleneck_transform",
    "RESNET.STRIDE_1X1": False,
    "RESNET.NUM_BLOCK_TEMP_KERNEL": [[3], [4], [6], [3]],
    "RESNET.SPATIAL_DILATIONS": [[1], [1], [1], [1]],
    "NONLOCAL.LOCATION": [[[]], [[]], [[]], [[]]],
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


def _get(tree: Mapping[str, Any], key: str) -> Any:
    node: Any = tree
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return _DEFAULTS[key]
        node = node[part]
    return node


def _require(tree: Mapping[str, Any], key: str, ok: bool) -> None:
    if not ok:
        raise UnsupportedError(f"PySlowFast option {key} = {_get(tree, key)!r} is not supported")


def _common(tree: Mapping[str, Any]) -> dict[str, Any]:
    return dict(
        num_classes=int(_get(tree, "MODEL.NUM_CLASSES")),
        dropout=float(_get(tree, "MODEL.DROPOUT_RATE")),
        frames=int(_get(tree, "DATA.NUM_FRAMES")),
        sampling_rate=int(_get(tree, "DATA.SAMPLING_RATE")),
        crop_size=int(_get(tree, "DATA.TRAIN_CROP_SIZE")),
        target_fps=int(_get(tree, "DATA.TARGET_FPS")),
        mean=tuple(float(x) for x in _get(tree, "DATA.MEAN")),
        std=tuple(float(x) for x in _get(tree, "DATA.STD")),
        zero_init_final_bn=bool(_get(tree, "RESNET.ZERO_INIT_FINAL_BN")),
    )


def resnet_config(tree: Mapping[str, Any]) -> ResNetConfig:
    """``MODEL.ARCH`` in slow / c2d / i3d / slow_c2d / slow_i3d -> ResNetConfig."""
    arch = str(_get(tree, "MODEL.ARCH")).lower()
    _require(tree, "MODEL.ARCH", arch in TEMPORAL_KERNELS)
    _require(tree, "RESNET.TRANS_FUNC", _get(tree, "RESNET.TRANS_FUNC") in _TRANS)
    _require(tree, "RESNET.STRIDE_1X1", not _get(tree, "RESNET.STRIDE_1X1"))
    _require(tree, "RESNET.SPATIAL_DILATIONS", all(d[0] == 1 for d in _get(tree, "RESNET.SPATIAL_DILATIONS")))
    locations = tuple(tuple(int(i) for i in stage[0]) for stage in _get(tree, "NONLOCAL.LOCATION"))
    pools = {tuple(_get(tree, "NONLOCAL.POOL")[s][0]) for s in range(4) if locations[s]}
    _require(tree, "NONLOCAL.POOL", len(pools) <= 1)
    return ResNetConfig(
        arch=arch,
        depth=int(_get(tree, "RESNET.DEPTH")),
        trans_func=_TRANS[_get(tree, "RESNET.TRANS_FUNC")],
        width_per_group=int(_get(tree, "RESNET.WIDTH_PER_GROUP")),
        num_groups=int(_get(tree, "RESNET.NUM_GROUPS")),
        nonlocal_location=locations,
        nonlocal_pool=tuple(int(x) for x in pools.pop()) if pools else (1, 2, 2),
        nonlocal_instantiation=str(_get(tree, "NONLOCAL.INSTANTIATION")),
        temp_kernel_blocks=tuple(int(b[0]) for b in _get(tree, "RESNET.NUM_BLOCK_TEMP_KERNEL")),
        **_common(tree),
    )


def x3d_config(tree: Mapping[str, Any]) -> X3DConfig:
    """``MODEL.ARCH: x3d`` -> X3DConfig."""
    _require(tree, "X3D.SCALE_RES2", not _get(tree, "X3D.SCALE_RES2"))
    _require(tree, "X3D.BN_LIN5", not _get(tree, "X3D.BN_LIN5"))
    _require(tree, "X3D.CHANNELWISE_3x3x3", bool(_get(tree, "X3D.CHANNELWISE_3x3x3")))
    return X3DConfig(
        width_factor=float(_get(tree, "X3D.WIDTH_FACTOR")),
        depth_factor=float(_get(tree, "X3D.DEPTH_FACTOR")),
        bottleneck_factor=float(_get(tree, "X3D.BOTTLENECK_FACTOR")),
        dim_c1=int(_get(tree, "X3D.DIM_C1")),
        dim_c5=int(_get(tree, "X3D.DIM_C5")),
        **_common(tree),
    )


def is_clip_config(tree: Mapping[str, Any]) -> bool:
    """True for the PySlowFast configs this module builds (ResNet/X3D families)."""
    return str(_get(tree, "MODEL.MODEL_NAME")) in ("ResNet", "X3D")


def backbone_from_pyslowfast(config: str | os.PathLike[str] | Mapping[str, Any]) -> ClipBackbone:
    """Build (random init) the clip backbone of a PySlowFast YAML (path or parsed dict)."""
    tree = config
    if not isinstance(config, Mapping):
        p = Path(config)
        try:
            tree = yaml.safe_load(p.read_text())
        except (OSError, yaml.YAMLError, UnicodeDecodeError) as e:
            raise UnsupportedError(f"cannot read config {p}: {str(e).splitlines()[0]}") from None
        if not isinstance(tree, Mapping):
            raise UnsupportedError(f"{p} is not a PySlowFast config")
    name = _get(tree, "MODEL.MODEL_NAME")
    if name == "X3D":
        return X3D(x3d_config(tree))
    if name == "ResNet":
        return ResNet3D(resnet_config(tree))
    raise UnsupportedError(f"MODEL.MODEL_NAME {name!r} is not a ResNet/X3D clip backbone")

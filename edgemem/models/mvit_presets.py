"""The MViT / MeMViT presets: tiny (tests, CPU training), depth 16 and depth 24 (the paper's backbones)."""

from __future__ import annotations

from typing import Any

from edgemem.contract import ClipSpec
from edgemem.models.clip_field import preset_config
from edgemem.models.mvit import MViT
from edgemem.models.mvit_config import MemoryConfig, MViTConfig
from edgemem.models.registry import register_model


def _config(base: dict[str, Any], overrides: dict[str, Any]) -> MViTConfig:
    """Preset fields updated with user overrides (any ``MViTConfig`` field, e.g. ``num_classes``,
    ``clip=ClipSpec(...)``; ``frame_scale=k`` makes the clip k times longer)."""
    return preset_config(MViTConfig, base, overrides, "MViT")


def _tiny(memory: MemoryConfig | None, kw: dict[str, Any]) -> MViTConfig:
    base = dict(
        clip=ClipSpec(frames=8, sampling_rate=2, crop_size=32, target_fps=30),
        num_classes=10,
        embed_dim=16,
        num_heads=1,
        depth=4,
        dim_mul=((2, 2.0),),
        head_mul=((2, 2.0),),
        pool_q_stride=((0, 1, 1, 1), (1, 1, 1, 1), (2, 1, 2, 2), (3, 1, 1, 1)),
        pool_kv_stride_adaptive=(1, 2, 2),
        pool_kvq_kernel=(3, 3, 3),
        init_std=None,
        memory=memory,
    )
    return _config(base, kw)


def _q_strides(depth: int, stage_starts: tuple[int, ...]) -> tuple[tuple[int, ...], ...]:
    return tuple((i, 1, 2, 2) if i in stage_starts else (i, 1, 1, 1) for i in range(depth))


def _mvit16(memory: MemoryConfig | None, kw: dict[str, Any]) -> MViTConfig:
    """MViTv2-S-like depth 16 (configs/AVA/MeMViT_16_K400.yaml backbone), 16x4 at 224^2."""
    base = dict(
        clip=ClipSpec(frames=16, sampling_rate=4, crop_size=224, target_fps=30),
        num_classes=400,
        embed_dim=96,
        num_heads=1,
        depth=16,
        dim_mul=((1, 2.0), (3, 2.0), (14, 2.0)),
        head_mul=((1, 2.0), (3, 2.0), (14, 2.0)),
        pool_q_stride=_q_strides(16, (1, 3, 14)),
        pool_kv_stride_adaptive=(1, 8, 8),
        pool_kvq_kernel=(3, 3, 3),
        drop_path_rate=0.4,
        memory=memory,
    )
    return _config(base, kw)


def _mvit24(memory: MemoryConfig | None, kw: dict[str, Any]) -> MViTConfig:
    """Depth 24 (configs/AVA/MeMViT_24_K600.yaml backbone), 32x3 at 224^2."""
    base = dict(
        clip=ClipSpec(frames=32, sampling_rate=3, crop_size=224, target_fps=30),
        num_classes=400,
        embed_dim=96,
        num_heads=1,
        depth=24,
        dim_mul=((2, 2.0), (5, 2.0), (21, 2.0)),
        head_mul=((2, 2.0), (5, 2.0), (21, 2.0)),
        pool_q_stride=_q_strides(24, (2, 5, 21)),
        pool_kv_stride_adaptive=(1, 8, 8),
        pool_kvq_kernel=(3, 3, 3),
        drop_path_rate=0.4,
        memory=memory,
    )
    return _config(base, kw)


def _odd(depth: int) -> tuple[int, ...]:
    return tuple(range(1, depth, 2))


def _build(name: str, cfg: MViTConfig, backbone: str | None = None) -> MViT:
    """The preset's model; a memory preset declares ``backbone``, the MViT it is compared with."""
    model = MViT(cfg, name=name)
    model.backbone_preset = backbone if cfg.memory is not None else None
    return model


@register_model
def memvit_tiny(**kw: Any) -> MViT:
    """Tiny MeMViT for tests/CPU training: 8x32^2, 4 blocks, each attending the 4 clips before it
    uncompressed (kernel and stride 1x1x1, started as the identity): 2.42x the memory-less step, a
    third of ``mvit_tiny`` x4's 7.46x (docs/TRAINING.md, "memvit_tiny keeps its memory at full
    resolution"). Until the twenty-fifth session this name built the layout now ``memvit_tiny_pooled``."""
    mem = MemoryConfig(attn_max_len=5, sampler="all", compress_kernel=(1, 1, 1), compress_stride=(1, 1, 1))
    return _build("memvit_tiny", _tiny(mem, kw), backbone="mvit_tiny")


@register_model
def memvit_tiny_pooled(**kw: Any) -> MViT:
    """The pooled tiny MeMViT (``memvit_tiny`` until the twenty-fifth session): 3 memory clips in blocks 0
    and 2, compressed 5x3x3 / 4x2x2 (1.06x the memory-less step); the layout of the older results in
    docs/TRAINING.md."""
    mem = MemoryConfig(
        attn_max_len=4, sampler="all", exclude_layers=(1, 3), compress_kernel=(5, 3, 3), compress_stride=(4, 2, 2)
    )
    return _build("memvit_tiny_pooled", _tiny(mem, kw), backbone="mvit_tiny")


@register_model
def memvit_tiny_long(**kw: Any) -> MViT:
    """``memvit_tiny_pooled`` with a long reach: block 0 attends 4 windows (``win4``), each the mean of 4
    consecutive past clips (1-4, 5-8, 9-12, 13-16 back), and block 2 the clips 4, 8, 12 and 16 back
    (``gap4``), whole. Every clip 1..32 back reaches the output (temporal support 32 clips, 17 s, no
    gaps) and a cue 4k back is attended undiluted; compressed as ``memvit_tiny_pooled``'s (1.07x the
    memory-less step)."""
    mem = MemoryConfig(
        attn_max_len=5,
        sampler="win4",
        per_block=((2, 5, "gap4"),),
        exclude_layers=(1, 3),
        compress_kernel=(5, 3, 3),
        compress_stride=(4, 2, 2),
    )
    return _build("memvit_tiny_long", _tiny(mem, kw), backbone="mvit_tiny")


@register_model
def mvit_tiny(**kw: Any) -> MViT:
    """The tiny MViT without memory (accepts ``frame_scale``)."""
    return _build("mvit_tiny", _tiny(None, kw))


@register_model
def memvit16_16x4(**kw: Any) -> MViT:
    """MeMViT-16 16x4: memory of 2 clips (gap2) in the even blocks, compression 7x3x3 / 4x2x2."""
    mem = MemoryConfig(
        attn_max_len=3, sampler="gap2", exclude_layers=_odd(16), compress_kernel=(7, 3, 3), compress_stride=(4, 2, 2)
    )
    return _build("memvit16_16x4", _mvit16(mem, kw), backbone="mvit16_16x4")


@register_model
def mvit16_16x4(**kw: Any) -> MViT:
    """MViT-16 16x4 (the MeMViT-16 backbone without memory; accepts ``frame_scale``)."""
    return _build("mvit16_16x4", _mvit16(None, kw))


@register_model
def memvit24_32x3(**kw: Any) -> MViT:
    """MeMViT-24 32x3: memory of 2 clips (gap3) in the even blocks, compression 7x3x3 / 4x2x2."""
    mem = MemoryConfig(
        attn_max_len=3, sampler="gap3", exclude_layers=_odd(24), compress_kernel=(7, 3, 3), compress_stride=(4, 2, 2)
    )
    return _build("memvit24_32x3", _mvit24(mem, kw), backbone="mvit24_32x3")


@register_model
def mvit24_32x3(**kw: Any) -> MViT:
    """MViT-24 32x3 (the MeMViT-24 backbone without memory; accepts ``frame_scale``)."""
    return _build("mvit24_32x3", _mvit24(None, kw))

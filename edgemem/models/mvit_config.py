"""Typed configuration of MViTv2 / MeMViT and the per-block geometry derived from it.

The fields mirror the official PySlowFast/MeMViT ``MVIT.*``, ``MEMVIT.*`` and ``DATA.*`` options
(see ``edgemem.models.pyslowfast`` for the YAML mapping); ``block_specs`` derives every block's
widths, heads, pooling kernels/strides and token grids exactly as the official builder does.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from edgemem.contract import ClipSpec
from edgemem.errors import UnsupportedError
from edgemem.models.clip_field import check_frame_scale, clip_of

Triple = tuple[int, int, int]


@dataclass(frozen=True)
class MemoryConfig:
    """MeMViT memory (``MEMVIT.*``).

    ``attn_max_len`` counts the current clip: ``attn_max_len - 1`` memory clips are attended.
    ``sampler`` is ``"all"`` (the newest clips), ``"gapN"`` (the clips of age N, 2N, ...) or ``"winN"``
    (an edgemem extension: each attended memory clip is the mean of N consecutive compressed clips, ages
    1..N, N+1..2N, ...: every age up to the oldest is attended, at one memory clip per N).
    ``per_block``: ``(block, attn_max_len, sampler)`` entries that replace the two for those memory
    blocks (an edgemem extension; the official code has one layout for every block).
    ``mem_drop`` is the training-only probability of dropping an attended memory clip.
    ``positions``: ``"own"`` (official) gives memory keys relative-position tables of their own;
    ``"clip"`` (an edgemem extension) places them on the clip's own tables at their true distance from
    each query, the temporal table extended to the oldest memory frame: memory then has no parameters of
    its own but a compression's. ``"clip"`` needs memory on the clip's grid (no compression, or one of
    stride 1) and the ``all`` sampler.
    """

    attn_max_len: int = 3
    sampler: str = "all"
    exclude_layers: tuple[int, ...] = ()
    compress: bool = True
    compress_kernel: Triple = (3, 3, 3)
    compress_stride: Triple = (2, 2, 2)
    per_block: tuple[tuple[int, int, str], ...] = ()
    mem_drop: float = 0.0
    positions: str = "own"

    def __post_init__(self) -> None:
        _check_layout(self.attn_max_len, self.sampler)
        if self.positions not in ("own", "clip"):
            raise UnsupportedError(f"not supported: memory positions '{self.positions}' (use 'own' or 'clip')")
        if self.positions == "clip":
            if self.compress and tuple(self.compress_stride) != (1, 1, 1):
                raise UnsupportedError(
                    "not supported: memory on the clip's position tables with a strided compression "
                    "(pooled memory keys have no place on the clip's grid)"
                )
            if samplers := sorted({self.sampler, *(s for _, _, s in self.per_block)} - {"all"}):
                raise UnsupportedError(
                    f"not supported: memory on the clip's position tables with sampler {', '.join(samplers)} "
                    "(only 'all' attends clips at their true distance)"
                )
        blocks = [b for b, _, _ in self.per_block]
        if len(set(blocks)) != len(blocks):
            raise UnsupportedError(f"not supported: memory per_block names a block twice ({blocks})")
        for _, n, sampler in self.per_block:
            _check_layout(n, sampler)

    @property
    def num_attended(self) -> int:
        """Memory clips attended per step (M) in a block without a ``per_block`` entry."""
        return self.attn_max_len - 1

    @property
    def gap(self) -> int:
        """The sampler's gap (1 for ``all``) in a block without a ``per_block`` entry."""
        return _gap(self.sampler)

    @property
    def slots(self) -> int:
        """Memory clips kept per stream in a block without a ``per_block`` entry: M for 'all', M*N for
        'gapN' (all ages up to the oldest)."""
        return self.num_attended * self.gap

    def layout(self, block: int) -> tuple[int, str]:
        """``(attn_max_len, sampler)`` of ``block``."""
        for b, n, sampler in self.per_block:
            if b == block:
                return n, sampler
        return self.attn_max_len, self.sampler

    def windows(self, block: int) -> tuple[tuple[int, ...], ...]:
        """Ages (clips back) behind each memory clip ``block`` attends, newest first: ``(N,), (2N,), ...``
        for ``gapN``, ``(1, ..., N), (N+1, ..., 2N), ...`` for ``winN`` (their mean is attended)."""
        n, sampler = self.layout(block)
        g = _gap(sampler)
        if sampler.startswith("win"):
            return tuple(tuple(range(g * j + 1, g * (j + 1) + 1)) for j in range(n - 1))
        return tuple((g * j,) for j in range(1, n))

    def ages(self, block: int) -> tuple[int, ...]:
        """Ages (clips back) whose memory ``block`` attends, newest first."""
        return tuple(a for w in self.windows(block) for a in w)

    def block_slots(self, block: int) -> int:
        """Memory clips ``block`` keeps per stream (its oldest attended age)."""
        return self.ages(block)[-1]


def _gap(sampler: str) -> int:
    # The official code reads the gap as the sampler's last character (kept for imports); a window's
    # length is every digit after "win".
    if sampler.startswith("gap"):
        return int(sampler[-1])
    return int(sampler[3:]) if sampler.startswith("win") else 1


def is_official_sampler(sampler: str) -> bool:
    """``all`` or ``gapN``: the samplers the official MeMViT code has (``winN`` is edgemem's)."""
    return sampler == "all" or (sampler.startswith("gap") and sampler[3:].isdigit())


def _check_layout(attn_max_len: int, sampler: str) -> None:
    if attn_max_len < 2:
        raise UnsupportedError(f"not supported: MEMVIT.ATTN_MAX_LEN {attn_max_len} (needs >= 2)")
    if not (is_official_sampler(sampler) or (sampler.startswith("win") and sampler[3:].isdigit())):
        raise UnsupportedError(f"not supported: memory sampler '{sampler}' (use 'all', 'gapN' or 'winN')")
    if sampler != "all" and _gap(sampler) < 1:
        raise UnsupportedError(f"not supported: memory sampler '{sampler}'")


def memory_reach(ages: list[tuple[int, ...]]) -> set[int]:
    """Distances (clips back, >= 1) whose input can change the current clip's output, for memory blocks
    in depth order attending clips of these ``ages``: a block's memory of a past clip holds that clip's
    input to the block, which already mixed in what the earlier memory blocks attended then."""
    seen = {0}
    for block_ages in ages:
        seen |= {a + d for a in block_ages for d in seen}
    return seen - {0}


@dataclass(frozen=True)
class MViTConfig:
    """MViTv2 architecture (``MVIT.*``), input clip (``DATA.*``), head and optional MeMViT memory.

    ``clip`` is the whole input clip (a frame-scaled baseline's ``frame_scale`` times longer)."""

    clip: ClipSpec = ClipSpec(frames=16, sampling_rate=4, crop_size=224, target_fps=30)
    in_chans: int = 3
    num_classes: int = 400
    embed_dim: int = 96
    num_heads: int = 1
    depth: int = 16
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    mode: str = "conv"
    pool_first: bool = True
    cls_embed: bool = True
    patch_kernel: Triple = (3, 7, 7)
    patch_stride: Triple = (2, 4, 4)
    patch_padding: Triple = (1, 3, 3)
    dim_mul: tuple[tuple[int, float], ...] = ()
    head_mul: tuple[tuple[int, float], ...] = ()
    pool_q_stride: tuple[tuple[int, ...], ...] = ()
    pool_kv_stride: tuple[tuple[int, ...], ...] = ()
    pool_kv_stride_adaptive: tuple[int, ...] = ()
    pool_kvq_kernel: tuple[int, ...] = ()
    rel_pos_spatial: bool = True
    rel_pos_temporal: bool = True
    use_abs_pos: bool = False
    sep_pos_embed: bool = False
    norm_stem: bool = False
    conv_q: int = 1
    dim_mul_in_att: bool = True
    drop_path_rate: float = 0.0
    head_dropout: float = 0.0
    # Linear weights at initialisation: trunc-normal with this std (official: 0.02), or None for
    # Xavier-uniform, scaled to each layer's width (the tiny presets: at 16-32 channels std 0.02
    # starts the network near-degenerate and training sits on a long plateau).
    init_std: float | None = 0.02
    frame_scale: int = 1
    memory: MemoryConfig | None = None
    head_act: str = "softmax"  # MODEL.HEAD_ACT: what the logits mean (softmax/sigmoid scores, or none)
    view: str = "train"  # the official test view is the same network for MViT (TEST_CROP_SIZE == TRAIN_CROP_SIZE)

    def __post_init__(self) -> None:
        if self.mode not in ("conv", "conv_unshared", "avg", "max"):
            raise UnsupportedError(f"not supported: MVIT.MODE '{self.mode}'")
        if not self.pool_first:
            raise UnsupportedError("not supported: MVIT.POOL_FIRST false (MeMViT's memory needs pool-first)")
        check_frame_scale(self.clip, self.frame_scale)
        if self.memory is not None and self.frame_scale != 1:
            raise UnsupportedError("not supported: frame_scale on a model with memory (a memory-less baseline)")
        if self.memory is not None and self.rel_pos_spatial and not self.memory.compress:
            if self.memory.positions == "own":
                # The official code has no memory spatial tables without compression (it crashes).
                raise UnsupportedError(
                    "not supported: MEMVIT without COMPRESS together with REL_POS_SPATIAL on the memory's own "
                    "position tables (edgemem: memory positions 'clip')"
                )
        if self.memory is not None:
            named = {b for b, _, _ in self.memory.per_block}
            if outside := sorted(b for b in named if b >= self.depth):
                raise UnsupportedError(f"not supported: memory per_block for blocks {outside} (depth is {self.depth})")
            if stray := sorted(named & set(self.memory.exclude_layers)):
                raise UnsupportedError(f"not supported: memory per_block for blocks {stray} (not memory blocks)")
            if set(range(self.depth)) <= set(self.memory.exclude_layers):
                raise UnsupportedError(
                    f"not supported: memory excluded from every block (depth is {self.depth}); "
                    "a model without memory is the memory-less preset"
                )

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "clip": self.clip.to_json()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MViTConfig:
        """A stored config: ``to_dict``'s form, or the flat clip fields of configs written before."""
        d = dict(d)
        clip = clip_of(d, cls.clip)
        mem = d.pop("memory", None)
        nested = ("dim_mul", "head_mul", "pool_q_stride", "pool_kv_stride")
        for k in nested:
            if k in d:
                d[k] = tuple(tuple(x) for x in d[k])
        for k in (
            "patch_kernel",
            "patch_stride",
            "patch_padding",
            "pool_kv_stride_adaptive",
            "pool_kvq_kernel",
        ):
            if k in d:
                d[k] = tuple(d[k])
        if mem is not None:
            mem = dict(mem)
            for k in ("exclude_layers", "compress_kernel", "compress_stride"):
                if k in mem:
                    mem[k] = tuple(mem[k])
            if "per_block" in mem:
                mem["per_block"] = tuple((int(b), int(n), str(s)) for b, n, s in mem["per_block"])
            mem = MemoryConfig(**mem)
        try:
            return cls(**d, clip=clip, memory=mem)
        except TypeError as e:
            raise UnsupportedError(f"not supported: model config ({e})") from None

    def replace(self, **kw: Any) -> MViTConfig:
        return replace(self, **kw)


@dataclass(frozen=True)
class BlockSpec:
    """Everything one block needs, derived from the config as the official builder does."""

    index: int
    dim: int
    dim_out: int
    att_dim: int
    num_heads: int
    table_size: Triple  # the official ``input_size`` (sizes the relative-position tables)
    x_thw: Triple  # token grid entering the block
    kernel_q: tuple[int, ...]
    stride_q: tuple[int, ...]
    kernel_kv: tuple[int, ...]
    stride_kv: tuple[int, ...]
    q_thw: Triple
    kv_thw: Triple
    skip_kernel: tuple[int, ...]
    has_memory_params: bool
    uses_memory: bool
    mem_thw: Triple | None = None  # compressed memory grid of one clip
    drop_path: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def head_dim(self) -> int:
        return self.att_dim // self.num_heads


def round_width(width: float, multiplier: float, min_width: int = 1, divisor: int = 1) -> int:
    """The official width rounding (``memvit/models/utils.py``), float32 multipliers included."""
    if not multiplier:
        return int(width)
    width = float(np.float32(width) * np.float32(multiplier))
    min_width = min_width or divisor
    width_out = max(min_width, int(width + divisor / 2) // divisor * divisor)
    if width_out < 0.9 * width:
        width_out += divisor
    return int(width_out)


def conv_out(n: int, k: int, s: int, p: int) -> int:
    return (n + 2 * p - k) // s + 1


def pooled_thw(thw: Triple, kernel: tuple[int, ...], stride: tuple[int, ...]) -> Triple:
    if not kernel:
        return thw
    return tuple(conv_out(n, k, s, k // 2) for n, k, s in zip(thw, kernel, stride, strict=False))  # type: ignore[return-value]


def patch_grid(cfg: MViTConfig) -> Triple:
    """Token grid after the patch embedding (the official model assumes input // stride)."""
    sizes = (cfg.clip.frames, cfg.clip.crop_size, cfg.clip.crop_size)
    grid = tuple(n // s for n, s in zip(sizes, cfg.patch_stride, strict=False))
    real = tuple(
        conv_out(n, k, s, p)
        for n, k, s, p in zip(sizes, cfg.patch_kernel, cfg.patch_stride, cfg.patch_padding, strict=False)
    )
    if grid != real:
        raise UnsupportedError(
            f"not supported: patch embedding gives a {list(real)} grid, the official model assumes {list(grid)}"
        )
    return grid  # type: ignore[return-value]


def block_specs(cfg: MViTConfig) -> list[BlockSpec]:
    """Per-block widths, heads, pooling and grids, as ``memvit/models/video_model_builder.py``."""
    depth = cfg.depth
    dim_mul = [1.0] * (depth + 1)
    head_mul = [1.0] * (depth + 1)
    for i, m in cfg.dim_mul:
        dim_mul[int(i)] = float(m)
    for i, m in cfg.head_mul:
        head_mul[int(i)] = float(m)
    stride_q: list[tuple[int, ...]] = [()] * depth
    pool_q: list[tuple[int, ...]] = [()] * depth
    stride_kv: list[tuple[int, ...]] = [()] * depth
    pool_kv: list[tuple[int, ...]] = [()] * depth
    kvq = tuple(cfg.pool_kvq_kernel)
    for entry in cfg.pool_q_stride:
        i, s = int(entry[0]), tuple(int(x) for x in entry[1:])
        stride_q[i] = s
        pool_q[i] = kvq if kvq else tuple(x + 1 if x > 1 else x for x in s)
    kv_entries: list[tuple[int, ...]] = list(cfg.pool_kv_stride)
    if cfg.pool_kv_stride_adaptive:
        cur = list(cfg.pool_kv_stride_adaptive)
        kv_entries = []
        for i in range(depth):
            if stride_q[i]:
                cur = [max(cur[d] // stride_q[i][d], 1) for d in range(len(cur))]
            kv_entries.append((i, *cur))
    for entry in kv_entries:
        i, s = int(entry[0]), tuple(int(x) for x in entry[1:])
        stride_kv[i] = s
        pool_kv[i] = kvq if kvq else tuple(x + 1 if x > 1 else x for x in s)

    dpr = [float(x) for x in np.linspace(0, cfg.drop_path_rate, depth)] if depth > 1 else [0.0] * depth
    mem = cfg.memory
    embed_dim, num_heads = cfg.embed_dim, cfg.num_heads
    table = patch_grid(cfg)
    x_thw = table
    specs = []
    for i in range(depth):
        num_heads = round_width(num_heads, head_mul[i])
        if cfg.dim_mul_in_att:
            dim_out = round_width(embed_dim, dim_mul[i], divisor=round_width(num_heads, head_mul[i]))
        else:
            dim_out = round_width(embed_dim, dim_mul[i + 1], divisor=round_width(num_heads, head_mul[i + 1]))
        att_dim = dim_out if cfg.dim_mul_in_att else embed_dim
        kq, sq, kkv, skv = pool_q[i], stride_q[i], pool_kv[i], stride_kv[i]
        # Official: pooling with kernel and stride all ones is skipped.
        if math.prod(kq) == 1 and math.prod(sq) == 1:
            kq = ()
        if math.prod(kkv) == 1 and math.prod(skv) == 1:
            kkv = ()
        q_thw = pooled_thw(x_thw, kq, sq)
        kv_thw = pooled_thw(x_thw, kkv, skv)
        skip_kernel = tuple(s + 1 if s > 1 else s for s in stride_q[i])
        skip_thw = pooled_thw(x_thw, skip_kernel, stride_q[i]) if skip_kernel else x_thw
        if skip_thw != q_thw:
            raise UnsupportedError(
                f"not supported: block {i} pools queries to {list(q_thw)} but its residual to {list(skip_thw)}"
            )
        if att_dim % num_heads or embed_dim % num_heads:
            raise UnsupportedError(f"not supported: block {i} width {att_dim} not divisible by {num_heads} heads")
        mem_thw = None
        if mem is not None:
            mem_thw = pooled_thw(kv_thw, mem.compress_kernel, mem.compress_stride) if mem.compress else kv_thw
        specs.append(
            BlockSpec(
                index=i,
                dim=embed_dim,
                dim_out=dim_out,
                att_dim=att_dim,
                num_heads=num_heads,
                table_size=table,
                x_thw=x_thw,
                kernel_q=kq,
                stride_q=sq,
                kernel_kv=kkv,
                stride_kv=skv,
                q_thw=q_thw,
                kv_thw=kv_thw,
                skip_kernel=skip_kernel,
                has_memory_params=mem is not None,
                uses_memory=mem is not None and i not in mem.exclude_layers,
                mem_thw=mem_thw,
                drop_path=dpr[i],
            )
        )
        if stride_q[i]:
            table = tuple(n // s for n, s in zip(table, stride_q[i], strict=False))  # type: ignore[assignment]
        x_thw = q_thw
        embed_dim = dim_out
    return specs

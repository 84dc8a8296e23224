"""MViTv2 pool-first multiscale attention with MeMViT memory (the block around it: ``mvit_block``).

Submodule and parameter names equal the official ones (``memvit/models/attention.py``) so that
official state dicts load unchanged. Memory enters as fixed-shape tensors with a validity mask
(see ``edgemem.models.mvit``); nothing is cached on the module.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.init import trunc_normal_

from edgemem.errors import UnsupportedError
from edgemem.models.mvit_config import BlockSpec, MemoryConfig, MViTConfig
from edgemem.models.mvit_relpos import memory_temporal_indices, spatial_indices, temporal_indices

_EPS = 1e-6


def layer_norm(dim: int) -> nn.LayerNorm:
    return nn.LayerNorm(dim, eps=_EPS)


# Logit offset of an invalid memory key: exp(-1e4) underflows to exactly 0 in f32 and fp16, and the
# value stays finite and small enough for int8 graphs (with -1e9 OpenVINO's low-precision passes
# miscomputed the masked softmax of an int8 q.k: logits 9.4 off).
_MASKED = 1e4


def _valid_keys(mem_ok: Tensor, n_keys: int, n_kv: int) -> Tensor:
    """``[B, n_keys]`` validity of the keys: each memory clip's tokens (``mem_ok`` [B, M]), then the
    ``n_kv`` current keys (always valid)."""
    b, m = mem_ok.shape
    per_clip = (n_keys - n_kv) // m
    return torch.cat((mem_ok.repeat_interleave(per_clip, dim=1), mem_ok.new_ones((b, n_kv))), dim=1)


def _rel_dot(rq: Tensor, table: Tensor, axis: int) -> Tensor:
    """``einsum("bntyxd,?kd->bntyxk")`` with ``?`` the query grid ``axis`` (2: t, 3: y, 4: x), as one
    broadcast MatMul (ONNX Runtime's Einsum kernel took 11% of a MeMViT-16 step here). No reshapes:
    onnxscript's default rewriter miscomputes a movedim/reshape/MatMul version of this.

    ``rq`` [B, heads, T, H, W, D] queries, ``table`` [len(axis), K, D] -> [B, heads, T, H, W, K].
    """
    tab = table.transpose(1, 2)  # [A, D, K]; rq's matrices are [W, D] with batch dims [B, heads, T, H]
    if axis == 2:
        return rq @ tab[:, None]
    if axis == 3:
        return rq @ tab
    return (rq.transpose(3, 4) @ tab).transpose(3, 4)


def _triple(values: Sequence[int], what: str) -> tuple[int, int, int]:
    """``values`` as the (T, H, W) triple a 3-D convolution or pooling takes."""
    if len(values) != 3:
        raise UnsupportedError(f"{what} must have 3 values (T, H, W), got {list(values)}")
    t, h, w = values
    return t, h, w


def pool_tokens(
    x: Tensor, thw: tuple[int, int, int], pool: nn.Module, folds: int, cls: bool, norm: nn.Module | None
) -> Tensor:
    """Pool ``[B, N, C]`` tokens on their ``thw`` grid, ``folds`` channel groups sharing ``pool``.

    The cls token (if any) passes through unpooled and is normalised with the pooled tokens,
    as the official ``attention_pool``.
    """
    b, _, c = x.shape
    t, h, w = thw
    cc = c // folds
    head, rest = (x[:, :1], x[:, 1:]) if cls else (None, x)
    # Contiguous NCDHW (as the official code): a channels-last view makes the depthwise conv slow.
    rest = rest.reshape(b, t, h, w, folds, cc).permute(0, 4, 5, 1, 2, 3).contiguous().view(b * folds, cc, t, h, w)
    rest = pool(rest)
    rest = rest.reshape(b, folds, cc, -1).permute(0, 3, 1, 2)  # [B, L', F, c]
    if head is not None:
        rest = torch.cat((head.reshape(b, 1, folds, cc), rest), dim=1)
    if norm is not None:
        rest = norm(rest)
    return rest.reshape(b, rest.shape[1], c)


class MultiScaleAttention(nn.Module):
    """Pool-first multiscale attention; optional MeMViT memory keys/values (pre-Linear, input width)."""

    # Registered as buffers (by name) in ``__init__``/``_index``, or None without memory compression.
    compress_k: nn.Conv3d | None
    compress_v: nn.Conv3d | None
    norm_compress_k: nn.LayerNorm | None
    norm_compress_v: nn.LayerNorm | None
    idx_sp_h: Tensor
    idx_sp_w: Tensor
    idx_msp_h: Tensor
    idx_msp_w: Tensor
    interp_sp_h: Tensor | None
    interp_sp_w: Tensor | None
    interp_msp_h: Tensor | None
    interp_msp_w: Tensor | None
    idx_t: Tensor
    idx_mt: Tensor
    key_codes: Tensor
    key_codes_mem: Tensor

    def __init__(self, spec: BlockSpec, cfg: MViTConfig) -> None:
        super().__init__()
        dim, dim_out, heads = spec.dim, spec.att_dim, spec.num_heads
        self.spec = spec
        self.num_heads = heads
        self.dim_out = dim_out
        head_dim = dim_out // heads
        self.scale = head_dim**-0.5
        self.cls = cfg.cls_embed
        self.folds = 1 if cfg.mode == "conv_unshared" else heads
        self.q = nn.Linear(dim, dim_out, bias=cfg.qkv_bias)
        self.k = nn.Linear(dim, dim_out, bias=cfg.qkv_bias)
        self.v = nn.Linear(dim, dim_out, bias=cfg.qkv_bias)
        self.proj = nn.Linear(dim_out, dim_out)

        self.pool_q = self._pool(cfg, spec.kernel_q, spec.stride_q, dim)
        self.pool_k = self._pool(cfg, spec.kernel_kv, spec.stride_kv, dim)
        self.pool_v = self._pool(cfg, spec.kernel_kv, spec.stride_kv, dim)
        conv = cfg.mode in ("conv", "conv_unshared")
        dim_conv = dim // self.folds
        self.norm_q = layer_norm(dim_conv) if conv and spec.kernel_q else None
        self.norm_k = layer_norm(dim_conv) if conv and spec.kernel_kv else None
        self.norm_v = layer_norm(dim_conv) if conv and spec.kernel_kv else None

        mem: MemoryConfig | None = cfg.memory
        self.uses_memory = spec.uses_memory
        # This block's memory layout (``MemoryConfig.per_block`` may give blocks their own).
        max_len = mem.layout(spec.index)[0] if mem is not None else 0
        self.mem_clips = max(max_len - 1, 0)
        if mem is not None and mem.compress:
            kk, ks = mem.compress_kernel, mem.compress_stride
            pad = _triple([k // 2 for k in kk], "MEMVIT.COMPRESS padding")
            kk, ks = _triple(kk, "MEMVIT.COMPRESS.POOL_KERNEL"), _triple(ks, "MEMVIT.COMPRESS.POOL_STRIDE")
            self.compress_k = nn.Conv3d(dim, dim, kk, stride=ks, padding=pad, groups=dim, bias=False)
            self.compress_v = nn.Conv3d(dim, dim, kk, stride=ks, padding=pad, groups=dim, bias=False)
            if kk == (1, 1, 1):  # keeps every token: start as the identity, not a random per-channel sign and scale
                nn.init.ones_(self.compress_k.weight)
                nn.init.ones_(self.compress_v.weight)
            self.norm_compress_k = layer_norm(dim)
            self.norm_compress_v = layer_norm(dim)
        else:
            self.compress_k = self.compress_v = self.norm_compress_k = self.norm_compress_v = None

        # True: one GEMM for logits + bias, then the mask add (what runs and exports); False: the reference
        # formulation (model GFLOPs are counted on it, see ``models.info``).
        self.fused = True
        self.rel_sp = cfg.rel_pos_spatial
        self.rel_t = cfg.rel_pos_temporal
        q_thw, kv_thw, tab = spec.q_thw, spec.kv_thw, spec.table_size
        # Memory positions "clip": memory keys read the clip's own tables (no rel_pos_mem_*).
        shared = mem is not None and mem.positions == "clip"
        self.mem_tables = (
            ("rel_pos_h", "rel_pos_w", "rel_pos_t") if shared else ("rel_pos_mem_h", "rel_pos_mem_w", "rel_pos_mem_t")
        )
        if self.rel_sp:
            q_size = tab[1] // spec.stride_q[1] if spec.stride_q else tab[1]
            kv_size = tab[1] // spec.stride_kv[1] if spec.stride_kv else tab[1]
            n = 2 * max(q_size, kv_size) - 1
            self.rel_pos_h = nn.Parameter(torch.zeros(n, head_dim))
            self.rel_pos_w = nn.Parameter(torch.zeros(n, head_dim))
            current = spatial_indices(q_thw[1:], kv_thw[1:], n)
            self._index("sp", current)
            if shared:  # uncompressed memory keys lie on the current keys' grid
                self._index("msp", current)
            elif mem is not None:
                mem_kv = kv_size // mem.compress_stride[1]
                n_mem = 2 * max(q_size, mem_kv) - 1
                self.rel_pos_mem_h = nn.Parameter(torch.zeros(n_mem, head_dim))
                self.rel_pos_mem_w = nn.Parameter(torch.zeros(n_mem, head_dim))
                assert spec.mem_thw is not None
                self._index("msp", spatial_indices(q_thw[1:], spec.mem_thw[1:], n_mem))
        if self.rel_t:
            n_t = 2 * tab[0] - 1
            if shared and self.uses_memory:  # the clip's table reaches back to the oldest memory frame
                n_t = max(n_t, q_thw[0] + (self.mem_clips + 1) * kv_thw[0] - 1)
            self.rel_pos_t = nn.Parameter(torch.zeros(n_t, head_dim))
            self.register_buffer("idx_t", temporal_indices(q_thw[0], kv_thw[0], n_t), persistent=False)
            if mem is not None:
                n_mem_t = n_t
                if not shared:
                    n_mem_t = 2 * tab[0] + (max_len - 2) * tab[0] - 1
                    self.rel_pos_mem_t = nn.Parameter(torch.zeros(n_mem_t, head_dim))
                if self.uses_memory:
                    assert spec.mem_thw is not None
                    stride = mem.compress_stride[0] if mem.compress else 1
                    offset = kv_thw[0] if shared else 0
                    idx = memory_temporal_indices(q_thw[0], spec.mem_thw[0], self.mem_clips, stride, n_mem_t, offset)
                    self.register_buffer("idx_mt", idx, persistent=False)
        if self.rel_sp or self.rel_t:
            self.register_buffer("key_codes", self._key_codes(False), persistent=False)
            if self.uses_memory:
                self.register_buffer("key_codes_mem", self._key_codes(True), persistent=False)
        for name in ("rel_pos_h", "rel_pos_w", "rel_pos_mem_h", "rel_pos_mem_w", "rel_pos_t", "rel_pos_mem_t"):
            p = getattr(self, name, None)
            if isinstance(p, nn.Parameter):
                trunc_normal_(p, std=0.02)

        if cfg.conv_q > 1:
            if not spec.kernel_kv:
                raise UnsupportedError(f"not supported: MVIT.CONV_Q {cfg.conv_q} without a kv pooling kernel")
            self.conv_q_func = nn.Conv3d(
                head_dim,
                head_dim,
                _triple(spec.kernel_kv, "kv pooling kernel"),
                padding=_triple([k // 2 for k in spec.kernel_kv], "kv pooling padding"),
                groups=head_dim,
            )
        self.conv_q = cfg.conv_q

    def _pool(self, cfg: MViTConfig, kernel: tuple[int, ...], stride: tuple[int, ...], dim: int) -> nn.Module | None:
        if not kernel:
            return None
        k3, pad = _triple(kernel, "pooling kernel"), _triple([k // 2 for k in kernel], "pooling padding")
        s3 = _triple(stride, "pooling stride") if stride else None  # pools default to stride = kernel
        if cfg.mode == "avg":
            return nn.AvgPool3d(k3, s3, pad, ceil_mode=False)
        if cfg.mode == "max":
            return nn.MaxPool3d(k3, s3, pad, ceil_mode=False)
        dc = dim // self.folds
        return nn.Conv3d(dc, dc, k3, stride=_triple(stride, "pooling stride"), padding=pad, groups=dc, bias=False)

    def _index(self, prefix: str, parts: tuple[Tensor, Tensor, Tensor | None, Tensor | None]) -> None:
        ih, iw, mh, mw = parts
        self.register_buffer(f"idx_{prefix}_h", ih, persistent=False)
        self.register_buffer(f"idx_{prefix}_w", iw, persistent=False)
        self.register_buffer(f"interp_{prefix}_h", mh, persistent=False)
        self.register_buffer(f"interp_{prefix}_w", mw, persistent=False)

    @staticmethod
    def _table(table: Tensor, interp: Tensor | None, idx: Tensor) -> Tensor:
        if interp is not None:
            table = interp @ table
        return table[idx]

    def memory_parameters(self) -> list[nn.Parameter]:
        """The parameters only the memory uses: the compression convolutions and their norms, and the
        memory's relative-position tables (empty without memory, and for uncompressed memory on the
        clip's tables)."""
        mods = (self.compress_k, self.compress_v, self.norm_compress_k, self.norm_compress_v)
        params = [p for m in mods if m is not None for p in m.parameters()]
        tables = [getattr(self, n) for n in ("rel_pos_mem_h", "rel_pos_mem_w", "rel_pos_mem_t") if hasattr(self, n)]
        return params + tables

    def compress(self, raw: Tensor, which: str) -> Tensor:
        """Compress one clip's raw memory ``[B, N_kv, C]`` into ``[B, N_mem, C]`` (identity if disabled)."""
        conv = self.compress_k if which == "k" else self.compress_v
        if conv is None:
            return raw
        norm = self.norm_compress_k if which == "k" else self.norm_compress_v
        return pool_tokens(raw, self.spec.kv_thw, conv, 1, self.cls, norm)

    def _key_codes(self, with_memory: bool) -> Tensor:
        """Constant ``[N_keys, U]`` one-hot codes of each key's position: with the per-query terms of
        :meth:`_query_terms` (same column order), ``terms @ codes.T`` is the decomposed
        relative-position bias of every (query, key) pair; cls keys have no code. Columns by axis
        (h, w, t), within an axis the current keys' then the memory's."""
        blocks = [(1, *self.spec.kv_thw)]  # (clips, t, h, w): current keys, then memory
        if with_memory:
            assert self.spec.mem_thw is not None
            blocks.append((self.mem_clips, *self.spec.mem_thw))
        axes = (["h", "w"] if self.rel_sp else []) + (["t"] if self.rel_t else [])
        width = {"h": lambda n, t, h, w: h, "w": lambda n, t, h, w: w, "t": lambda n, t, h, w: n * t}
        start, col = {}, 0
        for axis in axes:
            for i, blk in enumerate(blocks):
                start[axis, i] = col
                col += width[axis](*blk)
        codes = []
        for i, (n, t, h, w) in enumerate(blocks):
            c = torch.zeros(n, int(self.cls) + t * h * w, col)
            ci, ti, hi, wi = (x.reshape(n, -1) for x in torch.meshgrid(*map(torch.arange, (n, t, h, w)), indexing="ij"))
            rows = torch.arange(int(self.cls), int(self.cls) + t * h * w).expand(n, -1)
            for axis, pos in (("h", hi), ("w", wi), ("t", ci * t + ti)):
                if axis in axes:
                    c[ci, rows, start[axis, i] + pos] = 1.0
            codes.append(c.reshape(-1, col))
        return torch.cat(codes[::-1], dim=0)  # memory keys first, as the keys are concatenated

    def _query_terms(self, q: Tensor, with_memory: bool) -> Tensor:
        """``[B, heads, N_q, U]``: each query's dot products with the relative-position table rows its
        keys use (zero for the cls query), the column order of :meth:`_key_codes`: one GEMM per axis,
        over the current keys' table rows and the memory's together."""
        b, nh, _, d = q.shape
        qt, qh, qw = self.spec.q_thw
        s = 1 if self.cls else 0
        rq = q[:, :, s:].reshape(b, nh, qt, qh, qw, d)
        prefixes = ["sp", "msp"] if with_memory else ["sp"]
        tables: list[tuple[list[Tensor], int]] = []
        if self.rel_sp:
            mh, mw, _ = self.mem_tables
            for axis, cur, mem, dim in (("h", "rel_pos_h", mh, 3), ("w", "rel_pos_w", mw, 4)):
                rows = [
                    self._table(
                        getattr(self, name), getattr(self, f"interp_{p}_{axis}"), getattr(self, f"idx_{p}_{axis}")
                    )
                    for p, name in zip(prefixes, (cur, mem), strict=False)
                ]
                tables.append((rows, dim))
        if self.rel_t:
            rows = [self.rel_pos_t[self.idx_t]] + (
                [getattr(self, self.mem_tables[2])[self.idx_mt]] if with_memory else []
            )
            tables.append((rows, 2))
        terms = [_rel_dot(rq, torch.cat(rows, dim=1) if len(rows) > 1 else rows[0], dim) for rows, dim in tables]
        out = torch.cat(terms, dim=-1).reshape(b, nh, qt * qh * qw, -1)
        return F.pad(out, (0, 0, 1, 0)) if s else out

    def _rel_bias(self, q: Tensor, with_memory: bool) -> Tensor:
        """Additive relative-position bias ``[B, heads, N_q, (M * N_mem) + N_kv]`` (zero on cls rows/cols):
        the reference formulation (``fused = False``), as the official code adds it."""
        b, nh, _, d = q.shape
        qt, qh, qw = self.spec.q_thw
        kt, kh, kw = self.spec.kv_thw
        s = 1 if self.cls else 0
        rq = q[:, :, s:].reshape(b, nh, qt, qh, qw, d)
        bias = rq.new_zeros(())
        mbias = rq.new_zeros(())
        if self.rel_sp:
            rh = self._table(self.rel_pos_h, self.interp_sp_h, self.idx_sp_h)
            rw = self._table(self.rel_pos_w, self.interp_sp_w, self.idx_sp_w)
            bias = _rel_dot(rq, rh, 3)[..., None, :, None] + _rel_dot(rq, rw, 4)[..., None, None, :]
            if with_memory:
                rh = self._table(getattr(self, self.mem_tables[0]), self.interp_msp_h, self.idx_msp_h)
                rw = self._table(getattr(self, self.mem_tables[1]), self.interp_msp_w, self.idx_msp_w)
                mbias = _rel_dot(rq, rh, 3)[..., None, None, :, None] + _rel_dot(rq, rw, 4)[..., None, None, None, :]
        if self.rel_t:
            rt = self.rel_pos_t[self.idx_t]
            bias = bias + _rel_dot(rq, rt, 2)[..., :, None, None]
            if with_memory:
                rt = getattr(self, self.mem_tables[2])[self.idx_mt]
                mt = self.spec.mem_thw[0]  # type: ignore[index]
                rel = _rel_dot(rq, rt, 2).reshape(b, nh, qt, qh, qw, self.mem_clips, mt)
                mbias = mbias + rel[..., None, None]
        lq = qt * qh * qw
        bias = bias.expand(b, nh, qt, qh, qw, kt, kh, kw).reshape(b, nh, lq, kt * kh * kw)
        if s:
            bias = F.pad(bias, (1, 0))
        if with_memory:
            mt, mh, mw = self.spec.mem_thw  # type: ignore[misc]
            n_clips = self.mem_clips
            mbias = mbias.expand(b, nh, qt, qh, qw, n_clips, mt, mh, mw).reshape(b, nh, lq, n_clips, mt * mh * mw)
            if s:
                mbias = F.pad(mbias, (1, 0))
            bias = torch.cat((mbias.reshape(b, nh, lq, -1), bias), dim=-1)
        if s:
            bias = F.pad(bias, (0, 0, 1, 0))
        return bias

    def _logits(self, q: Tensor, k: Tensor, mem_ok: Tensor | None, n_kv: int) -> Tensor:
        """Attention logits: one GEMM for q.k and the relative-position bias, then the memory mask.
        Queries are extended with their table terms, keys with their position codes, so no
        [N_q, N_k] bias tensor is ever built; the mask (0 / -1e4 per key) is a broadcast add after
        the GEMM, so both GEMM operands stay O(1) and each quantizes to int8 with one scale."""
        b, nh = q.shape[:2]
        with_memory = mem_ok is not None
        if self.rel_sp or self.rel_t:
            codes = self.key_codes_mem if with_memory else self.key_codes
            q_ext = torch.cat((q * self.scale, self._query_terms(q, with_memory).to(q.dtype)), dim=-1)
            logits = q_ext @ torch.cat((k, codes.to(k.dtype).expand(b, nh, -1, -1)), dim=-1).transpose(-2, -1)
        else:
            logits = (q * self.scale) @ k.transpose(-2, -1)
        if mem_ok is not None:
            ok = _valid_keys(mem_ok, k.shape[2], n_kv)
            logits = logits + ((ok.to(logits.dtype) - 1.0) * _MASKED)[:, None, None, :]
        return logits

    def _logits_reference(self, q: Tensor, k: Tensor, mem_ok: Tensor | None, n_kv: int) -> Tensor:
        """The same logits as the official code builds them: scaled q.k, plus a materialised bias
        tensor, memory masked with ``where``. Model GFLOPs are counted on this formulation."""
        attn = (q @ k.transpose(-2, -1)) * self.scale
        with_memory = mem_ok is not None
        if self.rel_sp or self.rel_t:
            attn = attn + self._rel_bias(q, with_memory)
        if mem_ok is not None:
            ok = _valid_keys(mem_ok, k.shape[2], n_kv)
            attn = torch.where(ok[:, None, None, :], attn, torch.finfo(attn.dtype).min)
        return attn

    def forward(
        self, x: Tensor, mem_k: Tensor | None = None, mem_v: Tensor | None = None, mem_ok: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """``x`` [B, N, C] (normed) -> (output [B, N_q, att_dim], raw K-bar, raw V-bar [B, N_kv, C]).

        ``mem_k``/``mem_v`` [B, M, N_mem, C] are compressed memory clips (oldest first, as the
        official concatenation) and
        ``mem_ok`` [B, M] bool marks the valid ones; invalid ones are masked out of the softmax.
        """
        b = x.shape[0]
        thw = self.spec.x_thw
        nh = self.num_heads
        qx = pool_tokens(x, thw, self.pool_q, self.folds, self.cls, self.norm_q) if self.pool_q is not None else x
        kx = pool_tokens(x, thw, self.pool_k, self.folds, self.cls, self.norm_k) if self.pool_k is not None else x
        vx = pool_tokens(x, thw, self.pool_v, self.folds, self.cls, self.norm_v) if self.pool_v is not None else x
        with_memory = mem_k is not None
        if mem_k is not None:
            assert mem_v is not None and mem_ok is not None
            m, nm, c = mem_k.shape[1:]
            k_in = torch.cat((mem_k.reshape(b, m * nm, c), kx), dim=1)
            v_in = torch.cat((mem_v.reshape(b, m * nm, c), vx), dim=1)
        else:
            k_in, v_in = kx, vx
        q = self.q(qx).reshape(b, qx.shape[1], nh, -1).transpose(1, 2)
        k = self.k(k_in).reshape(b, k_in.shape[1], nh, -1).transpose(1, 2)
        v = self.v(v_in).reshape(b, v_in.shape[1], nh, -1).transpose(1, 2)
        logits = self._logits if self.fused else self._logits_reference
        attn = logits(q, k, mem_ok if with_memory else None, kx.shape[1])
        attn = attn.softmax(dim=-1)
        out = attn @ v
        if self.conv_q == 1:
            res = q[:, :, 1:] if self.cls else q
        elif self.conv_q > 1:
            qt, qh, qw = self.spec.q_thw
            hd = q.shape[-1]
            r = q[:, :, 1:] if self.cls else q
            r = r.reshape(b * nh, qt, qh, qw, hd).permute(0, 4, 1, 2, 3)
            res = self.conv_q_func(r).reshape(b, nh, hd, -1).transpose(2, 3)
        if self.conv_q > 0:
            # Residual pooling: pooled queries added to every token but cls.
            out = out + (F.pad(res, (0, 0, 1, 0)) if self.cls else res)
        out = out.transpose(1, 2).reshape(b, -1, self.dim_out)
        return self.proj(out), kx, vx

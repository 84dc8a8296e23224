"""An eager, list-based re-derivation of the official MeMViT forward (batch 1), for tests only.

It keeps memory as Python lists of raw/compressed K-bar/V-bar per block, samples memory as the
official ``sample_memory``, drops another video's entries as ``mask_memory`` does at batch 1,
compresses the previous clip's entry at the next step (pipelined) and adds relative positions
per memory clip with the official distance formulas (interpolating tables with F.interpolate).
It shares nothing with edgemem's static-state code except the per-block geometry (widths,
kernels, strides), which other tests check against the official state dict shapes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from edgemem.models.mvit import MViT


def _ln(x: Tensor, sd: dict[str, Tensor], key: str) -> Tensor:
    return F.layer_norm(x, x.shape[-1:], sd[key + ".weight"], sd[key + ".bias"], eps=1e-6)


def _pool(x: Tensor, thw: list[int], w: Tensor | None, stride, mode: str, cls: bool, norm):
    """x [B, N, L, C]; returns pooled x and its grid (official attention_pool)."""
    if w is None:
        return x, thw
    head, rest = (x[:, :, :1], x[:, :, 1:]) if cls else (None, x)
    b, n, _, c = rest.shape
    t = rest.reshape(b * n, *thw, c).permute(0, 4, 1, 2, 3)
    k = tuple(w) if mode in ("avg", "max") else tuple(w.shape[2:])
    pad = [s // 2 for s in k]
    if mode == "avg":
        t = F.avg_pool3d(t, k, stride, pad)
    elif mode == "max":
        t = F.max_pool3d(t, k, stride, pad)
    else:
        t = F.conv3d(t, w, None, stride, pad, groups=c)
    thw = list(t.shape[2:])
    t = t.reshape(b, n, c, -1).transpose(2, 3)
    if head is not None:
        t = torch.cat((head, t), dim=2)
    if norm is not None:
        t = norm(t)
    return t, thw


def _resize(table: Tensor, d: int) -> Tensor:
    if table.shape[0] == d:
        return table
    return F.interpolate(table.t()[None], size=d, mode="linear")[0].t()


def _sp_tables(q_shape, k_shape, th: Tensor, tw: Tensor):
    qh, qw, kh, kw = q_shape[1], q_shape[2], k_shape[1], k_shape[2]
    dh, dw = 2 * max(qh, kh) - 1, 2 * max(qw, kw) - 1
    assert dh == dw
    out = []
    for q, k, table in ((qh, kh, th), (qw, kw, tw)):
        qr, kr = max(k / q, 1.0), max(q / k, 1.0)
        dist = torch.arange(q)[:, None] * qr - torch.arange(k)[None, :] * kr + (k - 1) * kr
        out.append(_resize(table, dh)[dist.long()])
    return out


class RefMeMViT:
    """Official semantics, batch 1, one clip per ``__call__`` with a video name."""

    def __init__(self, model: MViT) -> None:
        self.m = model
        self.cfg = model.cfg
        self.sd = {k: v.detach() for k, v in model.state_dict().items()}
        n = model.cfg.depth
        self.cache_k: list[list[Tensor]] = [[] for _ in range(n)]
        self.cache_v: list[list[Tensor]] = [[] for _ in range(n)]
        self.names: list[list[str]] = [[] for _ in range(n)]
        mem = self.cfg.memory
        assert mem is not None
        self.keep = (mem.attn_max_len - 1) * mem.gap + 1 if mem.sampler != "all" else mem.attn_max_len

    def _sample(self) -> list[int]:
        mem = self.cfg.memory
        cur = len(self.cache_k[0])
        if cur == 0:
            return []
        if mem.sampler != "all":
            g = mem.gap
            if cur < g:
                return []
            used = cur // g
            return list(range(cur)[-g * used :: g])
        return list(range(cur))

    def _attn(self, i: int, x: Tensor, thw: list[int], sel: list[int], name: str):
        sd, cfg, spec = self.sd, self.cfg, self.m.specs[i]
        p = f"blocks.{i}.attn."
        b, n, c = x.shape
        heads = spec.num_heads
        folds = 1 if cfg.mode == "conv_unshared" else heads
        cls = cfg.cls_embed
        xx = x.reshape(b, n, folds, -1).permute(0, 2, 1, 3)
        conv = cfg.mode.startswith("conv")

        def norm(key):
            return (lambda t: _ln(t, sd, p + key)) if conv and (p + key + ".weight") in sd else None

        def w(key, kernel):
            if not kernel:
                return None
            return sd[p + key + ".weight"] if conv else kernel

        q, q_shape = _pool(xx, thw, w("pool_q", spec.kernel_q), spec.stride_q, cfg.mode, cls, norm("norm_q"))
        k, k_shape = _pool(xx, thw, w("pool_k", spec.kernel_kv), spec.stride_kv, cfg.mode, cls, norm("norm_k"))
        v, _ = _pool(xx, thw, w("pool_v", spec.kernel_kv), spec.stride_kv, cfg.mode, cls, norm("norm_v"))
        q = q.permute(0, 2, 1, 3).reshape(b, q.shape[2], -1)
        k = k.permute(0, 2, 1, 3).reshape(b, k.shape[2], -1)
        v = v.permute(0, 2, 1, 3).reshape(b, v.shape[2], -1)
        q = F.linear(q, sd[p + "q.weight"], sd.get(p + "q.bias")).reshape(b, q.shape[1], heads, -1).transpose(1, 2)

        # Memory: drop other videos' entries (batch 1), cache, compress the previous entry.
        kept = [t for t, nm in enumerate(self.names[i]) if nm == name]
        remap = {t: j for j, t in enumerate(kept)}
        sel = [remap[s] for s in sel if s in remap]
        self.cache_k[i] = [self.cache_k[i][t] for t in kept]
        self.cache_v[i] = [self.cache_v[i][t] for t in kept]
        self.names[i] = [self.names[i][t] for t in kept]
        self.cache_k[i].append(k)
        self.cache_v[i].append(v)
        self.names[i].append(name)
        mem = cfg.memory
        mem_shape = None
        if len(self.cache_k[i]) > 1:
            if mem.compress:
                for lst, key in ((self.cache_k[i], "k"), (self.cache_v[i], "v")):
                    t, mem_shape = _pool(
                        lst[-2][:, None],
                        k_shape,
                        sd[p + f"compress_{key}.weight"],
                        mem.compress_stride,
                        "conv",
                        cls,
                        lambda z, key=key: _ln(z, sd, p + f"norm_compress_{key}"),
                    )
                    lst[-2] = t[:, 0]
            else:
                mem_shape = list(k_shape)
        ks = [self.cache_k[i][:-1][s] for s in sel] + [k]
        vs = [self.cache_v[i][:-1][s] for s in sel] + [v]
        n_mem = len(ks) - 1
        if len(self.cache_k[i]) == self.keep:
            self.cache_k[i], self.cache_v[i], self.names[i] = (
                self.cache_k[i][1:],
                self.cache_v[i][1:],
                self.names[i][1:],
            )
        k = F.linear(torch.cat(ks, 1), sd[p + "k.weight"], sd.get(p + "k.bias"))
        v = F.linear(torch.cat(vs, 1), sd[p + "v.weight"], sd.get(p + "v.bias"))
        k = k.reshape(b, -1, heads, k.shape[-1] // heads).transpose(1, 2)
        v = v.reshape(b, -1, heads, v.shape[-1] // heads).transpose(1, 2)
        attn = (q @ k.transpose(-2, -1)) * (q.shape[-1] ** -0.5)

        s0 = 1 if cls else 0
        qt, qh, qw = q_shape
        rq = q[:, :, s0:].reshape(b, heads, qt, qh, qw, -1)
        nq = qt * qh * qw
        per_mem = None if n_mem == 0 else mem_shape[0] * mem_shape[1] * mem_shape[2] + s0
        bias = torch.zeros_like(attn)
        if cfg.rel_pos_spatial:
            blocks = [(k_shape, sd[p + "rel_pos_h"], sd[p + "rel_pos_w"], attn.shape[-1] - len_k(k_shape, s0))]
            if n_mem:
                for j in range(n_mem):
                    blocks.append((mem_shape, sd[p + "rel_pos_mem_h"], sd[p + "rel_pos_mem_w"], j * per_mem))
            for shape, th, tw, start in blocks:
                rh, rw = _sp_tables(q_shape, shape, th, tw)
                bh = torch.einsum("bntyxd,ykd->bntyxk", rq, rh)
                bw = torch.einsum("bntyxd,xkd->bntyxk", rq, rw)
                kt, kh, kw = shape
                add = (bh[..., None, :, None] + bw[..., None, None, :]).expand(b, heads, qt, qh, qw, kt, kh, kw)
                bias[:, :, s0:, start + s0 : start + s0 + kt * kh * kw] += add.reshape(b, heads, nq, -1)
        if cfg.rel_pos_temporal:
            dist = torch.arange(qt)[:, None] - torch.arange(k_shape[0])[None, :]
            rt = sd[p + "rel_pos_t"][dist - dist[0, -1]]
            bt = torch.einsum("bntyxd,tkd->bntyxk", rq, rt)
            start = attn.shape[-1] - len_k(k_shape, s0)
            add = bt[..., None, None].expand(b, heads, qt, qh, qw, *k_shape)
            bias[:, :, s0:, start + s0 :] += add.reshape(b, heads, nq, -1)
            if n_mem:
                stride = mem.compress_stride[0] if mem.compress else 1
                mt = mem_shape[0] * n_mem
                dist = torch.arange(qt)[:, None] - torch.arange(mt)[None, :] * stride
                rt = sd[p + "rel_pos_mem_t"][dist - dist[0, -1]]
                bt = torch.einsum("bntyxd,tkd->bntyxk", rq, rt)
                for j in range(n_mem):
                    part = bt[..., j * mem_shape[0] : (j + 1) * mem_shape[0]]
                    add = part[..., None, None].expand(b, heads, qt, qh, qw, *mem_shape)
                    bias[:, :, s0:, j * per_mem + s0 : (j + 1) * per_mem] += add.reshape(b, heads, nq, -1)
        attn = (attn + bias).softmax(-1)
        out = attn @ v
        if cfg.conv_q == 1:
            res = q.clone()
            if cls:
                res[:, :, 0] = 0
            out = out + res
        elif cfg.conv_q > 1:
            r = q[:, :, s0:].reshape(b * heads, qt, qh, qw, -1).permute(0, 4, 1, 2, 3)
            kk = sd[p + "conv_q_func.weight"]
            r = F.conv3d(r, kk, sd[p + "conv_q_func.bias"], 1, [s // 2 for s in kk.shape[2:]], groups=r.shape[1])
            r = r.reshape(b, heads, r.shape[1], -1).transpose(2, 3)
            out = out + (F.pad(r, (0, 0, 1, 0)) if cls else r)
        out = out.transpose(1, 2).reshape(b, out.shape[2], -1)
        return F.linear(out, sd[p + "proj.weight"], sd[p + "proj.bias"]), q_shape

    def __call__(self, x: Tensor, name: str) -> Tensor:
        sd, cfg = self.sd, self.cfg
        sel = self._sample()
        t = F.conv3d(x, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], cfg.patch_stride, cfg.patch_padding)
        thw = list(t.shape[2:])
        t = t.flatten(2).transpose(1, 2)
        if cfg.cls_embed:
            t = torch.cat((sd["cls_token"].expand(t.shape[0], -1, -1), t), 1)
        for i, spec in enumerate(self.m.specs):
            p = f"blocks.{i}."
            xn = _ln(t, sd, p + "norm1")
            use = [] if i in cfg.memory.exclude_layers else sel
            xb, q_shape = self._attn(i, xn, thw, use, name)
            if cfg.dim_mul_in_att and spec.dim != spec.dim_out:
                t = F.linear(xn, sd[p + "proj.weight"], sd[p + "proj.bias"])
            if spec.stride_q and any(s > 1 for s in spec.stride_q):
                ks = [s + 1 if s > 1 else s for s in spec.stride_q]
                t, _ = _pool(t[:, None], thw, ks, spec.stride_q, "max", cfg.cls_embed, None)
                t = t[:, 0]
            t = t + xb
            xn = _ln(t, sd, p + "norm2")
            h = F.linear(
                F.gelu(F.linear(xn, sd[p + "mlp.fc1.weight"], sd[p + "mlp.fc1.bias"])),
                sd[p + "mlp.fc2.weight"],
                sd[p + "mlp.fc2.bias"],
            )
            if not cfg.dim_mul_in_att and spec.dim != spec.dim_out:
                t = F.linear(xn, sd[p + "proj.weight"], sd[p + "proj.bias"])
            t = t + h
            thw = list(q_shape)
        t = _ln(t, sd, "norm")
        t = t[:, 0] if cfg.cls_embed else t.mean(1)
        return F.linear(t, sd["head.projection.weight"], sd["head.projection.bias"])


def len_k(k_shape, s0: int) -> int:
    return k_shape[0] * k_shape[1] * k_shape[2] + s0

"""Decomposed relative-position indices of MViTv2 / MeMViT, precomputed once per block.

The official code (``cal_rel_pos_spatial`` / ``cal_rel_pos_temporal``) recomputes distance
tables every call; here they are computed once, with the same float arithmetic, into index
tensors (and, where the official code linearly interpolates a table, an interpolation matrix)
so a forward pass only gathers table rows.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from edgemem.errors import UnsupportedError

_CPU = torch.device("cpu")


def interp_matrix(old: int, new: int) -> torch.Tensor | None:
    """``[new, old]`` matrix W with ``W @ table`` == the official ``get_rel_pos`` resize (None if equal)."""
    if old == new:
        return None
    eye = torch.eye(old, device=_CPU, dtype=torch.float32).reshape(1, old, old)
    out = F.interpolate(eye, size=new, mode="linear")  # [1, old(basis), new]
    return out[0].t().contiguous()


def _dist(q: int, k: int) -> tuple[torch.Tensor, float, float]:
    q_ratio = max(k / q, 1.0)
    k_ratio = max(q / k, 1.0)
    dist = torch.arange(q, device=_CPU)[:, None] * q_ratio - torch.arange(k, device=_CPU)[None, :] * k_ratio
    dist += (k - 1) * k_ratio
    return dist, q_ratio, k_ratio


def spatial_indices(
    q_hw: tuple[int, int], k_hw: tuple[int, int], table_len: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Index tensors ``[q_h, k_h]``, ``[q_w, k_w]`` and interpolation matrices for the h/w tables.

    Mirrors ``get_spatial_embeddings`` (including its ``dw > dh`` branch, where the w table is
    resized to the h length and distances are clamped to the h range).
    """
    (q_h, q_w), (k_h, k_w) = q_hw, k_hw
    dh = 2 * max(q_h, k_h) - 1
    dw = 2 * max(q_w, k_w) - 1
    dist_h, q_h_ratio, k_h_ratio = _dist(q_h, k_h)
    if dh == dw:
        dist_w, _, _ = _dist(q_w, k_w)
        w_len = dw
    elif dw > dh:
        dist_w = (
            torch.arange(q_w, device=_CPU)[:, None] * q_h_ratio - torch.arange(k_w, device=_CPU)[None, :] * k_h_ratio
        )
        dist_w += dist_h[0, 0]
        dist_w = torch.clamp(dist_w, dist_h.min(), dist_h.max())
        w_len = dh
    else:
        raise UnsupportedError(f"not supported: key grid {k_hw} with queries {q_hw} (official code fails too)")
    return dist_h.long(), dist_w.long(), interp_matrix(table_len, dh), interp_matrix(table_len, w_len)


def temporal_indices(q_t: int, k_t: int, table_len: int) -> torch.Tensor:
    """``[q_t, k_t]`` indices into ``rel_pos_t`` (``cal_rel_pos_temporal``; no interpolation)."""
    dist = torch.arange(q_t, device=_CPU)[:, None] - torch.arange(k_t, device=_CPU)[None, :]
    dist = dist - dist[0, -1]
    if int(dist.max()) >= table_len:
        raise UnsupportedError(f"not supported: {q_t} query / {k_t} key frames exceed rel_pos_t ({table_len})")
    return dist


def memory_temporal_indices(
    q_t: int, mem_t: int, n_clips: int, stride: int, table_len: int, offset: int = 0
) -> torch.Tensor:
    """``[q_t, n_clips * mem_t]`` indices into ``rel_pos_mem_t`` for memory clips, oldest first.

    The official index of a memory frame is ``q + r * stride`` with ``r`` its rank counted back from
    the newest attended memory frame: clip ``i`` (0 = oldest of ``n_clips``) frame ``f`` has rank
    ``(n_clips - 1 - i) * mem_t + (mem_t - 1 - f)``. Only the newest clips are ever valid, so
    ranks over a fixed set of clips equal the official ranks over the attended ones.

    ``offset`` shifts every index: with the current clip's ``k_t`` key frames as ``offset`` (and stride
    1) a memory frame lands where ``temporal_indices`` would put a key that many frames before the
    clip, its true distance on the clip's own table (memory positions ``"clip"``).
    """
    q = torch.arange(q_t, device=_CPU)[:, None]
    rank = torch.tensor(
        [(n_clips - 1 - i) * mem_t + (mem_t - 1 - f) for i in range(n_clips) for f in range(mem_t)], device=_CPU
    )[None, :]
    idx = q + rank * stride + offset
    if int(idx.max()) >= table_len:
        raise UnsupportedError(
            f"not supported: memory of {n_clips} clips of {mem_t} frames at temporal stride {stride} exceeds "
            f"its temporal position table ({table_len} positions)"
        )
    return idx

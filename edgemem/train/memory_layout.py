"""The command-line memory layout options (``--memory-sampler``, ``--memory-block``, ``--memory-compression``,
``--memory-positions``) applied to a preset's."""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

from edgemem.errors import InputError
from edgemem.models.mvit_config import MemoryConfig

_COMPRESSION = re.compile(r"(\d+)x(\d+)x(\d+)/(\d+)x(\d+)x(\d+)")


def memory_layout(
    mem: MemoryConfig,
    sampler: str | None,
    blocks: list[str] | None,
    compression: str | None = None,
    positions: str | None = None,
) -> MemoryConfig:
    """``mem`` with ``sampler`` for the blocks without a layout of their own, each ``BLOCK:ATTN_MAX_LEN:SAMPLER``
    of ``blocks`` as that block's layout (replacing the preset's, if any; a block the preset leaves without
    memory gets memory), each ``BLOCK:off`` taking that block's memory away, and ``compression``
    (``KTxKHxKW/STxSHxSW``, kernel / stride, or ``none``: raw keys and values, no scale or norm) in every
    memory block, and ``positions`` (``own`` or ``clip``, ``MemoryConfig.positions``); ``MemoryConfig``
    and ``MViTConfig`` refuse a bad sampler, length, block or combination, and a layout with no memory block
    left."""
    per_block = {b: (n, s) for b, n, s in mem.per_block}
    excluded = set(mem.exclude_layers)
    for entry in blocks or []:
        parts = entry.split(":")
        if parts[1:] == ["off"] and parts[0].isdigit():
            per_block.pop(int(parts[0]), None)
            excluded.add(int(parts[0]))
            continue
        if len(parts) != 3 or not parts[0].isdigit() or not parts[1].isdigit():
            raise InputError(
                f"--memory-block must be BLOCK:ATTN_MAX_LEN:SAMPLER (e.g. 2:5:gap4) or BLOCK:off, got {entry!r}"
            )
        per_block[int(parts[0])] = (int(parts[1]), parts[2])
        excluded.discard(int(parts[0]))
    return replace(
        mem,
        sampler=sampler or mem.sampler,
        exclude_layers=tuple(sorted(excluded)),
        per_block=tuple((b, n, s) for b, (n, s) in sorted(per_block.items())),
        positions=positions or mem.positions,
        **_compression(compression),
    )


def _compression(text: str | None) -> dict[str, Any]:
    if text is None:
        return {}
    if text == "none":
        return {"compress": False}
    match = _COMPRESSION.fullmatch(text)
    if match is None:
        raise InputError(f"--memory-compression must be KTxKHxKW/STxSHxSW (e.g. 5x3x3/4x2x2) or none, got {text!r}")
    sizes = tuple(int(v) for v in match.groups())
    if min(sizes) < 1:
        raise InputError(f"--memory-compression sizes must be >= 1, got {text!r}")
    return {"compress": True, "compress_kernel": sizes[:3], "compress_stride": sizes[3:]}

"""The command-line memory layout options (``--memory-sampler``, ``--memory-block``) applied to a preset's."""

from __future__ import annotations

from dataclasses import replace

from edgemem.errors import InputError
from edgemem.models.mvit_config import MemoryConfig


def memory_layout(mem: MemoryConfig, sampler: str | None, blocks: list[str] | None) -> MemoryConfig:
    """``mem`` with ``sampler`` for the blocks without a layout of their own and each ``BLOCK:ATTN_MAX_LEN:SAMPLER``
    of ``blocks`` as that block's layout (replacing the preset's, if any); ``MemoryConfig`` refuses a bad
    sampler, length or block."""
    per_block = {b: (n, s) for b, n, s in mem.per_block}
    for entry in blocks or []:
        parts = entry.split(":")
        if len(parts) != 3 or not parts[0].isdigit() or not parts[1].isdigit():
            raise InputError(f"--memory-block must be BLOCK:ATTN_MAX_LEN:SAMPLER (e.g. 2:5:gap4), got {entry!r}")
        per_block[int(parts[0])] = (int(parts[1]), parts[2])
    return replace(
        mem,
        sampler=sampler or mem.sampler,
        per_block=tuple((b, n, s) for b, (n, s) in sorted(per_block.items())),
    )

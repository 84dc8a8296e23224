"""torchrun data parallelism: process group (gloo on CPU, nccl on GPU), rank helpers, DDP wrapping.

``torchrun --nproc_per_node N -m edgemem.cli train ...`` sets ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``;
without them everything runs as a single process (world size 1).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world: int
    local_rank: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str | None = None) -> DistInfo:
    """Join the torchrun process group if launched by torchrun, else a world of one."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(f"cuda:{local}") if device == "cuda" else torch.device(device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return DistInfo(rank=rank, world=world, local_rank=local, device=dev)


def wrap_ddp(module: nn.Module, info: DistInfo, find_unused: bool = False) -> nn.Module:
    """DistributedDataParallel around ``module`` when the world has more than one process.

    ``find_unused``: some parameters get no gradient in a step (MeMViT's memory parameters in
    blocks without memory, as in the official model)."""
    if info.world <= 1:
        return module
    ids = [info.device.index] if info.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=ids, find_unused_parameters=find_unused)


def all_sum(values: list[float], info: DistInfo) -> list[float]:
    """Sum a few scalars over all ranks (identity in a world of one)."""
    if info.world <= 1:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=info.device)
    dist.all_reduce(t)
    return t.cpu().tolist()


def average_gradients(params: list[nn.Parameter], info: DistInfo) -> None:
    """All-reduce and average ``.grad`` over ranks, for gradients accumulated outside DDP's forward."""
    if info.world <= 1:
        return
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        dist.all_reduce(p.grad)
        p.grad.div_(info.world)


def barrier(info: DistInfo) -> None:
    if info.world > 1:
        dist.barrier()


def shutdown(info: DistInfo) -> None:
    if info.world > 1 and dist.is_initialized():
        dist.destroy_process_group()

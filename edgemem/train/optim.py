"""Optimizers (SGD, AdamW) with MViT-style parameter groups and the cosine schedule with linear warm-up
and a hold at the peak learning rate."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from edgemem.errors import UnsupportedError

OPTIMIZERS = ("sgd", "adamw")

# Parameters whose name contains one of these get no weight decay (besides every 1-D parameter:
# biases and norm scales), as in the MViT recipe: positional embeddings, the class token.
_NO_DECAY_KEYS = ("pos_embed", "rel_pos", "cls_token", "pos_")


def param_groups(
    model: nn.Module, weight_decay: float, memory: Iterable[nn.Parameter] = (), memory_lr_scale: float = 1.0
) -> list[dict]:
    """Decayed weights, and 1-D / positional / class-token parameters without decay; with
    ``memory_lr_scale`` != 1, the ``memory`` parameters (MeMViT's ``memory_parameters()``) in two more
    groups of their own whose learning rate is ``lr_scale`` times the schedule's (``set_lr``)."""
    memory_ids = {id(p) for p in memory} if memory_lr_scale != 1 else set()
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    mem_decay: list[nn.Parameter] = []
    mem_no_decay: list[nn.Parameter] = []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        plain = p.ndim <= 1 or any(k in name for k in _NO_DECAY_KEYS)
        if id(p) in memory_ids:
            (mem_no_decay if plain else mem_decay).append(p)
        else:
            (no_decay if plain else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    for params, wd in ((mem_decay, weight_decay), (mem_no_decay, 0.0)):
        if params:
            groups.append({"params": params, "weight_decay": wd, "lr_scale": memory_lr_scale})
    return groups


def build_optimizer(
    model: nn.Module,
    name: str,
    lr: float,
    weight_decay: float,
    momentum: float = 0.9,
    memory: Iterable[nn.Parameter] = (),
    memory_lr_scale: float = 1.0,
) -> torch.optim.Optimizer:
    """``sgd`` (momentum, Nesterov off, as PySlowFast) or ``adamw`` (betas 0.9/0.999); ``memory`` and
    ``memory_lr_scale`` as ``param_groups``."""
    groups = param_groups(model, weight_decay, memory, memory_lr_scale)
    for g in groups:
        g["lr"] = lr * g.get("lr_scale", 1.0)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999))
    raise UnsupportedError(f"unknown optimizer '{name}'; choose one of {', '.join(OPTIMIZERS)}")


@dataclass(frozen=True)
class CosineSchedule:
    """Linear warm-up from ``warmup_start * base_lr`` to ``base_lr`` over ``warmup_epochs``, ``base_lr``
    until ``hold_epochs``, then cosine decay to ``final_ratio * base_lr`` at ``total_epochs``
    (``hold_epochs`` 0: PySlowFast's ``cosine`` policy with ``WARMUP_EPOCHS``). Progress is in epochs,
    fractional within an epoch, so epochs of different lengths (MeMViT's video-length curriculum)
    need no step count up front."""

    base_lr: float
    total_epochs: float
    warmup_epochs: float = 0.0
    warmup_start: float = 0.01
    final_ratio: float = 0.01
    hold_epochs: float = 0.0

    def lr_at(self, epoch: float) -> float:
        end = self.final_ratio * self.base_lr
        decay = self.total_epochs - self.hold_epochs
        progress = min(1.0, max(0.0, (epoch - self.hold_epochs) / max(decay, 1e-9)))
        cosine = end + (self.base_lr - end) * 0.5 * (1.0 + math.cos(math.pi * progress))
        if epoch < self.warmup_epochs:
            start = self.warmup_start * self.base_lr
            return start + (cosine - start) * epoch / self.warmup_epochs
        return cosine


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """The schedule's ``lr`` for every group, times the group's ``lr_scale`` (the memory's groups)."""
    for g in optimizer.param_groups:
        g["lr"] = lr * g.get("lr_scale", 1.0)

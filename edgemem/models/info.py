"""Model facts for ``edgemem info`` and the benchmarks: parameters, GFLOPs, state bytes, temporal support.

GFLOPs follow the papers' (fvcore) convention: one multiply-add counts as one FLOP, so the numbers
compare with the MeMViT/MViT/CM tables. They are counted with ``torch.utils.flop_counter`` on the
meta device: no weights are allocated and nothing is computed.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from edgemem.contract import Cost, ModelCard
from edgemem.models.mvit_attention import MultiScaleAttention
from edgemem.models.streaming import StreamingModel


def count_gflops(fn: Any, *args: Any) -> float:
    """Model GFLOPs (multiply-adds) of ``fn(*args)`` (a module or its bound method), counted by
    dispatch (works on meta tensors). MViT attention submodules (``fused``: bias and mask folded into the q.k GEMM) are counted on their reference formulation, as the papers
    count; the fused GEMM's extra columns are an implementation choice, not model compute."""
    owner = fn if isinstance(fn, nn.Module) else getattr(fn, "__self__", None)
    modules = owner.modules() if isinstance(owner, nn.Module) else []
    fused = [m for m in modules if isinstance(m, MultiScaleAttention) and m.fused]
    for m in fused:
        m.fused = False
    try:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            fn(*args)
    finally:
        for m in fused:
            m.fused = True
    return counter.get_total_flops() / 2e9


def temporal_support(card: ModelCard) -> dict[str, Any]:
    """The paper's temporal support (memory layers x memory length x clip duration for MeMViT with one
    layout in every block): the farthest clip back whose input reaches a step's output, and
    ``contiguous_clips``, how far back *every* clip does (a ``gapN`` memory skips the ages between),
    and ``direct_clips``, the farthest clip a memory block attends itself (older clips reach the
    output only through memory of memory: a past clip's memory blocks attended them).

    A memory-less model sees one clip (k base clips for a frame-scaled baseline, whose clip is
    already k times longer), all of it. A model whose memory spans the whole video (CM) reports
    ``clips: None``, as does a card whose memory does not say how far it reaches without gaps.
    """
    base_clip = card.clip.seconds / card.frame_scale
    if card.memory is None:
        clips: int | None = card.frame_scale
        contiguous: int | None = clips
        direct: int | None = clips
    else:
        clips = card.memory.temporal_support_clips
        contiguous = card.memory.details.get("contiguous_clips") if clips is not None else None
        ages = card.memory.details.get("attended_ages") if clips is not None else None
        direct = max((a for block in ages.values() for a in block), default=0) if ages else None
    return {
        "clips": clips,
        "seconds": None if clips is None else round(clips * base_clip, 3),
        "contiguous_clips": contiguous,
        "contiguous_seconds": None if contiguous is None else round(contiguous * base_clip, 3),
        "direct_clips": direct,
    }


def state_bytes(model: StreamingModel) -> dict[str, Any]:
    """State bytes per stream: total, per tensor, and per layer (names grouped by prefix)."""
    per_tensor = model.state_bytes()
    per_layer: dict[str, int] = defaultdict(int)
    for name, n in per_tensor.items():
        per_layer[name.rsplit(".", 1)[0]] += n
    return {"total": sum(per_tensor.values()), "per_layer": dict(per_layer), "per_tensor": per_tensor}


def round_sig(x: float, digits: int = 4) -> float:
    """``x`` to ``digits`` significant digits (tiny presets run at ~0.01 GFLOPs, K400 models at ~100)."""
    return float(f"{x:.{digits}g}")


def model_cost(model: StreamingModel) -> Cost:
    """The card's ``cost`` block: what ``edgemem info`` prints, counted the same way (the exporter
    calls this; ``model`` may live on meta and is put in eval mode)."""
    card = model.model_card()
    dev = next(model.parameters()).device
    frames = torch.zeros((1, *model.input_shape), device=dev)
    model.eval()
    support = temporal_support(card)
    return Cost(
        params=sum(p.numel() for p in model.parameters()),
        gflops_step=round_sig(count_gflops(model.step, frames, model.init_state(1))),
        gflops_first_step=round_sig(count_gflops(model, frames)),
        state_bytes=sum(model.state_bytes().values()),
        temporal_support_clips=support["clips"],
        temporal_support_s=support["seconds"],
    )


def model_info(model: StreamingModel) -> dict[str, Any]:
    """Everything ``edgemem info`` prints, as a JSON-serialisable dict. ``model`` may live on meta."""
    card = model.model_card()
    cost = model_cost(model)
    info = {
        "name": card.name,
        "family": card.family,
        "source": card.source,
        "params": cost.params,
        "frames": card.clip.frames,
        "sampling_rate": card.clip.sampling_rate,
        "crop_size": card.clip.crop_size,
        "target_fps": card.clip.target_fps,
        "frame_scale": card.frame_scale,
        "num_classes": card.num_classes,
        "clip_seconds": round(card.clip.seconds, 4),
        "gflops_step": cost.gflops_step,
        "gflops_first_step": cost.gflops_first_step,
        "memory": None if card.memory is None else card.memory.to_json(),
        "backbone": card.backbone,
        "temporal_support": temporal_support(card),
        "state_bytes": state_bytes(model),
    }
    overhead = getattr(model, "overhead", None)
    if overhead is not None:  # a memory head on a clip backbone (CM): its cost vs the backbone alone
        info["overhead"] = overhead()
    return info

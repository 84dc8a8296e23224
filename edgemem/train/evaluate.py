"""Video-level evaluation the way each family infers, plus clip-level accuracy by temporal position.

- clip models (memory-less, frame-scaled included): ``views`` evenly spread clips per video (x spatial
  crops), softmax scores averaged;
- MeMViT: every consecutive clip of the video streamed in order with memory carried; the video is
  classified by the logits of its **last** clip, the one whose memory has seen the whole video (the
  online setting: earlier clips have not seen the later evidence yet, so averaging them would mix in
  predictions made without it);
- CM: N clips per video, two scans (memory from all clips, then every clip read against it),
  softmax scores averaged.

Clip-level accuracy by position (CM paper, Fig. 4) is the top-1 of each clip's own prediction at
each temporal position (view index, or clip index for streaming). With ``DistInfo`` of several
processes, each rank scores a share of the videos and the counts are summed.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from edgemem.contract import ClipSpec
from edgemem.data.datasets import (
    ClipDataset,
    MultiClipDataset,
    SkipTally,
    StreamingDataset,
    VideoDir,
    VideoRecord,
    stack_batch,
)
from edgemem.data.samplers import StreamingBatchSampler
from edgemem.errors import InputError
from edgemem.models.cm_model import CMModel
from edgemem.models.streaming import StreamingModel
from edgemem.train.distributed import DistInfo, all_sum

DEFAULT_VIEWS = 5


@dataclass
class _Tally:
    """Per-video score sums and per-position clip hits."""

    num_classes: int
    positions: int
    scores: dict[int, Tensor] = field(default_factory=dict)
    labels: dict[int, int] = field(default_factory=dict)
    pos_hits: list[float] = field(default_factory=list)
    pos_count: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.pos_hits = [0.0] * self.positions
        self.pos_count = [0.0] * self.positions

    def add_video(self, video: int, label: int, scores: Tensor) -> None:
        s = scores.detach().float().cpu()
        self.scores[video] = self.scores[video] + s if video in self.scores else s
        self.labels[video] = label

    def add_clip(self, position: int, hit: bool) -> None:
        if 0 <= position < self.positions:
            self.pos_hits[position] += float(hit)
            self.pos_count[position] += 1.0

    def result(self, info: DistInfo | None, skipped: int, scheme: str) -> dict[str, Any]:
        """Top-1/top-5, per-class top-1 and the confusions (label -> top-1 class, off the diagonal)."""
        c, k = self.num_classes, min(5, self.num_classes)
        top1 = top5 = 0.0
        confusion = [0.0] * (c * c)  # row = label, column = top-1 class
        for v, s in self.scores.items():
            ranked = torch.topk(s, k).indices.tolist()  # ranked[0] == _top1(s)
            top1 += float(ranked[0] == self.labels[v])
            top5 += float(self.labels[v] in ranked)
            confusion[self.labels[v] * c + ranked[0]] += 1.0
        n = float(len(self.scores))
        vals = [top1, top5, n, float(skipped), *self.pos_hits, *self.pos_count, *confusion]
        if info is not None:
            vals = all_sum(vals, info)
        top1, top5, n, skipped_f = vals[:4]
        p = self.positions
        hits, counts, confusion = vals[4 : 4 + p], vals[4 + p : 4 + 2 * p], vals[4 + 2 * p :]
        rows = [confusion[i * c : (i + 1) * c] for i in range(c)]
        confused = [[t, q, int(rows[t][q])] for t in range(c) for q in range(c) if t != q and rows[t][q]]
        return {
            "top1": top1 / n if n else 0.0,
            "top5": top5 / n if n else 0.0,
            "videos": int(n),
            "skipped": int(skipped_f),
            "scheme": scheme,
            "clip_top1_by_position": [round(h / m, 4) if m else None for h, m in zip(hits, counts, strict=True)],
            "clip_count_by_position": [int(m) for m in counts],
            "per_class_top1": [round(r[i] / sum(r), 4) if sum(r) else None for i, r in enumerate(rows)],
            "per_class_videos": [int(sum(r)) for r in rows],
            "confusions": sorted(confused, key=lambda e: (-e[2], e[0], e[1])),
        }

    def predictions(self, records: Sequence[VideoRecord]) -> list[dict[str, Any]]:
        """One row per scored video of ``records`` (the list the dataset indexed): path, label, top-1 class."""
        return [
            {"path": records[v].path, "label": self.labels[v], "predicted": _top1(self.scores[v])}
            for v in sorted(self.scores)
        ]


def _top1(scores: Tensor) -> int:
    return int(torch.topk(scores, 1).indices[0])


def _finish(
    tally: _Tally, records: Sequence[VideoRecord], info: DistInfo | None, skipped: int, scheme: str, predictions: bool
) -> dict[str, Any]:
    """The tally's metrics, with ``predictions`` (one row per video) when asked: single-process only."""
    metrics = tally.result(info, skipped, scheme)
    if predictions:
        if info is not None and info.world > 1:
            raise InputError("per-video predictions are collected by a single process, not under torchrun")
        metrics["predictions"] = tally.predictions(records)
    return metrics


def _shard(records: Sequence[VideoRecord], info: DistInfo | None) -> list[int]:
    idx = list(range(len(records)))
    return idx if info is None or info.world <= 1 else idx[info.rank :: info.world]


def _loader(ds: Any, batch_size: int, workers: int, **kw: Any) -> DataLoader:
    return DataLoader(ds, batch_size=batch_size, num_workers=workers, collate_fn=stack_batch, **kw)


def _device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


@torch.no_grad()
def eval_clip_model(
    model: StreamingModel,
    records: Sequence[VideoRecord],
    geometry: ClipSpec,
    views: int = DEFAULT_VIEWS,
    crops: int = 1,
    batch_size: int = 16,
    workers: int = 0,
    info: DistInfo | None = None,
    predictions: bool = False,
) -> dict[str, Any]:
    """Multi-view testing: ``views`` temporal x ``crops`` spatial clips, scores averaged (the card's
    ``head_act``, as the official test: softmax, sigmoid for multi-label heads, or the logits)."""
    model.eval()
    act = model.model_card().head_act
    mine = [records[i] for i in _shard(records, info)]
    ds = ClipDataset(mine, geometry, train=False, temporal_views=views, spatial_crops=crops)
    tally, skips = _Tally(model.num_classes, views), SkipTally()
    dev = _device(model)
    for batch in _loader(ds, batch_size, workers):
        skips.update(batch)
        ok = batch["valid"]
        if not ok.any():
            continue
        logits = model(batch["frames"][ok].to(dev)).float().cpu()
        probs = {"softmax": logits.softmax(-1), "sigmoid": logits.sigmoid()}.get(act, logits)
        for j, (v, lab, t) in enumerate(zip(batch["video"][ok], batch["label"][ok], batch["clip"][ok], strict=True)):
            tally.add_video(int(v), int(lab), probs[j])
            tally.add_clip(int(t), int(logits[j].argmax()) == int(lab))
    return _finish(tally, mine, info, len(skips.skipped), f"{views}x{crops} views, {act} averaged", predictions)


@torch.no_grad()
def eval_streaming(
    model: StreamingModel,
    records: Sequence[VideoRecord],
    geometry: ClipSpec,
    batch_size: int = 8,
    workers: int = 0,
    info: DistInfo | None = None,
    predictions: bool = False,
) -> dict[str, Any]:
    """Stream every consecutive clip of each video with memory; classify the video by its last clip."""
    model.eval()
    mine = [records[i] for i in _shard(records, info)]
    ds = StreamingDataset(mine, geometry, train=False)
    positions = max(ds.clips_per_video, default=1)
    if info is not None and info.world > 1:
        positions = int(_all_max(positions, info))  # the same tally length on every rank
    tally = _Tally(model.num_classes, positions)
    readable = ds.readable_videos
    if readable:
        sampler = StreamingBatchSampler(ds.clips_per_video, batch_size, shuffle=False, videos=readable)
        state = model.init_state(batch_size)
        dev = _device(model)
        for batch in DataLoader(ds, batch_sampler=sampler, num_workers=workers, collate_fn=stack_batch):
            reset = batch["first"].to(dev)
            logits, state = model.step(batch["frames"].to(dev), state, reset)
            logits = logits.float().cpu()
            for j in torch.nonzero(batch["valid"]).flatten().tolist():
                lab = int(batch["label"][j])
                tally.add_clip(int(batch["clip"][j]), int(logits[j].argmax()) == lab)
                if bool(batch["last"][j]):
                    tally.add_video(int(batch["video"][j]), lab, logits[j])
    return _finish(tally, mine, info, len(ds.skipped), "streamed in order, last clip's logits", predictions)


def _all_max(value: int, info: DistInfo) -> float:
    import torch.distributed as dist

    t = torch.tensor([float(value)], device=info.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())


@torch.no_grad()
def eval_cm(
    model: CMModel,
    records: Sequence[VideoRecord],
    geometry: ClipSpec,
    views: int,
    crops: int = 1,
    batch_size: int = 8,
    workers: int = 0,
    info: DistInfo | None = None,
    predictions: bool = False,
) -> dict[str, Any]:
    """CM inference: ``views`` clips per video, memory from all of them (two scans), scores averaged."""
    from edgemem.train.cm_train import cm_clip_logits

    model.eval()
    mine = [records[i] for i in _shard(records, info)]
    ds = MultiClipDataset(mine, geometry, views, train=False, spatial_crops=crops)
    tally, skips = _Tally(model.num_classes, views), SkipTally()
    dev = _device(model)
    for batch in _loader(ds, batch_size, workers):
        skips.update(batch)
        ok = batch["valid"]
        if not ok.any():
            continue
        logits = cm_clip_logits(model, batch["frames"][ok].to(dev), two_scan=True).float().cpu()  # [B, N, C]
        probs = logits.softmax(-1).mean(1)
        for j, (v, lab) in enumerate(zip(batch["video"][ok], batch["label"][ok], strict=True)):
            tally.add_video(int(v), int(lab), probs[j])
            for n in range(views):
                tally.add_clip(n, int(logits[j, n].argmax()) == int(lab))
    scheme = f"{views} clips x {crops} crops, two-scan memory"
    return _finish(tally, mine, info, len(skips.skipped), scheme, predictions)


def evaluate_model(
    model: StreamingModel,
    family: str,
    records: Sequence[VideoRecord],
    views: int | None = None,
    batch_size: int = 8,
    workers: int = 0,
    info: DistInfo | None = None,
    predictions: bool = False,
) -> dict[str, Any]:
    """Dispatch on the family (``clip``, ``memvit``, ``cm``) with the model card's clip geometry;
    ``predictions`` adds one row per video (path, label, top-1 class)."""
    geometry = model.model_card().clip
    if family == "memvit":
        if views is not None:
            raise InputError("--views applies to clip models and CM; MeMViT is scored by streaming every clip")
        return eval_streaming(model, records, geometry, batch_size, workers, info, predictions)
    if family == "cm":
        if not isinstance(model, CMModel):
            raise InputError(f"family 'cm' evaluates a CM model, got {type(model).__name__}")
        n = views or int(getattr(model, "clips", 0)) or DEFAULT_VIEWS
        return eval_cm(model, records, geometry, n, 1, batch_size, workers, info, predictions)
    return eval_clip_model(model, records, geometry, views or DEFAULT_VIEWS, 1, batch_size, workers, info, predictions)


def evaluate_checkpoint(
    path: str | os.PathLike[str],
    data: str | os.PathLike[str],
    split: str = "val",
    views: int | None = None,
    batch_size: int = 8,
    workers: int = 0,
    config: str | os.PathLike[str] | None = None,
    view: str = "test",
    predictions: bool = False,
) -> dict[str, Any]:
    """``edgemem eval``: load a run's best checkpoint (or a ``.pyth``) and score ``split`` of ``data``.

    With ``config`` (a PySlowFast/MeMViT YAML) ``path`` is an official checkpoint, built in ``view``
    (default ``test``: clips at ``DATA.TEST_CROP_SIZE`` through the official eval head)."""
    from edgemem.train.checkpoints import load_trained
    from edgemem.train.trainer import family_of

    if config is not None:
        from edgemem.models.pyslowfast import load_pyslowfast

        model = load_pyslowfast(config, path, view=view)
        model.eval()
        ckpt: dict[str, Any] = {}
    else:
        model, ckpt = load_trained(path)
    vdir = VideoDir(data, num_classes=model.num_classes)
    family = family_of(model)
    metrics = evaluate_model(model, family, vdir.split(split), views, batch_size, workers, predictions=predictions)
    add_cues(metrics, vdir)
    card = model.model_card()
    return metrics | {
        "checkpoint": str(path), "epoch": int(ckpt.get("epoch", 0)), "split": split,
        "view": card.view, "crop_size": card.clip.crop_size, "class_names": class_names(vdir, card.class_names),
    }  # fmt: skip


def add_cues(metrics: dict[str, Any], vdir: VideoDir) -> None:
    """Give each per-video prediction its cue colours, where the dataset lists them (``cues.csv``)."""
    if vdir.cues is not None:
        for row in metrics.get("predictions", []):
            row["cues"] = vdir.cues.get(row["path"], "")


def class_names(vdir: VideoDir, card_names: Sequence[str] | None) -> list[str] | None:
    """The dataset's class names (``classes.txt``), else the model card's, else None."""
    names = vdir.class_names or (list(card_names) if card_names else None)
    return names if names and len(names) == vdir.num_classes else None


def format_report(m: dict[str, Any], classes_listed: int = 10) -> str:
    """Human-readable ``edgemem eval`` output: with more than ``classes_listed`` classes, the per-class
    line lists the lowest ``classes_listed // 2``."""
    names = m.get("class_names") or [str(i) for i in range(len(m["per_class_top1"]))]
    if len(names) <= classes_listed:
        shown, head = list(enumerate(m["per_class_top1"])), "per-class top-1 (videos)"
    else:
        scored = sorted((a, i) for i, a in enumerate(m["per_class_top1"]) if a is not None)
        shown = [(i, a) for a, i in scored[: classes_listed // 2]]
        head = f"lowest per-class top-1 (videos), {len(shown)} of the {len(scored)} classes with videos"
    per_class = "  ".join(
        f"{names[i]} {'-' if a is None else f'{a:.3f}'} ({m['per_class_videos'][i]})" for i, a in shown
    )
    confused = m["confusions"][:5]
    lines = [
        f"{m['split']}: {m['videos']} videos ({m['skipped']} unreadable skipped), {m['scheme']}",
        f"  top-1 {m['top1']:.4f}   top-5 {m['top5']:.4f}",
        f"  {head}: {per_class}",
        "  most confused (label -> top-1: videos): "
        + ("none" if not confused else "; ".join(f"{names[t]} -> {names[q]}: {n}" for t, q, n in confused)),
        "  clip top-1 by temporal position: "
        + " ".join("-" if a is None else f"{a:.3f}" for a in m["clip_top1_by_position"]),
    ]
    return "\n".join(lines) + "\n"

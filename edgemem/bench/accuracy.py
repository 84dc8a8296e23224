"""Top-1 accuracy of a runtime session on a dataset, so the number belongs to that runtime and precision.

The protocol of ``edgemem eval`` for streaming models: each video of the split is streamed clip by
clip in order (consecutive, non-overlapping clips of the model card's geometry, memory reset at a
video's first clip) and classified by its last clip's logits. A frame-scaled baseline is streamed
the same way, its clips being k times longer. A step whose logits or state hold NaN/inf is an error
naming the video and clip (``NonFiniteError``), never a wrong top-1.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgemem.errors import NonFiniteError


def session_accuracy(session: Any, data_dir: str, split: str = "val", limit: int | None = None) -> dict[str, Any]:
    """``{"top1", "videos", "skipped", "split", "data"}`` of ``session`` on ``data_dir``'s ``split``."""
    from torch.utils.data import DataLoader

    from edgemem.data.datasets import StreamingDataset, VideoDir, stack_batch
    from edgemem.data.samplers import StreamingBatchSampler

    card = session.model_card
    videos = VideoDir(data_dir, num_classes=session.num_classes)
    records = videos.split(split if split in videos.splits else videos.splits[-1])
    if limit is not None:
        records = records[:limit]
    ds = StreamingDataset(records, card.clip, train=False)
    readable = ds.readable_videos
    correct = seen = 0
    if readable:
        sampler = StreamingBatchSampler(ds.clips_per_video, session.batch, shuffle=False, videos=readable)
        for batch in DataLoader(ds, batch_sampler=sampler, num_workers=0, collate_fn=stack_batch):
            frames = np.ascontiguousarray(batch["frames"].numpy(), dtype=np.float32)
            logits = session.step(frames, batch["first"].numpy().astype(bool))
            if bad := session.nonfinite_outputs(logits):
                raise NonFiniteError(_where(ds, batch, bad, session.runtime))
            for j in np.flatnonzero(batch["valid"].numpy() & batch["last"].numpy()):
                seen += 1
                correct += int(np.argmax(logits[j]) == int(batch["label"][j]))
    return {
        "top1": round(correct / seen, 4) if seen else None,
        "videos": seen,
        "skipped": len(ds.skipped),
        "split": split,
        "data": str(data_dir),
    }


def _where(ds: Any, batch: dict[str, Any], bad: dict[int, list[str]], runtime: str) -> str:
    """Which video and clip of the batch gave NaN/inf, for the error message."""
    parts = []
    for slot, names in sorted(bad.items()):
        video = ds.records[int(batch["video"][slot])].path
        parts.append(f"clip {int(batch['clip'][slot])} of {video}: NaN or infinite values in {', '.join(names)}")
    return f"accuracy on runtime {runtime}: {'; '.join(parts)}"

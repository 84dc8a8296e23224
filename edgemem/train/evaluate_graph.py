"""``edgemem eval GRAPH.onnx``: video-level top-1/top-5 of a deployed graph through a runtime session.

The protocol of ``evaluate.py`` for checkpoints, run through the session instead of PyTorch:

- graphs with memory (MeMViT, CM's online graph): every consecutive clip streamed in order with the
  memory carried (reset at a video's first clip), the video classified by its last clip's logits
  (CM checkpoints are scored with two scans in ``evaluate.py``; the online graph has one scan, its
  memory being the running mean of the clips so far);
- memory-less graphs: ``views`` evenly spread clips per video, each with an empty state, softmax
  scores averaged.

So a user checks an int8 (or any) graph on their own data, with the number belonging to that
runtime and precision. On OpenVINO the result also says which kernels the compiled model runs
(``kernel_precisions``: per layer type, how many layers at ``i8``/``u8``/``f32``/``bf16``).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from edgemem.data.datasets import ClipDataset, SkipTally, StreamingDataset, VideoDir, stack_batch
from edgemem.data.samplers import StreamingBatchSampler
from edgemem.errors import InputError
from edgemem.precision import of_graph
from edgemem.train.evaluate import DEFAULT_VIEWS, _finish, _Tally, add_cues, class_names


def _stream(session: Any, ds: StreamingDataset, tally: _Tally) -> None:
    readable = ds.readable_videos
    if not readable:
        return
    sampler = StreamingBatchSampler(ds.clips_per_video, session.batch, shuffle=False, videos=readable)
    for batch in DataLoader(ds, batch_sampler=sampler, num_workers=0, collate_fn=stack_batch):
        frames = np.ascontiguousarray(batch["frames"].numpy(), dtype=np.float32)
        logits = torch.from_numpy(session.step(frames, batch["first"].numpy().astype(bool)))
        for j in torch.nonzero(batch["valid"]).flatten().tolist():
            lab = int(batch["label"][j])
            tally.add_clip(int(batch["clip"][j]), int(logits[j].argmax()) == lab)
            if bool(batch["last"][j]):
                tally.add_video(int(batch["video"][j]), lab, logits[j])


def _views(session: Any, ds: ClipDataset, tally: _Tally, skips: SkipTally) -> None:
    b = session.batch
    for batch in DataLoader(ds, batch_size=b, num_workers=0, collate_fn=stack_batch):
        skips.update(batch)
        frames = np.ascontiguousarray(batch["frames"].numpy(), dtype=np.float32)
        n = frames.shape[0]
        if n < b:  # the graph's batch is static: pad the last batch, ignore the padding
            frames = np.concatenate([frames, np.zeros((b - n, *frames.shape[1:]), np.float32)])
        logits = torch.from_numpy(session.step(frames, np.ones(b, dtype=bool)))[:n]
        probs = logits.softmax(-1)
        for j in torch.nonzero(batch["valid"]).flatten().tolist():
            lab = int(batch["label"][j])
            tally.add_video(int(batch["video"][j]), lab, probs[j])
            tally.add_clip(int(batch["clip"][j]), int(logits[j].argmax()) == lab)


def evaluate_graph(
    graph: str | os.PathLike[str],
    data: str | os.PathLike[str],
    runtime: str = "ort-cpu",
    precision: str | None = None,
    split: str = "val",
    views: int | None = None,
    threads: int | None = None,
    predictions: bool = False,
) -> dict[str, Any]:
    """Score ``graph`` on ``split`` of ``data`` through ``runtime`` (see the module docstring);
    ``predictions`` adds one row per video (path, label, top-1 class)."""
    from edgemem.contract import read_contract
    from edgemem.runtimes import open_session
    from edgemem.runtimes.precisions import run_graph_options

    contract = read_contract(graph)
    if contract.state and views is not None:
        raise InputError("--views applies to memory-less graphs; a stateful graph is scored by streaming every clip")
    have = of_graph(contract.export, contract.quantized)
    run, options = run_graph_options(runtime, have, precision)
    with open_session(graph, runtime, threads=threads, **options) as session:
        vdir = VideoDir(data, num_classes=session.num_classes)
        records, names = vdir.split(split), class_names(vdir, session.model_card.class_names)
        geometry = session.model_card.clip
        if contract.state:
            ds = StreamingDataset(records, geometry, train=False)
            tally = _Tally(session.num_classes, max(ds.clips_per_video, default=1))
            _stream(session, ds, tally)
            skipped, scheme = len(ds.skipped), "streamed in order, last clip's logits"
        else:
            n = views or DEFAULT_VIEWS
            cds, skips = ClipDataset(records, geometry, train=False, temporal_views=n), SkipTally()
            tally = _Tally(session.num_classes, n)
            _views(session, cds, tally, skips)
            skipped, scheme = len(skips.skipped), f"{n}x1 views, softmax averaged"
        # OpenVINO: the runtime precision of each compiled GEMM/convolution (an int8 graph's i8/u8 kernels)
        kernels = session.kernel_precisions() if hasattr(session, "kernel_precisions") else None
    metrics = _finish(tally, records, None, skipped, scheme, predictions)
    add_cues(metrics, vdir)
    return metrics | {
        "class_names": names,
        "graph": str(graph),
        "runtime": runtime,
        "graph_precision": have.value,
        "runtime_precision": run.value,
        "kernel_precisions": kernels,
        "split": split,
    }

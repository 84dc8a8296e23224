"""``edgemem train`` and ``edgemem eval``."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from edgemem.atomic import AtomicFile
from edgemem.errors import InputError
from edgemem.precision import Precision, choices


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a preset on a video dataset (PySlowFast layout); torchrun for several processes",
        description="Train MODEL (a preset: edgemem models) on DIR (train.csv/val.csv). Clip models train on "
        "random clips, MeMViT streams consecutive clips with memory carried across iterations, CM "
        "trains on N clips per video. Writes RUN/checkpoints/*.pyth (PySlowFast layout), "
        "RUN/metrics.jsonl and RUN/config.json. Several processes: torchrun --nproc_per_node P "
        "-m edgemem.cli train ...",
    )
    p.add_argument("model", metavar="MODEL", help="preset name, e.g. memvit_tiny, mvit_tiny, cm_slow_tiny")
    p.add_argument("--data", required=True, metavar="DIR", help="dataset folder with train.csv and val.csv")
    p.add_argument("--out", required=True, metavar="RUN", help="run folder to create (or to --resume)")
    p.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="default: 30, or enough for 9,600 training videos seen on fewer than 320 (at most 60); "
        "with --resume, the run's own",
    )
    p.add_argument("--batch-size", type=int, default=None, help="videos (slots) per step and process")
    p.add_argument("--lr", type=float, default=None, help="base learning rate (default per optimizer)")
    p.add_argument("--optimizer", choices=("sgd", "adamw"), default="adamw")
    p.add_argument("--weight-decay", type=float, default=None)
    p.add_argument("--warmup-epochs", type=float, default=None)
    p.add_argument(
        "--lr-hold",
        type=float,
        default=None,
        metavar="F",
        help="hold the peak learning rate for the first F of the epochs, then the cosine decay (default 0: "
        "cosine from the end of the warm-up)",
    )
    p.add_argument("--frame-scale", type=int, default=1, metavar="K", help="k x more frames per clip (baseline)")
    p.add_argument(
        "--no-flip",
        action="store_true",
        default=None,
        help="augment without horizontal flips, for labels that depend on left and right (direction of "
        "motion, side of the frame); default: flip half of the videos; with --resume, the run's own",
    )
    p.add_argument("--init", default=None, metavar="CKPT", help="initialise from a checkpoint (CM: clip-level)")
    p.add_argument("--clips-per-video", type=int, default=None, metavar="N", help="CM: clips per video")
    p.add_argument("--alpha", type=float, default=None, help="CM: weight of the video-level loss (default 1)")
    p.add_argument("--multi-iteration", action="store_true", help="CM: two-scan training, one clip at a time")
    p.add_argument(
        "--no-batch-reduction",
        action="store_true",
        help="CM: batch-norm over all clips of the batch together (default: each BN batch holds one clip of "
        "every video, each video's clips in a random order)",
    )
    p.add_argument(
        "--infusion",
        choices=("gating", "residual"),
        default=None,
        help="CM: context infusion, feature gating (eq. 4) or the residual variant (default: the preset's)",
    )
    p.add_argument(
        "--infusion-warmup",
        type=int,
        default=None,
        metavar="W",
        help="CM gating: train the first W epochs with the residual infusion, then gating with a fresh "
        "output projection (default: a third of --epochs; 0: gating throughout)",
    )
    p.add_argument(
        "--curriculum",
        type=float,
        default=None,
        metavar="F",
        help="MeMViT: grow the video length from one clip to the full video over this fraction "
        "of the epochs (0: full videos throughout)",
    )
    p.add_argument(
        "--memory-drop",
        type=float,
        default=None,
        metavar="P",
        help="MeMViT: probability of dropping m in [1, M-1] memory steps in an iteration",
    )
    p.add_argument(
        "--stream-loss",
        choices=("all", "last"),
        default="last",
        help="MeMViT: loss on each video's last clip only (default), or on every streamed clip",
    )
    p.add_argument(
        "--memory-grad",
        choices=("bptt", "pipelined"),
        default=None,
        help="MeMViT: back-propagate through the memory over each video (default), or the paper's "
        "pipelined compression (older memory detached)",
    )
    p.add_argument(
        "--memory-lr-scale",
        type=float,
        default=None,
        metavar="X",
        help="MeMViT: learning rate of the memory's own parameters (compression, memory position tables) "
        "as a multiple of the schedule's (default 10)",
    )
    p.add_argument(
        "--memory-sampler",
        default=None,
        metavar="S",
        help="MeMViT: the memory sampler of blocks without a layout of their own: all, gapN (official) or winN "
        "(edgemem: means of N consecutive clips; docs/MEMVIT.md); default the preset's",
    )
    p.add_argument(
        "--memory-block",
        action="append",
        default=None,
        metavar="B:L:S",
        help="MeMViT: memory block B's own layout, ATTN_MAX_LEN L and sampler S (e.g. 2:5:gap4; repeatable; "
        "replaces the preset's entry for B, or gives memory to a block the preset leaves without); "
        "B:off takes block B's memory away",
    )
    p.add_argument(
        "--memory-compression",
        default=None,
        metavar="K/S",
        help="MeMViT: the compression of every memory block, depthwise kernel / stride as TxHxW "
        "(e.g. 5x3x3/4x2x2; 1x1x1/1x1x1 keeps every token), or none (raw keys and values, no scale or "
        "norm; with spatial position tables it needs --memory-positions clip); default the preset's",
    )
    p.add_argument(
        "--memory-positions",
        default=None,
        choices=("own", "clip"),
        help="MeMViT: relative-position tables of the memory keys: their own (official), or the clip's, "
        "at each memory frame's true distance (edgemem; needs memory on the clip's grid, --memory-compression "
        "none or one of stride 1, and the 'all' sampler); default the preset's",
    )
    p.add_argument(
        "--drop-path",
        type=float,
        default=None,
        metavar="P",
        help="MViT / MeMViT backbones: stochastic depth, the drop probability of the last block (rising "
        "linearly from 0 at the first); default the preset's (tiny presets 0, depth 16/24 0.4)",
    )
    p.add_argument(
        "--head-dropout",
        type=float,
        default=None,
        metavar="P",
        help="dropout before the classifier (CM: the backbone's); default the preset's (tiny presets 0)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue RUN from its last checkpoint (its own model and options unless given)",
    )
    p.add_argument("--workers", type=int, default=0, help="data loading processes per training process")
    p.add_argument(
        "--precision",
        choices=("auto", *choices((Precision.F32, Precision.BF16, Precision.FP16))),
        default="auto",
        help="bf16: autocast on CPU (or GPU); fp16: AMP on GPU; auto: fp16 AMP on GPU, f32 on CPU",
    )
    p.add_argument("--clip-grad", type=float, default=1.0, help="max gradient norm (0: off)")
    p.add_argument("--eval-every", type=int, default=5, help="validate every E epochs and after the last (0: never)")
    p.add_argument(
        "--checkpoint-every",
        type=int,
        default=1,
        metavar="E",
        help="keep checkpoints/checkpoint_epoch_*.pyth every E epochs and after the last (0: only last.pyth "
        "and best.pyth, which are always written)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--threads", type=int, default=None, help="torch threads per process (default: usable CPUs)")
    p.set_defaults(func=_train)

    e = sub.add_parser(
        "eval",
        help="video-level top-1/top-5 of a trained run or checkpoint",
        description="Score a run (its best checkpoint) or a .pyth on DIR/<split>.csv the way its family "
        "infers: multi-view averaging for clip models, streaming over the whole video for MeMViT "
        "(prediction from the last clip), two-scan memory for CM. Also top-1 per class, the most "
        "confused class pairs and clip-level accuracy by temporal position.",
    )
    e.add_argument("checkpoint", metavar="RUN_OR_CHECKPOINT", help="a run, a .pyth, or an exported GRAPH.onnx")
    e.add_argument(
        "--config", metavar="YAML",
        help="score an official checkpoint: build it from this PySlowFast/MeMViT config (in --view test)",
    )  # fmt: skip
    e.add_argument(
        "--view", choices=("train", "test"),
        help="with --config: clips at DATA.TEST_CROP_SIZE (test, default: the official eval) or "
        "DATA.TRAIN_CROP_SIZE (train)",
    )  # fmt: skip
    e.add_argument("--data", required=True, metavar="DIR")
    e.add_argument("--split", default="val")
    e.add_argument("--views", type=int, default=None, help="clip models/CM: temporal views (clips) per video")
    e.add_argument("--batch-size", type=int, default=None, help="checkpoints: clips per forward (default 8)")
    e.add_argument("--workers", type=int, default=None, help="checkpoints: data loader processes (default 0)")
    e.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: usable CPUs)")
    e.add_argument("--json", action="store_true", help="print the metrics as JSON")
    e.add_argument(
        "--predictions", metavar="CSV",
        help="also write one row per video: path, label, predicted (the top-1 class), correct, class names "
        "(and the cue colours, for a dataset of edgemem data synth)",
    )  # fmt: skip
    e.add_argument("--runtime", default=None, help="GRAPH.onnx: the runtime to score it on (default ort-cpu)")
    e.add_argument(
        "--precision", default=None, choices=choices(),
        help="GRAPH.onnx: the precision to run (default the graph's own; bf16: OpenVINO on an f32 graph); "
        "one the graph does not compute in is refused",
    )  # fmt: skip
    e.set_defaults(func=_eval)


def _train(args: argparse.Namespace) -> int:
    from edgemem.train.trainer import TrainOptions, run_training

    opts = TrainOptions.from_args(args)
    summary = run_training(opts)
    if summary is not None:
        print(json.dumps(summary))
    return 0


def _eval(args: argparse.Namespace) -> int:
    import torch

    from edgemem.errors import InputError
    from edgemem.hardware import resolve_threads
    from edgemem.train.evaluate import evaluate_checkpoint, format_report

    if args.view is not None and args.config is None:
        raise InputError("--view applies with --config (an official checkpoint built from its YAML)")
    for option, value, least in (("--views", args.views, 1), ("--batch-size", args.batch_size, 1),
                                 ("--workers", args.workers, 0)):  # fmt: skip
        if value is not None and value < least:
            raise InputError(f"{option} must be >= {least}, got {value}")
    torch.set_num_threads(resolve_threads(args.threads))  # default: the usable CPUs
    if str(args.checkpoint).endswith(".onnx"):
        return _eval_graph(args)
    given = [o for o, v in (("--runtime", args.runtime), ("--precision", args.precision)) if v is not None]
    if given:
        raise InputError(f"{', '.join(given)} only apply to an exported GRAPH.onnx")
    with _predictions_file(args.predictions) as keep:
        metrics = evaluate_checkpoint(
            args.checkpoint,
            args.data,
            split=args.split,
            views=args.views,
            batch_size=8 if args.batch_size is None else args.batch_size,
            workers=args.workers or 0,
            config=args.config,
            view=args.view or "test",
            predictions=args.predictions is not None,
        )
        keep(metrics)
    if args.json:
        print(json.dumps(metrics))
    else:
        sys.stdout.write(format_report(metrics))
    return 0


@contextmanager
def _predictions_file(path: str | None) -> Iterator[Callable[[dict[str, Any]], None]]:
    """Open ``path`` (a temp file beside it, so a bad path fails before scoring); the yielded function
    moves ``metrics["predictions"]`` into it as CSV, renamed over ``path`` on success."""
    if path is None:
        yield lambda metrics: None
        return
    out = AtomicFile(path)

    def keep(metrics: dict[str, Any]) -> None:
        rows, names = metrics.pop("predictions"), metrics.get("class_names")
        cues = ["cues"] if rows and "cues" in rows[0] else []  # a synthetic set's cue colours
        with open(out.tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["path", "label", "predicted", "correct", "label_name", "predicted_name", *cues])
            for r in rows:
                lab, pred = r["label"], r["predicted"]
                named = [names[lab], names[pred]] if names else ["", ""]
                w.writerow([r["path"], lab, pred, int(lab == pred), *named, *(r[c] for c in cues)])
        metrics["predictions_file"] = str(path)

    try:
        yield keep
        out.commit()
    finally:
        out.discard()


def _eval_graph(args: argparse.Namespace) -> int:
    from edgemem.runtimes.openvino import format_kernels, int8_kernel_count
    from edgemem.train.evaluate import format_report
    from edgemem.train.evaluate_graph import evaluate_graph

    if args.config is not None:
        raise InputError("--config applies to checkpoints; an exported graph carries its own model card")
    given = [o for o, v in (("--batch-size", args.batch_size), ("--workers", args.workers)) if v is not None]
    if given:
        raise InputError(f"{', '.join(given)}: checkpoints only; a graph runs at the batch it was exported with")
    with _predictions_file(args.predictions) as keep:
        metrics = evaluate_graph(
            args.checkpoint, args.data, runtime=args.runtime or "ort-cpu", precision=args.precision,
            split=args.split, views=args.views, threads=args.threads, predictions=args.predictions is not None,
        )  # fmt: skip
        keep(metrics)
    if args.json:
        print(json.dumps(metrics))
    else:
        sys.stdout.write(f"{metrics['graph']} on {metrics['runtime']} ({metrics['graph_precision']} graph)\n")
        sys.stdout.write(format_report(metrics))
        if metrics["kernel_precisions"] is not None:
            sys.stdout.write(f"  compiled kernels: {format_kernels(metrics['kernel_precisions'])}\n")
    if metrics["graph_precision"] == "int8" and metrics["kernel_precisions"] is not None:
        if int8_kernel_count(metrics["kernel_precisions"]) == 0:
            print(f"edgemem eval: warning: {metrics['runtime']} compiled this int8 graph without any int8 kernel "
                  "(computed in float: slower, not wrong)", file=sys.stderr)  # fmt: skip
    return 0

"""``edgemem data synth`` (write the long-range task) and ``edgemem data check`` (validate a dataset)."""

from __future__ import annotations

import argparse
import json
import shlex
from typing import TYPE_CHECKING, NoReturn

from edgemem.errors import InputError

if TYPE_CHECKING:
    from edgemem.data.synth import SynthTask, TaskOptions
    from edgemem.data.synth_families import RelationTask


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="datasets: generate the synthetic long-range task, check a dataset")
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    s = dsub.add_parser("synth", help="write a synthetic long-range task (real encoded videos, Kinetics layout)")
    s.add_argument(
        "--task",
        required=True,
        help="task: rel-match, rel-sum, rel-order, rel-count (relation families), or cue-match, cue-sum, "
        "cue-xor (docs/DATA.md)",
    )
    s.add_argument("--out", required=True, help="output directory (must not exist or be empty)")
    s.add_argument("--videos", type=int, required=True, help="training videos")
    s.add_argument("--val", type=int, default=None, help="validation videos (default: videos / 4)")
    s.add_argument("--size", type=int, default=40, help="frame width and height in pixels (default 40)")
    s.add_argument("--seed", type=int, default=0, help="random seed (same seed, same dataset)")
    s.add_argument("--codec", default="mpeg4", help="PyAV encoder: mpeg4 (default), libx264, libvpx-vp9")
    s.add_argument("--distance", type=int, default=None, help="clips between the first and the last cue (default 3)")
    s.add_argument("--classes", type=int, default=None, help="rel-sum: k, the modulus and colour count (default 3)")
    s.add_argument("--cues", type=int, default=None, help="rel-count: cue windows (default 3)")
    s.add_argument("--distractors", type=int, default=None, help="rel-*: distractor events per video (default 2)")
    s.add_argument(
        "--lead-clips",
        type=int,
        default=None,
        metavar="N",
        help="rel-*: each video starts with 0..N more distractor-only clips, so lengths differ (default 0)",
    )
    s.add_argument(
        "--cue-by", default=None, metavar="colour|shape",
        help="rel-*: relate the cues' colours (default) or their shapes (disc, square, triangle, cross; "
        "each cue then in a random colour)",
    )  # fmt: skip
    s.add_argument("--all-intra", action="store_true", help="encode every frame as a keyframe")
    s.add_argument("--json", action="store_true", help="print the task meta as JSON")
    s.set_defaults(func=_synth)

    c = dsub.add_parser("check", help="decode every video of a dataset directory and report problems")
    c.add_argument("dir", help="dataset directory with train.csv / val.csv")
    c.add_argument("--split", action="append", help="split(s) to check (default: every CSV present)")
    c.add_argument("--json", action="store_true", help="print the report as JSON")
    c.set_defaults(func=_check)


class _RaisingParser(argparse.ArgumentParser):
    """A parser whose errors are ``InputError``s (a command read from a file, not typed)."""

    def error(self, message: str) -> NoReturn:
        raise InputError(message)


def task_of_command(command: str) -> SynthTask | RelationTask:
    """The task an ``edgemem data synth ...`` command (a zoo card's ``dataset.generate``) generates, read
    with the command's own parser: options it does not name take their defaults."""
    from edgemem.data.synth import resolve_task

    words = shlex.split(command)
    if words[:3] != ["edgemem", "data", "synth"]:
        raise InputError(f"not an 'edgemem data synth' command: {command!r}")
    parser = _RaisingParser(prog="edgemem")
    register(parser.add_subparsers())
    args = parser.parse_args(words[1:])
    return resolve_task(args.task, _options(args))


def _options(args: argparse.Namespace) -> TaskOptions:
    from edgemem.data.synth import TaskOptions

    return TaskOptions(
        args.distance, args.classes, args.cues, args.distractors, args.lead_clips, args.cue_by, args.all_intra
    )


def _synth(args: argparse.Namespace) -> int:
    import time

    from edgemem.data.synth import generate

    t0 = time.perf_counter()
    meta = generate(args.task, args.out, args.videos, args.val, args.size, args.seed, args.codec, _options(args))
    if args.json:
        print(json.dumps(meta, indent=2))
    else:
        n, lead = meta["videos"], meta.get("lead_clips", 0)
        frames = f"{meta['frames_per_video']}" + (
            f"-{meta['clips_per_video_max'] * meta['clip_span_frames']}" if lead else ""
        )
        clips = f"{meta['clips_per_video']}" + (f"-{meta['clips_per_video_max']}" if lead else "")
        print(
            f"wrote {args.out}: task {meta['task']}, {n['train']} train + {n['val']} val videos of "
            f"{frames} frames ({clips} clips of {meta['clip_frames']}x"
            f"{meta['sampling_rate']}) at {meta['width']}x{meta['height']}, {meta['num_classes']} classes, "
            f"chance {meta['chance']:.2f}, in {time.perf_counter() - t0:.1f} s"
        )
    return 0


def _check(args: argparse.Namespace) -> int:
    from edgemem.data.video_dir import check_dataset

    report = check_dataset(args.dir, args.split)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        flips = (
            "training flips half of the videos" if report["flip"] else 'no flips in training (task.json: "flip": false)'
        )
        print(f"{args.dir}: {report['num_classes']} classes, {flips}")
        for split, r in report["splits"].items():
            print(
                f"  {split}: {r['videos']} videos, {r['readable']} readable, {r['unreadable']} unreadable, "
                f"{r['frames_min']}-{r['frames_max']} frames, labels {r['label_counts']}"
            )
            for bad in r["errors"]:
                print(f"    skipped: {bad}")
    return 0 if all(r["unreadable"] == 0 for r in report["splits"].values()) else 1

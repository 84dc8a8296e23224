"""``edgemem demo``: the whole pipeline on shipped weights, in about a minute on a laptop CPU.

Generates a few videos of the synthetic long-range task the shipped model was trained on, loads
the shipped weights, exports the stateful ONNX graph (verified against PyTorch), streams every
video through every runtime available here, and prints each video's prediction (made at its last
clip, after the memory has seen the earlier ones) with a latency table.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

import edgemem.export  # noqa: F401  (registers the PyTorch runtimes "torch" and "torch-cuda")
from edgemem.contract import ModelCard
from edgemem.errors import EdgememError

if TYPE_CHECKING:
    from edgemem.data.synth import SynthTask

DEFAULT_MODEL = "memvit_tiny"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="end to end on shipped weights: synth video, export, verify, stream everywhere")
    p.add_argument("--model", default=DEFAULT_MODEL, help="a preset with shipped weights or a shipped weights name")
    p.add_argument("--videos", type=int, default=4, help="videos to generate and stream")
    p.add_argument("--runtimes", default=None, help="comma-separated (default: every CPU runtime available here)")
    p.add_argument("--workdir", default=None, help="keep the videos and the graph here (default: a temp dir)")
    p.add_argument("--seed", type=int, default=7)
    p.set_defaults(func=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    from rich.console import Console

    console = Console()
    if args.videos < 1:
        raise EdgememError("--videos must be >= 1")
    if args.workdir:
        work = Path(args.workdir)
        work.mkdir(parents=True, exist_ok=True)
        return _demo(args, work, console)
    with tempfile.TemporaryDirectory(prefix="edgemem-demo-") as tmp:
        return _demo(args, Path(tmp), console)


def _demo(args: argparse.Namespace, work: Path, console: Any) -> int:
    from edgemem.export.onnx import to_onnx
    from edgemem.models.pretrained import default_entry, zoo_cards

    runtimes = _runtimes(args.runtimes)  # a bad --runtimes fails before any work
    entry = zoo_cards().get(args.model) or default_entry(args.model)
    console.rule(f"[bold]edgemem demo[/] — {entry['name']} ({entry['preset']})")
    model, task = _load(entry)
    videos = _make_videos(task, args.videos, args.seed, work, model.model_card())
    where = f"cues {task.clips - 1} clips apart"
    console.print(f"1. {len(videos)} videos of the long-range task '{task.name}' ({where}) in {work / 'videos'}")

    graph = work / f"{entry['name']}.onnx"
    result = to_onnx(model, graph, batch=1)
    console.print(f"2. exported {graph.name}: {result.bytes / 1e6:.2f} MB, {result.stats.nodes} nodes, "
                  f"{result.seconds:.1f} s")  # fmt: skip
    if result.report is None:  # to_onnx verifies unless told not to
        raise EdgememError(f"exporting {graph.name} returned no verification report")
    console.print("3. verified against PyTorch:\n" + result.report.format())

    rows = []
    for runtime in runtimes:
        rows.append((runtime, _stream(graph if runtime != "torch" else model, runtime, videos)))
    console.print(f"4. streamed through {', '.join(r for r, _ in rows)}")
    _print_results(console, rows, videos, model.model_card())
    return 0


def _load(entry: dict[str, Any]) -> tuple[Any, SynthTask]:
    """The shipped model and the task its card says it was trained on, with that dataset's geometry (a
    cue distance of 12 clips, not the task's default)."""
    from edgemem.data.commands import task_of_command
    from edgemem.data.synth import SynthTask, get_task
    from edgemem.models.pretrained import load_zoo

    dataset = entry.get("dataset") or {}
    if not dataset.get("task"):
        raise EdgememError(f"shipped weights '{entry['name']}' do not name the synthetic task they were trained on")
    task = task_of_command(dataset["generate"]) if dataset.get("generate") else get_task(dataset["task"])
    if not isinstance(task, SynthTask):
        raise EdgememError(f"edgemem demo renders the cue-* tasks; '{entry['name']}' was trained on {dataset['task']}")
    return load_zoo(entry), task


def _make_videos(task: SynthTask, n: int, seed: int, work: Path, card: ModelCard) -> list[tuple[Path, int]]:
    """Write ``n`` videos whose labels cycle through the classes; return (path, label) pairs."""
    from edgemem.data.synth import render_video
    from edgemem.data.video import write_video

    rng = np.random.default_rng(seed)
    out = work / "videos"
    out.mkdir(parents=True, exist_ok=True)
    videos = []
    for i in range(n):
        want = i % task.num_classes
        while True:  # draw cues until they give the wanted label: every class shows up
            a, b = task.sample_cues(rng)
            if task.label_of(a, b) == want:
                break
        path = out / f"video{i}_{task.class_names[want]}.mp4".replace(" ", "_")
        write_video(path, render_video(task, a, b, max(card.clip.crop_size + 8, 40), rng), fps=task.fps)
        videos.append((path, want))
    return videos


def _runtimes(requested: str | None) -> list[str]:
    from edgemem.runtimes.availability import availability

    avail = {a.runtime: a for a in availability()}
    if requested:
        names = [r.strip() for r in requested.split(",") if r.strip()]
        missing = [f"{r} ({avail[r].detail})" for r in names if r in avail and not avail[r].available]
        unknown = [r for r in names if r not in avail]
        if unknown or missing:
            raise EdgememError("cannot run " + ", ".join(unknown + missing))
        return names
    return [r for r, a in avail.items() if a.available and r in ("torch", "ort-cpu", "openvino", "openvino-stateful")]


def _stream(model: Any, runtime: str, videos: list[tuple[Path, int]]) -> dict[str, Any]:
    """Stream every video (reset between them); keep each video's last-clip top-1 and the latencies."""
    from edgemem.runtimes import open_session
    from edgemem.serve.stream import run_stream

    last: dict[str, Any] = {}
    options = {"precision": "f32"} if runtime.startswith("openvino") else {}
    with open_session(model, runtime, **options) as session:
        stats = run_stream(session, [str(p) for p, _ in videos], k=1,
                           on_clip=[lambda rec, _s: last.__setitem__(rec.source, rec.topk[0])])  # fmt: skip
    steady = stats.latency_ms[1:] or stats.latency_ms
    return {"last": last, "p50_ms": statistics.median(steady), "rtf": stats.real_time_factor}


def _print_results(console: Any, rows: list[tuple[str, dict[str, Any]]], videos: list, card: ModelCard) -> None:
    from rich.table import Table

    names = card.class_names or [str(i) for i in range(card.num_classes)]
    preds = Table(title="prediction at each video's last clip (memory of the earlier clips)")
    preds.add_column("video")
    preds.add_column("true label")
    for runtime, _ in rows:
        preds.add_column(runtime)
    all_right = True
    for path, label in videos:
        cells = []
        for _, res in rows:
            top = res["last"].get(str(path))
            right = top is not None and top["index"] == label
            all_right &= right
            cells.append("—" if top is None else f"{'✓' if right else '✗'} {top['label']} {top['score']:.2f}")
        preds.add_row(path.name, names[label], *cells)
    console.print(preds)
    lat = Table(title="latency per clip (batch 1, this machine)")
    for col in ("runtime", "p50 ms", "compute s per video s"):
        lat.add_column(col, justify="right")
    for runtime, res in rows:
        lat.add_row(runtime, f"{res['p50_ms']:.2f}", f"{res['rtf']:.4f}")
    console.print(lat)
    console.print("[green]every runtime predicted every video right[/]" if all_right else
                  "[yellow]some predictions were wrong (see above)[/]")  # fmt: skip

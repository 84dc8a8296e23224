"""Results of trained runs: compute per clip and per video, train time, and shipping a run to the zoo.

``python -m edgemem.train.results ship RUN NAME --data DIR --zoo ZOO`` evaluates RUN's last
checkpoint, writes ``ZOO/NAME.pyth`` (weights only) and ``ZOO/NAME.yaml`` (preset, data, metrics,
sha256, the command that trained it); ZOO is always given, nothing is written into the installed
package by default (pass ``--zoo edgemem/zoo`` in a checkout to ship with the package).
``python -m edgemem.train.results table NAME... [--zoo ZOO]`` prints the markdown rows of
docs/TRAINING.md from the zoo cards (the shipped ones by default).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch
import yaml

from edgemem.atomic import write_text
from edgemem.contract import ModelCard
from edgemem.data.synth import synth_command
from edgemem.errors import EdgememError
from edgemem.models.checkpoint import card_of, read_pyth, save_pyth
from edgemem.models.info import count_gflops
from edgemem.models.pretrained import sha256_of, zoo_cards, zoo_dir
from edgemem.train.checkpoints import config_text, resolve_checkpoint, train_state_of, without_local_paths


def compute_cost(card: ModelCard, clips_per_video: int) -> dict[str, float]:
    """GFLOPs (multiply-adds) per clip and per video, counted on the meta device.

    Per clip: one ``step`` with full memory (MeMViT: the static graph attends every memory slot) or
    one clip through the model (CM: backbone + CM). Per video of ``clips_per_video`` base clips: each
    clip once (MeMViT streaming, CM, one view per clip for a memory-less model); a frame-scaled
    model of scale k runs ``clips_per_video / k`` clips.
    """
    from edgemem.models.registry import from_card

    with torch.device("meta"):
        model = from_card(card).eval()
        x = torch.zeros((1, *model.input_shape))
        state = {k: torch.ones_like(v) for k, v in model.init_state(1).items()}
        per_clip = count_gflops(model.step, x, state, None) if state else count_gflops(model, x)
    clips = max(1, clips_per_video // card.frame_scale)
    per_video = per_clip * clips
    return {"gflops_per_clip": per_clip, "gflops_per_video": per_video, "clips_per_video": clips}


def train_time_s(run: Path, key: str = "epoch_time_s") -> float | None:
    """Sum over epochs of ``key`` (wall or CPU seconds) in ``metrics.jsonl``; None if not logged."""
    total, seen = 0.0, False
    for line in (run / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if rec.get("kind") == "epoch" and key in rec:
            total += float(rec[key])
            seen = True
    return round(total, 1) if seen else None


def ship(
    run: Path, name: str, data: Path, command: str, default: bool, zoo: Path, views: int | None = None
) -> dict[str, Any]:
    """Evaluate ``run``'s last checkpoint and write ``zoo/<name>.pyth`` + ``zoo/<name>.yaml``."""
    from edgemem.train.evaluate import evaluate_checkpoint

    src = resolve_checkpoint(run, prefer="last.pyth")
    ckpt = read_pyth(src)
    card = card_of(ckpt, src)
    assert card is not None  # required: a foreign checkpoint raised
    metrics = evaluate_checkpoint(src, data, "val", views=views)
    task = json.loads((data / "task.json").read_text()) if (data / "task.json").is_file() else {}
    zoo.mkdir(parents=True, exist_ok=True)
    weights = zoo / f"{name}.pyth"
    train = without_local_paths(train_state_of(ckpt))
    slim = {k: ckpt[k] for k in ("model_state", "epoch", "edgemem_card")}
    slim |= {"cfg": config_text(json.loads(ckpt["edgemem_card"]), train), "edgemem_train": json.dumps(train),
             "optimizer_state": None}  # fmt: skip
    save_pyth(weights, slim)
    options = train.get("options", {})
    shortest = int(task.get("clips_per_video", 1))  # --lead-clips: lengths uniform up to clips_per_video_max
    cost = compute_cost(card, round((shortest + int(task.get("clips_per_video_max", shortest))) / 2))
    entry = {
        "description": f"{card.name} trained on the synthetic long-range task {task.get('task')}",
        "preset": card.name,
        "frame_scale": card.frame_scale,
        "file": weights.name,
        "sha256": sha256_of(weights),
        "default": default,
        "dataset": {
            "task": task.get("task"),
            "generate": synth_command(task, data) if task else None,
            "num_classes": card.num_classes,
            "class_names": None if card.class_names is None else list(card.class_names),
        },
        "metrics": {
            "top1": round(metrics["top1"], 4),
            "top5": round(metrics["top5"], 4),
            "val_videos": metrics["videos"],
            "eval_scheme": metrics["scheme"],
            "clip_top1_by_position": metrics["clip_top1_by_position"],
        },
        "cost": {k: round(v, 5) if isinstance(v, float) else v for k, v in cost.items()},
        "training": {
            "command": command,
            "epochs": int(ckpt.get("epoch", 0)),
            "checkpoint": "last (the final epoch)",
            "train_time_s": train_time_s(run),
            "train_cpu_s": train_time_s(run, "epoch_cpu_s"),
            "threads": options.get("threads"),
            "optimizer": options.get("optimizer"),
            "lr": options.get("lr"),
            "batch_size": options.get("batch_size"),
        },
        "load": f"create_model('{name}')",
    }
    write_text(zoo / f"{name}.yaml", yaml.safe_dump(entry, sort_keys=False))
    return entry


def table(names: list[str], zoo: Path | None = None) -> str:
    """Markdown rows (model, top-1, top-5, GFLOPs/clip, GFLOPs/video, train time) from zoo cards."""
    cards = zoo_cards(zoo)
    missing = [n for n in names if n not in cards]
    if missing:
        raise EdgememError(f"no zoo card with weights named {', '.join(missing)} in {zoo or zoo_dir()}")
    rows = [
        "| weights | model | top-1 | top-5 | GFLOPs / clip | GFLOPs / video | train wall time | train CPU time |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for n in names:
        c = cards[n]
        k = c.get("frame_scale", 1)
        model = c["preset"] + (f" --frame-scale {k}" if k != 1 else "")
        m, cost, t = c["metrics"], c["cost"], c["training"]
        rows.append(
            f"| `{n}` | {model} | {m['top1']:.3f} | {m['top5']:.3f} | {cost['gflops_per_clip']:.4f} | "
            f"{cost['gflops_per_video']:.4f} | {t['train_time_s'] / 60:.1f} min | "
            + (f"{t['train_cpu_s'] / 60:.1f} min |" if t.get("train_cpu_s") else "not logged |")
        )
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m edgemem.train.results")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("ship")
    s.add_argument("run", type=Path)
    s.add_argument("name")
    s.add_argument("--data", type=Path, required=True)
    s.add_argument("--command", required=True, help="the edgemem train command that made RUN")
    s.add_argument("--default", action="store_true", help="the preset's default shipped weights")
    s.add_argument("--zoo", type=Path, required=True, help="folder to write NAME.pyth and NAME.yaml into")
    t = sub.add_parser("table")
    t.add_argument("names", nargs="+")
    t.add_argument("--zoo", type=Path, help="folder of the cards (default: the weights shipped with edgemem)")
    args = p.parse_args(argv)
    try:
        if args.cmd == "ship":
            entry = ship(args.run, args.name, args.data, args.command, args.default, args.zoo)
            print(yaml.safe_dump(entry, sort_keys=False))
        else:
            sys.stdout.write(table(args.names, args.zoo))
    except EdgememError as e:
        print(f"{p.prog} {args.cmd}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

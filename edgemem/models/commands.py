"""``edgemem info``: what a model costs and remembers."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="parameters, GFLOPs per step, state bytes and temporal support of a model")
    p.add_argument("model", help="preset name (see `edgemem models`) or PySlowFast/MeMViT YAML")
    p.add_argument("--frame-scale", type=int, default=None, help="frame-scaled baseline: k x more frames per clip")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_info)
    p2 = sub.add_parser("models", help="list the registered presets (--zoo: the shipped weights)")
    p2.add_argument("pattern", nargs="?", default="*")
    p2.add_argument("--zoo", action="store_true", help="list the shipped weights: zoo name, preset, top-1, what")
    p2.set_defaults(func=_models)


def _models(args: argparse.Namespace) -> int:
    if args.zoo:
        import fnmatch

        from edgemem.models.pretrained import zoo_cards

        for name, card in zoo_cards().items():
            if fnmatch.fnmatch(name, args.pattern):
                top1 = (card.get("metrics") or {}).get("top1")
                fs = int(card.get("frame_scale") or 1)
                preset = card["preset"] + (f" --frame-scale {fs}" if fs != 1 else "")
                print(f"{name}\t{preset}\ttop1 {top1}\t{card.get('description', '')}")
        return 0
    from edgemem.models import list_models

    print("\n".join(list_models(args.pattern)))
    return 0


def _info(args: argparse.Namespace) -> int:
    from edgemem.models.info import model_info
    from edgemem.models.resolve import resolve_model

    overrides = {} if args.frame_scale is None else {"frame_scale": args.frame_scale}
    info = model_info(resolve_model(args.model, device="meta", **overrides))
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        _print_table(info)
    return 0


def _support_text(support: dict) -> str:
    if not support["clips"]:
        return "whole video"
    n = support["clips"]
    text = f"{n} clip{'s' if n != 1 else ''}, {support['seconds']} s"
    if support["contiguous_clips"] == support["clips"]:
        text += " (every clip in between"
    elif support["contiguous_clips"]:
        text += f" (every clip up to {support['contiguous_clips']} back, then gaps"
    else:
        text += " (with gaps from 1 clip back"
    direct = support["direct_clips"]
    if direct is not None and direct != support["clips"]:
        text += f"; {direct} attended directly, older ones through memory of memory"
    return text + ")"


def _bytes_text(n: int) -> str:
    """``n`` bytes as KiB below 1 MiB, else MiB (tiny presets hold a few KiB per stream)."""
    if n == 0:
        return "none"
    return f"{n / 2**10:.1f} KiB" if n < 2**20 else f"{n / 2**20:.3f} MiB"


def _print_table(info: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"{info['name'] or info['source']} ({info['family']})", show_header=False)
    support = info["temporal_support"]
    mem = info["memory"]
    rows = [
        ("parameters", f"{info['params'] / 1e6:.2f} M"),
        (
            "input",
            f"{info['frames']} frames x{info['sampling_rate']} @ {info['crop_size']}² ({info['clip_seconds']} s)",
        ),
        ("GFLOPs / step (full memory)", f"{info['gflops_step']:.4g}"),
        ("GFLOPs / first step", f"{info['gflops_first_step']:.4g}"),
        ("memory", "none" if not mem else ", ".join(f"{k}={v}" for k, v in mem.items())),
        ("temporal support", _support_text(support)),
        ("state / stream", _bytes_text(info["state_bytes"]["total"])),
    ]
    if "overhead" in info:
        o = info["overhead"]
        rows.append(("memory head overhead", f"+{(o['gflops_ratio'] - 1) * 100:.1f}% GFLOPs, "
                     f"+{(o['params_ratio'] - 1) * 100:.1f}% params vs the backbone"))  # fmt: skip
    for k, v in rows:
        t.add_row(k, str(v))
    Console().print(t)

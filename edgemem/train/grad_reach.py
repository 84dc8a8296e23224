"""How much gradient reaches each past clip of a MeMViT stream at initialisation.

``python -m edgemem.train.grad_reach MODEL [--memory-sampler S] [--memory-block B:L:S ...]
[--memory-compression K/S] [--memory-positions P] [--clips L] [--ages 1,3,12] [--seeds 5] [--json]``: a stream of ``L``
clips of random frames goes through ``train_step`` with back-propagation through time (the default
recipe); the cross-entropy of the last clip's logits is back-propagated and, for each age ``d``, the
norm of the gradient at the frames of the clip ``d`` back is reported as a share of the norm at the
last clip's own frames (mean over seeds, freshly initialised each). A clip the memory does not reach
gets exactly 0. It tells which memory layouts give a distant cue a signal to learn from
(docs/TRAINING.md).
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from edgemem.errors import EdgememError, InputError
from edgemem.models.mvit import MViT
from edgemem.train.memory_layout import memory_layout


def gradient_shares(
    model_name: str,
    clips: int,
    ages: list[int],
    seeds: int = 5,
    sampler: str | None = None,
    blocks: list[str] | None = None,
    compression: str | None = None,
    positions: str | None = None,
) -> dict:
    """``{age: share}``: mean over ``seeds`` of |d loss / d frames| at the clip ``age`` back over the
    same at the last clip; ``sampler``, ``blocks``, ``compression`` and ``positions`` as ``edgemem
    train``'s ``--memory-sampler``, ``--memory-block``, ``--memory-compression`` and ``--memory-positions``."""
    from edgemem.models.registry import create_model

    if clips < 2 or not ages or min(ages) < 1 or max(ages) >= clips:
        raise InputError(f"--ages must be in [1, clips - 1 = {clips - 1}], got {ages}")
    preset = create_model(model_name)
    if not isinstance(preset, MViT) or preset.cfg.memory is None:
        raise InputError(f"{model_name} is not a MeMViT model (no memory to measure)")
    memory = memory_layout(preset.cfg.memory, sampler, blocks, compression, positions)
    totals = dict.fromkeys(ages, 0.0)
    for seed in range(seeds):
        torch.manual_seed(seed)
        model = create_model(model_name, num_classes=2, memory=memory)
        assert isinstance(model, MViT)
        model.train()
        state = model.init_train_state(1)
        frames = [torch.randn(1, *model.input_shape, requires_grad=True) for _ in range(clips)]
        for x in frames:
            logits, state = model.train_step(x, state, bptt=True)
        torch.nn.functional.cross_entropy(logits, torch.tensor([1])).backward()
        last = frames[-1].grad
        assert last is not None  # the last clip's frames always reach its own logits
        own = float(last.norm())
        for a in ages:
            grad = frames[-1 - a].grad
            totals[a] += (0.0 if grad is None else float(grad.norm())) / own / seeds
    return totals


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m edgemem.train.grad_reach", description=__doc__)
    p.add_argument("model", help="a MeMViT preset")
    p.add_argument("--memory-sampler", default=None, help="replace the preset's memory sampler (all, gapN, winN)")
    p.add_argument(
        "--memory-block", action="append", metavar="B:L:S", help="a memory block's own layout, as edgemem train's"
    )
    p.add_argument("--memory-compression", metavar="K/S", help="every memory block's compression, as edgemem train's")
    p.add_argument(
        "--memory-positions", choices=("own", "clip"), help="the memory keys' position tables, as edgemem train's"
    )
    p.add_argument("--clips", type=int, default=20, help="stream length (default 20)")
    p.add_argument("--ages", default="1,3,12,13,14,16", help="comma-separated ages, clips back")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    try:
        try:
            ages = [int(a) for a in args.ages.split(",")]
        except ValueError:
            raise InputError(f"--ages must be comma-separated integers, got {args.ages!r}") from None
        if args.seeds < 1:
            raise InputError(f"--seeds must be >= 1, got {args.seeds}")
        shares = gradient_shares(
            args.model,
            args.clips,
            ages,
            args.seeds,
            args.memory_sampler,
            args.memory_block,
            args.memory_compression,
            args.memory_positions,
        )
    except EdgememError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({str(a): round(s, 5) for a, s in shares.items()}))
    else:
        for a, s in shares.items():
            print(f"{a:3d} clips back: {100 * s:5.1f}% of the last clip's gradient")
    return 0


if __name__ == "__main__":
    sys.exit(main())

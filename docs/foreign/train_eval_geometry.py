"""`edgemem train` with the evaluation's geometry in training: the short side resized to the crop size
and the centre crop (what `edgemem eval` and the runtimes see), horizontal flips kept; no scale
jitter and no random crop. An experiment of docs/TRAINING.md ("The training crop cuts discs"), not
an option of the package: there it lowered both models.

    python docs/foreign/train_eval_geometry.py memvit_tiny --data sm3 --out R --threads 1 --eval-every 1 --seed 1
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import torch
from torch import Tensor

from edgemem.contract import ClipSpec
from edgemem.data import datasets
from edgemem.data.augment import EvalTransform


@dataclass(frozen=True)
class EvalGeometryAugment:
    """The evaluation's transform, then a horizontal flip of half the videos' clips."""

    view: EvalTransform
    flip: bool = True

    def __call__(self, x: Tensor, gen: torch.Generator | None = None) -> Tensor:
        x = self.view(x)
        return x.flip(-1) if self.flip and float(torch.rand(1, generator=gen)) < 0.5 else x


def eval_geometry_augment(clip: ClipSpec, flip: bool = True) -> EvalGeometryAugment:
    return EvalGeometryAugment(datasets.eval_transform(clip), flip)


if __name__ == "__main__":
    datasets.train_augment = eval_geometry_augment
    from edgemem.cli import main

    sys.exit(main(["train", *sys.argv[1:]]))

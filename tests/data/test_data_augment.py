"""Augmentation and test-view crops; evaluation preprocessing equals the runtimes' ClipTransform."""

from __future__ import annotations

import numpy as np
import torch

from edgemem.contract import ClipSpec
from edgemem.data.augment import EvalTransform, TrainAugment, random_crop, spatial_crop, to_frames, train_scales
from edgemem.data.transforms import ClipTransform

MEAN, STD = (0.45, 0.45, 0.45), (0.225, 0.225, 0.225)


def _frames(t=4, h=40, w=60, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (t, h, w, 3), dtype=np.uint8)


def test_eval_transform_matches_inference_preprocessing():
    frames = _frames()
    clip = ClipSpec(4, 1, 32, mean=tuple(MEAN), std=tuple(STD))
    ours = EvalTransform(32, 32, MEAN, STD)(to_frames(frames))
    theirs = ClipTransform(clip)(list(frames))
    assert ours.shape == (3, 4, 32, 32)
    torch.testing.assert_close(ours, torch.from_numpy(theirs))


def test_spatial_crops_span_the_long_side():
    x = torch.arange(40 * 60, dtype=torch.float32).view(1, 1, 40, 60)
    crops = [spatial_crop(x, 32, i, 3) for i in range(3)]
    assert [c[0, 0, 0, 0].item() for c in crops] == [4 * 60 + 0, 4 * 60 + 14, 4 * 60 + 28]
    tall = x.transpose(-1, -2)
    assert spatial_crop(tall, 32, 2, 3).shape[-2:] == (32, 32)
    assert torch.equal(spatial_crop(x, 32, 0, 1), x[..., 4:36, 14:46])


def test_train_augment_jitters_scale_crop_and_flip():
    frames = to_frames(_frames(h=40, w=40))
    lo, hi = train_scales(32)
    assert (lo, hi) == (32, 40)
    aug = TrainAugment(32, lo, hi, MEAN, STD)
    outs = [aug(frames, torch.Generator().manual_seed(i)) for i in range(12)]
    assert all(o.shape == (3, 4, 32, 32) for o in outs)
    assert len({o.sum().item() for o in outs}) > 6, "different seeds give different views"
    assert torch.equal(aug(frames, torch.Generator().manual_seed(3)), outs[3])
    # flip only: same pixels mirrored
    flip_only = TrainAugment(40, 40, 40, MEAN, STD)
    a, b = (flip_only(frames, torch.Generator().manual_seed(i)) for i in range(2))
    assert torch.equal(a, b) or torch.equal(a, b.flip(-1))
    assert any(
        torch.equal(flip_only(frames, torch.Generator().manual_seed(i)).flip(-1), flip_only(frames)) for i in range(10)
    )


def test_random_crop_inside():
    x = torch.zeros(2, 3, 36, 50)
    g = torch.Generator().manual_seed(0)
    assert all(random_crop(x, 32, g).shape == (2, 3, 32, 32) for _ in range(20))

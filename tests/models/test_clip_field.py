"""The model configs' one ``clip: ClipSpec`` field: presets, frame scaling, stored forms old and new."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from edgemem.contract import ClipSpec
from edgemem.errors import CheckpointError, UnsupportedError
from edgemem.models import create_model, from_card, list_models
from edgemem.models.clip_field import FLAT_KEYS
from edgemem.models.mvit_config import MViTConfig
from edgemem.models.pretrained import zoo_dir
from edgemem.models.resnet3d import ResNetConfig
from edgemem.models.x3d import X3DConfig
from edgemem.train.checkpoints import CKPT_DIR, LAST, read_checkpoint_for_resume


def _flat(cfg: Any, frames_key: str) -> dict[str, Any]:
    """``cfg`` as configs were stored before the clip field: flat clip keys, frames before scaling."""
    d = dataclasses.asdict(cfg)
    clip = cfg.clip.to_json()
    del d["clip"]
    return {**d, **{k: v for k, v in clip.items() if k != "frames"}, frames_key: clip["frames"] // cfg.frame_scale}


@pytest.mark.parametrize("name", list_models())
def test_every_preset_card_takes_its_config_clip(name: str) -> None:
    with torch.device("meta"):
        m = create_model(name)
    card = m.model_card()
    config = card.config["backbone"]["config"] if card.family == "cm" else card.config
    assert config["clip"] == card.clip.to_json() and not set(FLAT_KEYS) & set(config)
    assert m.input_shape == card.clip.shape
    with torch.device("meta"):
        assert from_card(card).model_card() == card  # the nested form rebuilds the same model


@pytest.mark.parametrize(
    ("name", "cls", "frames_key", "scale"),
    [
        ("mvit_tiny", MViTConfig, "num_frames", 4),
        ("slow_tiny", ResNetConfig, "frames", 3),
        ("x3d_xs", X3DConfig, "frames", 1),
    ],
)
def test_flat_stored_configs_still_read(name: str, cls: Any, frames_key: str, scale: int) -> None:
    with torch.device("meta"):
        cfg = create_model(name, frame_scale=scale).cfg
    base = create_model(name).cfg.clip if scale == 1 else dataclasses.replace(cfg.clip, frames=cfg.clip.frames // scale)
    assert cfg.clip == dataclasses.replace(base, frames=base.frames * scale) and cfg.frame_scale == scale
    flat = _flat(cfg, frames_key)
    assert flat[frames_key] == base.frames and "clip" not in flat
    assert cls.from_dict(flat) == cfg  # frames x frame_scale


def test_clip_options_are_one_field() -> None:
    m = create_model("mvit_tiny", clip=ClipSpec(frames=4, sampling_rate=2, crop_size=32, target_fps=30), frame_scale=2)
    assert m.cfg.clip.frames == 8 and m.input_shape == (3, 8, 32, 32)
    with pytest.raises(UnsupportedError, match=r"\['crop_size'\].*clip=ClipSpec"):
        create_model("slow_tiny", crop_size=64)
    with pytest.raises(UnsupportedError, match="does not divide"):
        ResNetConfig(clip=ClipSpec(frames=10, sampling_rate=2, crop_size=32), frame_scale=4)


def test_run_started_with_a_flat_card_resumes(tmp_path: Path) -> None:
    """A checkpoint written before the clip field (a shipped one, flat card) resumes into the same preset."""
    (tmp_path / CKPT_DIR).mkdir()
    shutil.copy(zoo_dir() / "mvit_tiny_fs4_cuematch.pyth", tmp_path / CKPT_DIR / LAST)
    model = create_model("mvit_tiny", num_classes=2, frame_scale=4)
    read_checkpoint_for_resume(tmp_path, model, lambda: torch.optim.SGD(model.parameters(), lr=0.1))
    other = create_model("mvit_tiny", num_classes=2, frame_scale=2)
    with pytest.raises(CheckpointError, match="different model"):
        read_checkpoint_for_resume(tmp_path, other, lambda: torch.optim.SGD(other.parameters(), lr=0.1))

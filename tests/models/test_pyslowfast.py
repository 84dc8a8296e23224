"""Importing official PySlowFast/MeMViT YAML configs and .pyth checkpoints."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch
import yaml
from conftest import OFFICIAL_TINY as FIX

from edgemem.contract import ClipSpec
from edgemem.errors import CheckpointError, UnsupportedError
from edgemem.models import load_pyslowfast
from edgemem.models.checkpoint import save_pyth
from edgemem.models.pyslowfast import config_from_pyslowfast


@pytest.fixture(scope="module")
def tree():
    return yaml.safe_load((FIX / "tiny_config_sampler_all.yaml").read_text())


def test_config_fields(tree):
    cfg = config_from_pyslowfast(FIX / "tiny_config_sampler_gap2.yaml")
    assert cfg.clip == ClipSpec(frames=8, sampling_rate=8, crop_size=32, target_fps=30)
    assert (cfg.num_classes, cfg.embed_dim, cfg.depth) == (10, 16, 4)
    mem = cfg.memory
    assert (mem.attn_max_len, mem.sampler, mem.exclude_layers) == (3, "gap2", (1, 3))
    assert (mem.compress_kernel, mem.compress_stride, mem.slots) == ((3, 3, 3), (2, 2, 2), 4)
    assert config_from_pyslowfast(tree) == config_from_pyslowfast(FIX / "tiny_config_sampler_all.yaml")


def test_pyth_loads_exact_weights():
    m = load_pyslowfast(FIX / "tiny_config_sampler_all.yaml", FIX / "tiny_memvit.pyth")
    ref = np.load(FIX / "tiny_memvit_state_dict.npz")
    sd = m.state_dict()
    assert set(sd) == set(ref.files)
    for k in ref.files:
        np.testing.assert_array_equal(sd[k].numpy(), ref[k])
    shapes = dict(line.split(" ", 1) for line in (FIX / "tiny_state_dict_shapes.txt").read_text().splitlines())
    assert {k: str(tuple(v.shape)) for k, v in sd.items()} == shapes
    assert str(m.model_card().source).endswith("tiny_config_sampler_all.yaml")


def test_mismatching_checkpoint_lists_keys_and_loads_nothing(tmp_path, tree):
    sd = {k: torch.from_numpy(v) for k, v in np.load(FIX / "tiny_memvit_state_dict.npz").items()}
    bad = dict(sd)
    del bad["blocks.0.attn.q.weight"]
    bad["blocks.0.attn.extra"] = torch.zeros(1)
    bad["norm.weight"] = torch.zeros(5)
    save_pyth(tmp_path / "bad.pyth", {"model_state": bad, "epoch": 1})
    with pytest.raises(CheckpointError) as e:
        load_pyslowfast(tree, tmp_path / "bad.pyth")
    msg = str(e.value)
    assert "blocks.0.attn.q.weight" in msg and "blocks.0.attn.extra" in msg and "norm.weight" in msg
    assert "\n" not in msg


@pytest.mark.parametrize("content", [b"not a checkpoint", b""])
def test_unreadable_checkpoint(tmp_path, tree, content):
    p = tmp_path / "x.pyth"
    p.write_bytes(content)
    with pytest.raises(CheckpointError):
        load_pyslowfast(tree, p)
    with pytest.raises(CheckpointError, match="not found"):
        load_pyslowfast(tree, tmp_path / "missing.pyth")


def test_foreign_checkpoint(tmp_path, tree):
    torch.save({"weights": [1, 2, 3]}, tmp_path / "f.pyth")
    with pytest.raises(CheckpointError, match="not a PySlowFast checkpoint"):
        load_pyslowfast(tree, tmp_path / "f.pyth")


@pytest.mark.parametrize(
    "key,value,what",
    [
        ("DETECTION.ENABLE", True, "detection"),
        ("MVIT.CAUSAL", True, "causal"),
        ("MVIT.POOL_FIRST", False, "POOL_FIRST"),
        ("MEMVIT.SAMPLER", "random", "SAMPLER"),
        ("MEMVIT.SAMPLER", "win4", "SAMPLER"),  # edgemem's window memory is not an official option
        ("MODEL.ARCH", "slowfast", "ARCH"),
        ("MVIT.MODE", "lstm", "MODE"),
    ],
)
def test_unsupported_options(tree, key, value, what):
    t = copy.deepcopy(tree)
    node = t
    *parents, leaf = key.split(".")
    for p in parents:
        node = node[p]
    node[leaf] = value
    with pytest.raises(UnsupportedError, match=f"not supported.*{what}"):
        load_pyslowfast(t)


def test_official_defaults_fill_missing_keys():
    tiny = {
        "MODEL": {"ARCH": "mvit", "MODEL_NAME": "MViT", "NUM_CLASSES": 5},
        "DATA": {"NUM_FRAMES": 4, "TRAIN_CROP_SIZE": 32},
        "MVIT": {"DEPTH": 2, "EMBED_DIM": 8, "POOL_FIRST": True, "PATCH_PADDING": [1, 3, 3]},
    }
    cfg = config_from_pyslowfast(tiny)
    # Official defaults: absolute position embedding on, relative off, no memory.
    assert cfg.use_abs_pos and not cfg.rel_pos_spatial and cfg.memory is None and cfg.clip.sampling_rate == 8
    m = load_pyslowfast(tiny)
    assert "pos_embed" in m.state_dict()
    assert m(torch.zeros(1, 3, 4, 32, 32)).shape == (1, 5)


def test_memoryless_import_of_detection_style_keys(tmp_path, tree):
    """Box-block weights of a config with BOX_DEPTH (never used without detection) are skipped."""
    t = copy.deepcopy(tree)
    t["MVIT"]["BOX_DEPTH"] = 1
    sd = {k: torch.from_numpy(v) for k, v in np.load(FIX / "tiny_memvit_state_dict.npz").items()}
    sd["box_blocks.0.norm1.weight"] = torch.ones(32)
    save_pyth(tmp_path / "b.pyth", {"model_state": sd})
    m = load_pyslowfast(t, tmp_path / "b.pyth")
    assert "box_blocks.0.norm1.weight" not in m.state_dict()


def test_clip_backbone_configs_go_through_load_pyslowfast(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """One entry point for every official config: ResNet/X3D YAMLs build clip backbones."""
    from edgemem.models import create_model
    from edgemem.models.clip_base import ClipBackbone

    cfg = {
        "MODEL": {"ARCH": "x3d", "MODEL_NAME": "X3D", "NUM_CLASSES": 400},
        "DATA": {"NUM_FRAMES": 13, "SAMPLING_RATE": 6, "TRAIN_CROP_SIZE": 160, "INPUT_CHANNEL_NUM": [3]},
        "X3D": {"WIDTH_FACTOR": 2.0, "DEPTH_FACTOR": 2.2, "BOTTLENECK_FACTOR": 2.25, "DIM_C5": 2048},
        "RESNET": {"ZERO_INIT_FINAL_BN": True, "TRANS_FUNC": "x3d_transform"},  # as the official X3D_S.yaml
    }
    (tmp_path / "X3D_S.yaml").write_text(yaml.safe_dump(cfg))
    with torch.device("meta"):
        model = load_pyslowfast(tmp_path / "X3D_S.yaml")
        assert isinstance(model, ClipBackbone)
        assert model.cfg == dataclasses.replace(create_model("x3d_s").cfg, head_pool=(13, 5, 5))

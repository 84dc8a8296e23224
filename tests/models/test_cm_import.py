"""Importers on synthetic files in the official layouts: Caffe2 .pkl blobs, PyTorchVideo-named .pyth."""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from edgemem.contract import ClipSpec
from edgemem.errors import CheckpointError
from edgemem.models import create_model
from edgemem.models.caffe2_import import caffe2_name, read_caffe2_pkl
from edgemem.models.clip_checkpoint import load_clip_checkpoint
from edgemem.models.resnet3d import ResNet3D, ResNetConfig
from edgemem.models.x3d import X3D, X3DConfig

torch.set_num_threads(1)


def _tiny_i3d_nln() -> ResNet3D:
    cfg = ResNetConfig(
        arch="i3d", depth=50, width_per_group=2, nonlocal_location=((), (1,), (0, 2), ()),
        num_classes=5, clip=ClipSpec(frames=4, sampling_rate=8, crop_size=32),
    )  # fmt: skip
    return ResNet3D(cfg)


def _randomise(model: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for k, t in model.state_dict().items():
            if t.is_floating_point():
                t.copy_(
                    torch.rand(t.shape, generator=g) + 0.5
                    if "running_var" in k
                    else torch.randn(t.shape, generator=g) * 0.3
                )


def _to_caffe2(name: str) -> str:
    """PySlowFast name -> Caffe2 blob name, written independently of the importer (inverse direction)."""
    module, attr = name.rsplit(".", 1)
    bn = module.endswith("bn")
    suffix = {"weight": "s" if bn else "w", "bias": "b", "running_mean": "rm", "running_var": "riv"}[attr]
    if module == "s1.pathway0_stem.conv":
        return f"conv1_{suffix}"
    if module == "s1.pathway0_stem.bn":
        return f"res_conv1_bn_{suffix}"
    if module == "head.projection":
        return f"pred_{suffix}"
    m = re.fullmatch(r"s(\d)\.pathway0_nonlocal(\d+)\.(conv_(\w+)|bn)", module)
    if m:
        part = m.group(4) if m.group(4) else "bn"
        return f"nonlocal_conv{m.group(1)}_{m.group(2)}_{part}_{suffix}"
    m = re.fullmatch(r"s(\d)\.pathway0_res(\d+)\.(branch1|branch1_bn|branch2\.([abc])(_bn)?)", module)
    assert m, name
    stage, block, what = m.group(1), m.group(2), m.group(3)
    if what.startswith("branch1"):
        return f"res{stage}_{block}_{what}_{suffix}"
    return f"res{stage}_{block}_branch2{m.group(4)}{m.group(5) or ''}_{suffix}"


def _write_pkl(path: Path, model: torch.nn.Module) -> None:
    blobs = {}
    for k, v in model.state_dict().items():
        if k.endswith("num_batches_tracked"):
            continue
        blobs[_to_caffe2(k)] = v.numpy().astype(np.float32)
        blobs[_to_caffe2(k) + "_momentum"] = np.zeros_like(blobs[_to_caffe2(k)])
    blobs["lr"] = np.array([0.1], np.float32)
    blobs["model_iter"] = np.array([1000], np.int64)
    with path.open("wb") as f:
        pickle.dump({"blobs": blobs}, f, protocol=2)


def test_caffe2_pkl_blobs_load_and_reproduce_outputs(tmp_path: Path) -> None:
    src = _tiny_i3d_nln()
    _randomise(src, 0)
    _write_pkl(tmp_path / "I3D_NLN_8x8_R50.pkl", src)
    dst = _tiny_i3d_nln()
    assert load_clip_checkpoint(dst, tmp_path / "I3D_NLN_8x8_R50.pkl") == "caffe2"
    x = torch.randn(1, 3, 4, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(dst.eval()(x), src.eval()(x))


def test_caffe2_names_of_the_official_files() -> None:
    assert caffe2_name("res4_5_branch2b_bn_riv") == "s4.pathway0_res5.branch2.b_bn.running_var"
    assert caffe2_name("nonlocal_conv3_1_theta_w") == "s3.pathway0_nonlocal1.conv_theta.weight"
    assert caffe2_name("t_res2_0_branch1_w") == "s2.pathway1_res0.branch1.weight"
    assert caffe2_name("t_pool1_subsample_bn_rm") == "s1_fuse.bn.running_mean"
    assert caffe2_name("t_res3_3_branch2c_bn_subsample_w") == "s3_fuse.conv_f2s.weight"
    assert caffe2_name("conv1_w_momentum") is None
    with pytest.raises(CheckpointError, match="unknown Caffe2 blob"):
        caffe2_name("fc1000_w")


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_without_running(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    bad = tmp_path / "evil.pkl"
    with bad.open("wb") as f:
        pickle.dump({"blobs": {"conv1_w": np.zeros(3, np.float32), "x": _Evil(marker)}}, f, protocol=2)
    with pytest.raises(CheckpointError, match="refused global 'posix.system'|refused global 'os.system'"):
        read_caffe2_pkl(bad)
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="refused"):
        load_clip_checkpoint(_tiny_i3d_nln(), bad)
    assert not marker.exists()
    # builtins are refused too, even harmless-looking ones
    with (tmp_path / "eval.pkl").open("wb") as f:
        pickle.dump({"blobs": {"a": complex(1, 2)}}, f, protocol=2)
    with pytest.raises(CheckpointError, match="refused global '(__builtin__|builtins).complex'"):
        read_caffe2_pkl(tmp_path / "eval.pkl")
    # arrays of objects or strings are not weights
    with (tmp_path / "str.pkl").open("wb") as f:
        pickle.dump({"blobs": {"conv1_w": "not an array"}}, f, protocol=2)
    with pytest.raises(CheckpointError, match="not a numeric array"):
        read_caffe2_pkl(tmp_path / "str.pkl")


def test_caffe2_mismatch_is_listed(tmp_path: Path) -> None:
    src = _tiny_i3d_nln()
    _write_pkl(tmp_path / "m.pkl", src)
    with pytest.raises(CheckpointError, match="missing|unexpected"):
        load_clip_checkpoint(create_model("slow_tiny"), tmp_path / "m.pkl")


# ----------------------------------------------------------------------------- PyTorchVideo names
def _to_ptv(name: str, stage_blocks: dict[int, int], head: int, x3d: bool = False) -> str:
    """PySlowFast name -> PyTorchVideo hub name (independent inverse of the importer's renames)."""
    module, attr = name.rsplit(".", 1)
    stem = {"conv_xy": "conv.conv_t", "conv": "conv", "bn": "norm"}
    m = re.fullmatch(r"s1\.pathway0_stem\.(\w+)", module)
    if m:
        if m.group(1) == "conv" and x3d:
            return f"blocks.0.conv.conv_xy.{attr}"
        return f"blocks.0.{stem[m.group(1)]}.{attr}"
    m = re.fullmatch(r"s(\d)\.pathway0_res(\d+)\.(.*)", module)
    if m:
        sub = m.group(3)
        sub = {"branch1": "branch1_conv", "branch1_bn": "branch1_norm", "branch2.se.fc1": "branch2.norm_b.1.block.0",
               "branch2.se.fc2": "branch2.norm_b.1.block.2"}.get(sub, sub)  # fmt: skip
        sub = re.sub(r"^branch2\.([abc])$", r"branch2.conv_\1", sub)
        sub = re.sub(r"^branch2\.([abc])_bn$", r"branch2.norm_\1", sub)
        if sub == "branch2.norm_b" and x3d:
            sub = "branch2.norm_b.0"
        return f"blocks.{stage_blocks[int(m.group(1))]}.res_blocks.{m.group(2)}.{sub}.{attr}"
    head_map = {"head.projection": "proj", "head.conv_5": "pool.pre_conv", "head.conv_5_bn": "pool.pre_norm",
                "head.lin_5": "pool.post_conv"}  # fmt: skip
    return f"blocks.{head}.{head_map[module]}.{attr}"


def _tiny_x3d() -> X3D:
    return X3D(X3DConfig(dim_c1=4, dim_c5=32, depth_factor=1.0, num_classes=5, clip=ClipSpec(4, 6, 32)))


def test_pytorchvideo_x3d_pyth(tmp_path: Path) -> None:
    src = _tiny_x3d()
    _randomise(src, 1)
    state = {}
    for k, v in src.state_dict().items():
        if k.startswith("s2.pathway0_res0.branch1_bn."):
            continue  # PyTorchVideo has no BN after a stride-only shortcut
        state[_to_ptv(k, {2: 1, 3: 2, 4: 3, 5: 4}, 5, x3d=True)] = v
    assert "blocks.1.res_blocks.0.branch2.norm_b.1.block.0.weight" in state
    assert "blocks.0.conv.conv_t.weight" in state and tuple(state["blocks.0.conv.conv_t.weight"].shape[2:]) == (1, 3, 3)
    torch.save({"model_state": state}, tmp_path / "X3D_XS.pyth")
    with torch.no_grad():  # the source's stride-only shortcut BN must be the identity for outputs to agree
        bn = src.s2.pathway0_res0.branch1_bn
        bn.weight.fill_(1), bn.bias.zero_(), bn.running_mean.zero_(), bn.running_var.fill_(1 - bn.eps)
    dst = _tiny_x3d()
    assert load_clip_checkpoint(dst, tmp_path / "X3D_XS.pyth") == "pytorchvideo"
    x = torch.randn(2, 3, 4, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(dst.eval()(x), src.eval()(x))


def test_pytorchvideo_i3d_pyth_with_pool_block_into_cm_backbone(tmp_path: Path) -> None:
    src = create_model("slow_tiny", arch="i3d")
    _randomise(src, 2)
    # I3D in PyTorchVideo: stem, res2, pool (no parameters), res3, res4, res5, head
    state = {_to_ptv(k, {2: 1, 3: 3, 4: 4, 5: 5}, 6): v for k, v in src.state_dict().items()}
    torch.save(state, tmp_path / "I3D_8x8_R50.pyth")  # a bare state dict, as some hub files are
    cm = create_model("cm_slow_tiny", arch="i3d")
    assert load_clip_checkpoint(cm, tmp_path / "I3D_8x8_R50.pyth") == "pytorchvideo"
    x = torch.randn(1, 3, 8, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(cm.backbone.eval()(x), src.eval()(x))
    torch.save({"model_state": {**state, "blocks.9.weird.weight": torch.zeros(1)}}, tmp_path / "bad.pyth")
    with pytest.raises(CheckpointError, match="unknown PyTorchVideo keys"):
        load_clip_checkpoint(cm, tmp_path / "bad.pyth")


def test_pyslowfast_pyth_round_trip(tmp_path: Path) -> None:
    from edgemem.models.checkpoint import save_pyth

    src = create_model("x3d_xs", num_classes=7)
    save_pyth(tmp_path / "x3d.pyth", {"model_state": src.state_dict(), "epoch": 1})
    dst = create_model("cm_x3d_s", num_classes=7, clip=ClipSpec(frames=4, sampling_rate=6, crop_size=160))
    assert load_clip_checkpoint(dst, tmp_path / "x3d.pyth") == "pyslowfast"
    for k, v in src.state_dict().items():
        torch.testing.assert_close(dst.backbone.state_dict()[k], v)


def test_official_model_cards_name_presets_and_formats() -> None:
    import yaml

    from edgemem.models import is_model
    from edgemem.models.pretrained import zoo_dir

    cards = sorted(zoo_dir().glob("k400_*.yaml"))
    assert len(cards) >= 7
    for path in cards:
        card = yaml.safe_load(path.read_text())
        assert is_model(card["preset"]), path.name
        assert card["url"].startswith("https://dl.fbaipublicfiles.com/pyslowfast/")
        assert card["format"] == ("caffe2" if card["url"].endswith(".pkl") else "pyslowfast")
        assert card["views"] == {"spatial": 3, "temporal": 10} and "file" not in card

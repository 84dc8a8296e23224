"""Checkpoints: ``export PRESET --checkpoint FILE`` with a file edgemem wrote takes its card (head size,
class names); another preset's file is refused naming the MODEL to use; a pickle carrying code is
refused without advice to load it unsafely; NaN/inf weights are refused in every format."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from edgemem.cli import main
from edgemem.errors import CheckpointError, NonFiniteError
from edgemem.models import create_model
from edgemem.models.pretrained import zoo_cards
from edgemem.models.resolve import resolve_model

torch.set_num_threads(1)


def zoo_file(name: str) -> str:
    return str(zoo_cards()[name]["path"])


def test_preset_with_an_edgemem_checkpoint_takes_its_card() -> None:
    model = resolve_model("memvit_tiny", zoo_file("memvit_tiny_cuematch"))
    shipped = create_model("memvit_tiny_cuematch")
    assert model.num_classes == 2 and model.class_names == ["different", "same"]
    own = shipped.state_dict()
    assert all(torch.equal(v, own[k]) for k, v in model.state_dict().items())
    # the frame-scaled baseline of the same weights (bench --frame-scale) keeps the card's head
    fs2 = resolve_model("slow_tiny", zoo_file("slow_tiny_cuematch"), frame_scale=2)
    assert fs2.num_classes == 2 and fs2.model_card().frame_scale == 2


def test_checkpoint_of_another_preset_names_the_model_to_use() -> None:
    with pytest.raises(CheckpointError, match="holds a 'memvit_tiny' model.*`memvit_tiny`.*`memvit_tiny_cuematch`"):
        resolve_model("mvit_tiny", zoo_file("memvit_tiny_cuematch"))


def test_export_preset_with_a_shipped_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from edgemem.contract import read_contract

    out = tmp_path / "m.onnx"
    rc = main(["export", "memvit_tiny", "--checkpoint", zoo_file("memvit_tiny_cuematch"), "--out", str(out),
               "--no-verify"])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    card = read_contract(out).card
    assert card.num_classes == 2 and card.class_names == ("different", "same")


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pyth_is_refused_without_unsafe_advice(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    marker, path = tmp_path / "ran", tmp_path / "evil.pyth"
    torch.save({"model_state": {"w": torch.zeros(1)}, "extra": _Evil(marker)}, path)
    rc = main(["export", "memvit_tiny", "--checkpoint", str(path), "--out", str(tmp_path / "m.onnx")])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert "refused checkpoint" in err and "system" in err
    assert "weights_only" not in err and "trusted source" not in err.lower() and "False" not in err
    assert not marker.exists() and not (tmp_path / "m.onnx").exists()


def test_nan_weights_in_a_pyth_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = torch.load(zoo_file("memvit_tiny_cuematch"), map_location="cpu", weights_only=True)
    key = next(k for k, v in ckpt["model_state"].items() if v.is_floating_point())
    ckpt["model_state"][key] = ckpt["model_state"][key].clone()
    ckpt["model_state"][key].view(-1)[0] = float("inf")
    path = tmp_path / "nan.pyth"
    torch.save(ckpt, path)
    rc = main(["export", "memvit_tiny", "--checkpoint", str(path), "--out", str(tmp_path / "m.onnx")])
    err = capsys.readouterr().err
    assert rc == 2 and "NaN or infinite" in err and key in err and "nan.pyth" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nan.pyth"]


def test_nan_weights_in_a_caffe2_pkl_are_refused(tmp_path: Path) -> None:
    from edgemem.models.clip_checkpoint import load_clip_checkpoint

    model = create_model("slow_tiny")
    w = model.state_dict()["s1.pathway0_stem.conv.weight"].numpy().copy()
    w[0, 0, 0, 0, 0] = np.nan
    path = tmp_path / "c2.pkl"
    with open(path, "wb") as f:
        pickle.dump({"blobs": {"conv1_w": w}}, f, protocol=2)
    with pytest.raises(NonFiniteError, match=r"c2.pkl.*'s1.pathway0_stem.conv.weight'"):
        load_clip_checkpoint(model, path)


def test_one_card_reader(tmp_path: Path) -> None:
    """``card_of``: an official checkpoint has no card (None or an error), a malformed card is an error."""
    from edgemem.models.checkpoint import card_of, read_pyth, save_pyth

    save_pyth(tmp_path / "a.pyth", {"model_state": {"w": torch.zeros(2)}, "edgemem_card": "{not json"})
    save_pyth(tmp_path / "b.pyth", {"model_state": {"w": torch.zeros(2)}})
    assert card_of(read_pyth(tmp_path / "b.pyth"), "b", required=False) is None
    with pytest.raises(CheckpointError, match="no model card"):
        card_of(read_pyth(tmp_path / "b.pyth"), "b")
    with pytest.raises(CheckpointError, match="malformed"):
        card_of(read_pyth(tmp_path / "a.pyth"), "a", required=False)


def test_models_zoo_lists_each_shipped_file_with_its_preset_and_frame_scale(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "--zoo"]) == 0
    rows = {line.split("\t")[0]: line.split("\t") for line in capsys.readouterr().out.splitlines()}
    assert set(rows) == set(zoo_cards())
    assert rows["memvit_tiny_cuematch"][1] == "memvit_tiny"
    assert rows["mvit_tiny_fs4_cuematch"][1] == "mvit_tiny --frame-scale 4"  # not the 1-clip mvit_tiny


def test_a_zoo_card_with_a_repeated_key_is_malformed(tmp_path: Path) -> None:
    """A card whose ``preset`` is given twice would otherwise build whichever came last."""
    (tmp_path / "w.yaml").write_text("file: w.pyth\npreset: memvit_tiny\npreset: mvit_tiny\n")
    with pytest.raises(CheckpointError, match="malformed zoo card .*duplicate key 'preset'"):
        zoo_cards(tmp_path)

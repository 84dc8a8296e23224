"""CM infusion warm-up: residual infusion for W epochs, then gating with a fresh ``o`` (the final model)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from conftest import TINY_TRAIN as TINY

from edgemem.cli import main
from edgemem.data.datasets import VideoDir
from edgemem.models.checkpoint import card_of, read_pyth
from edgemem.models.registry import create_model
from edgemem.train.checkpoints import load_trained
from edgemem.train.cm_train import CMRecipe
from edgemem.train.distributed import DistInfo
from edgemem.train.optim import build_optimizer


def _train(args: list[str]) -> int:
    torch.set_num_threads(1)
    return main(["train", *args])


def _infusion(file: Path) -> str:
    return card_of(read_pyth(file), file).config["infusion"]


def test_switch_happens_at_the_warmup_epoch(data: Path) -> None:
    torch.manual_seed(0)
    model = create_model("cm_slow_tiny", num_classes=2, clips=2)
    opt = build_optimizer(model, "adamw", 1e-3, 0.05)
    options = {"batch_size": 2, "infusion": "gating", "infusion_warmup": 2}
    items = VideoDir(str(data))
    recipe = CMRecipe(model, options, items.split("train"), items.split("val"), DistInfo(0, 1, 0, torch.device("cpu")))
    assert recipe.start_epoch(0, opt) == {"infusion": "residual", "warmup_epochs": 2}
    assert model.cm.infusion == "residual"
    model(torch.randn(2, 2, *model.input_shape)).sum().backward()
    opt.step()
    o_before = model.cm.o.weight.detach().clone()
    o_ids = {id(p) for p in model.cm.o.parameters()}
    assert {id(p) for p in opt.state} > o_ids  # every parameter has AdamW state after the step
    assert recipe.start_epoch(1, opt) is None and model.cm.infusion == "residual"
    note = recipe.start_epoch(2, opt)
    assert note is not None and note["infusion"] == "gating" and model.cm.infusion == "gating"
    assert not torch.equal(model.cm.o.weight, o_before)
    kept = {id(p) for p in opt.state}
    assert not kept & o_ids and kept  # o's state dropped, the rest kept
    assert recipe.start_epoch(3, opt) is None and model.cm.infusion == "gating"
    # Another rank (another global RNG state) re-initialises o to the same weights (DDP keeps them equal).
    fresh = model.cm.o.weight.detach().clone()
    model.cm.infusion = "residual"
    torch.manual_seed(12345)
    recipe.start_epoch(2, opt)
    assert torch.equal(model.cm.o.weight, fresh)


def test_warmup_run_checkpoints_card_and_resume(data: Path, tmp_path: Path, capsys) -> None:
    common = ["cm_slow_tiny", "--data", str(data), "--clips-per-video", "2", "--epochs", "2"]
    common += ["--batch-size", "2", "--threads", "1", "--eval-every", "1", "--infusion-warmup", "1"]
    a = tmp_path / "a"
    assert _train([*common, "--out", str(a)]) == 0
    changes = [json.loads(x) for x in (a / "metrics.jsonl").read_text().splitlines() if '"change"' in x]
    assert [(c["epoch"], c["infusion"]) for c in changes] == [(1, "residual"), (2, "gating")]
    config = json.loads((a / "config.json").read_text())["options"]
    assert (config["infusion"], config["infusion_warmup"]) == ("gating", 1)
    ck = a / "checkpoints"
    assert _infusion(ck / "checkpoint_epoch_00001.pyth") == "residual"  # honest card during the warm-up
    for name in ("checkpoint_epoch_00002.pyth", "last.pyth", "best.pyth"):
        assert _infusion(ck / name) == "gating"
    assert read_pyth(ck / "best.pyth")["epoch"] == 2  # the warm-up's score does not rank the gating model
    model, _ = load_trained(a)
    assert model.cm.infusion == "gating"
    # Resume across the switch: cut a copy back to epoch 1, continue, get the same weights.
    b = tmp_path / "b"
    assert _train([*common, "--out", str(b)]) == 0
    first = read_pyth(b / "checkpoints" / "checkpoint_epoch_00001.pyth")
    for name in ("checkpoint_epoch_00002.pyth", "last.pyth", "best.pyth"):
        (b / "checkpoints" / name).unlink()
    torch.save(first, b / "checkpoints" / "last.pyth")
    capsys.readouterr()
    assert main(["train", *common[:-1], "0", "--out", str(b), "--resume"]) == 2
    assert "--infusion-warmup 1, not 0" in capsys.readouterr().err
    assert _train([*common, "--out", str(b), "--resume"]) == 0
    straight, resumed = read_pyth(ck / "last.pyth"), read_pyth(b / "checkpoints" / "last.pyth")
    for k, v in straight["model_state"].items():
        torch.testing.assert_close(resumed["model_state"][k], v, rtol=0, atol=0, msg=k)


def test_warmup_refused_where_it_does_not_apply(data: Path, tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    for args, needle in (
        (["mvit_tiny", "--infusion-warmup", "1"], "CM models only"),
        (["cm_slow_tiny", "--infusion", "residual", "--infusion-warmup", "1"], "this one is residual"),
        (["cm_slow_tiny", "--infusion-warmup", "1"], "no gating epoch"),
        (["cm_slow_tiny", "--infusion-warmup", "-1"], ">= 0"),
    ):
        assert main(["train", *args, "--data", str(data), "--out", str(run), *TINY]) == 2
        err = capsys.readouterr().err
        assert needle in err and "Traceback" not in err, err
    assert not run.exists()

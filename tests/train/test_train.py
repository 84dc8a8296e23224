"""End-to-end training of each family on a tiny real dataset (a few steps), resume, torchrun DDP."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import TINY_TRAIN as TINY

from edgemem.cli import main
from edgemem.data.synth import TaskOptions, generate
from edgemem.export.onnx import to_onnx
from edgemem.models.checkpoint import read_pyth
from edgemem.train import trainer
from edgemem.train.checkpoints import load_trained
from edgemem.train.trainer import default_epochs


def _train(args: list[str]) -> int:
    torch.set_num_threads(1)
    return main(["train", *args])


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize(
    "model, extra",
    [
        ("mvit_tiny", []),
        ("mvit_tiny", ["--frame-scale", "2", "--no-flip"]),
        ("memvit_tiny", ["--memory-drop", "0.3", "--curriculum", "0"]),
        ("slow_tiny", ["--optimizer", "sgd"]),
        ("cm_slow_tiny", ["--clips-per-video", "3", "--alpha", "0.5"]),
        ("cm_slow_tiny", ["--clips-per-video", "2", "--multi-iteration"]),
        ("cm_slow_tiny", ["--clips-per-video", "2", "--no-batch-reduction", "--infusion", "residual"]),
    ],
)
def test_train_each_family_end_to_end(data: Path, tmp_path: Path, model: str, extra: list[str], capsys) -> None:
    run = tmp_path / "run"
    assert _train([model, "--data", str(data), "--out", str(run), *TINY, *extra]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["epochs"] == 1 and 0.0 <= summary["val_top1"] <= 1.0
    files = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert files == ["best.pyth", "checkpoint_epoch_00001.pyth", "last.pyth"]
    ckpt = read_pyth(run / "checkpoints" / "checkpoint_epoch_00001.pyth")
    assert {"model_state", "optimizer_state", "epoch", "cfg"} <= set(ckpt) and ckpt["epoch"] == 1
    assert isinstance(ckpt["cfg"], str) and "MODEL_CARD" in ckpt["cfg"]
    epochs = [m for m in _metrics(run) if m["kind"] == "epoch"]
    assert len(epochs) == 1 and "val_top1" in epochs[0] and epochs[0]["train_loss"] > 0
    config = json.loads((run / "config.json").read_text())
    assert config["options"]["no_flip"] is ("--no-flip" in extra)
    if model == "cm_slow_tiny":
        assert config["model_card"]["config"]["batch_reduction"] == ("--no-batch-reduction" not in extra)
        assert config["model_card"]["config"]["infusion"] == ("residual" if "--infusion" in extra else "gating")
    if model == "memvit_tiny":  # the defaults docs/TRAINING.md documents for long-range tasks
        assert config["options"]["stream_loss"] == "last" and config["options"]["batch_size"] == 2
    assert config["model_card"]["num_classes"] == 2 and config["model_card"]["class_names"] == ["different", "same"]
    trained, _ = load_trained(run)
    assert trained.model_card().clip.frames == config["model_card"]["clip"]["frames"]
    assert not [p for p in run.rglob("*") if ".tmp" in p.name]

    assert main(["eval", str(run), "--data", str(data), "--json"]) == 0
    m = json.loads(capsys.readouterr().out)
    assert 0.0 <= m["top1"] <= m["top5"] <= 1.0 and m["videos"] == 2
    assert len(m["clip_top1_by_position"]) >= 1


def test_memvit_last_clip_loss_steps_once_per_group_of_videos_on_unequal_lengths(tmp_path: Path) -> None:
    """Videos of 2 and 3 clips: with the last clip's loss (the default) training deals them in groups
    that end together, so one epoch of 4 videos at batch 2 steps twice, on full batches (with BPTT a
    step inside a video would cut its history); ``--stream-loss all`` steps at every iteration."""
    mixed = tmp_path / "mixed"  # --lead-clips 1 at distance 1: these 4 videos are 3, 2, 3 and 2 clips long
    generate("rel-match", mixed, videos=4, val=1, size=32, seed=2, options=TaskOptions(distance=1, lead_clips=1))
    steps = {}
    for name, extra in {
        "bptt": [],
        "pipelined": ["--memory-grad", "pipelined"],
        "all": ["--memory-grad", "pipelined", "--stream-loss", "all"],
    }.items():
        run = tmp_path / name
        assert _train(["memvit_tiny", "--data", str(mixed), "--out", str(run), *TINY, "--seed", "1", *extra]) == 0
        steps[name] = [m for m in _metrics(run) if m["kind"] == "epoch"][0]["step"]
    assert steps["bptt"] == steps["pipelined"] == 2 and steps["all"] >= 5  # 10 clips over 2 slots


def test_resume_gives_the_same_state(data: Path, tmp_path: Path, capsys) -> None:
    """Two epochs in one go == one epoch, then --resume for the second (weights and optimizer)."""
    common = ["memvit_tiny", "--data", str(data), "--batch-size", "2", "--threads", "1", "--eval-every", "0"]
    assert _train([*common, "--out", str(tmp_path / "a"), "--epochs", "2"]) == 0
    b = tmp_path / "b"
    # A run interrupted after epoch 1: train the same schedule, then cut its files back to epoch 1.
    assert _train([*common, "--out", str(b), "--epochs", "2"]) == 0
    ckpt_dir = b / "checkpoints"
    first = read_pyth(ckpt_dir / "checkpoint_epoch_00001.pyth")
    for name in ("checkpoint_epoch_00002.pyth", "last.pyth", "best.pyth"):
        (ckpt_dir / name).unlink()
    torch.save(first, ckpt_dir / "last.pyth")
    for other, said in (
        (["--lr-hold", "0.2"], "trained with --lr-hold 0.0, not 0.2"),  # another schedule
        (["--memory-lr-scale", "1"], "trained with --memory-lr-scale 10.0, not 1.0"),  # other parameter groups
        (["--no-flip"], "trained without --no-flip"),
    ):
        assert _train([*common, "--out", str(b), "--epochs", "2", "--resume", *other]) == 2
        assert said in capsys.readouterr().err
    assert _train([*common, "--out", str(b), "--epochs", "2", "--resume"]) == 0  # the run's own options
    options = json.loads((b / "config.json").read_text())["options"]
    assert options["lr_hold"] == 0.0 and options["memory_lr_scale"] == 10.0 and options["no_flip"] is False
    straight = read_pyth(tmp_path / "a" / "checkpoints" / "last.pyth")
    resumed = read_pyth(ckpt_dir / "last.pyth")
    assert resumed["epoch"] == straight["epoch"] == 2
    for k, v in straight["model_state"].items():
        torch.testing.assert_close(resumed["model_state"][k], v, rtol=0, atol=0, msg=k)
    s_opt, r_opt = straight["optimizer_state"]["state"], resumed["optimizer_state"]["state"]
    for i in s_opt:
        torch.testing.assert_close(r_opt[i]["exp_avg"], s_opt[i]["exp_avg"], rtol=0, atol=0)


def test_a_dataset_that_says_flip_false_trains_without_flips(data: Path, tmp_path: Path, caplog) -> None:
    """``task.json`` ``"flip": false`` turns training's flips off as ``--no-flip`` does, and says so;
    a run trained with flips does not resume on it."""
    mirrored = tmp_path / "mirrored"
    shutil.copytree(data, mirrored)
    task = json.loads((mirrored / "task.json").read_text())
    (mirrored / "task.json").write_text(json.dumps(task | {"flip": False}))
    run = tmp_path / "run"
    assert _train(["mvit_tiny", "--data", str(mirrored), "--out", str(run), *TINY]) == 0
    assert json.loads((run / "config.json").read_text())["options"]["no_flip"] is True
    assert 'task.json says "flip": false' in caplog.text
    flipped = tmp_path / "flipped"
    assert _train(["mvit_tiny", "--data", str(data), "--out", str(flipped), *TINY, "--epochs", "2"]) == 0
    (flipped / "checkpoints" / "last.pyth").write_bytes(
        (flipped / "checkpoints" / "checkpoint_epoch_00001.pyth").read_bytes()
    )
    args = ["mvit_tiny", "--data", str(mirrored), "--out", str(flipped), *TINY, "--epochs", "2", "--resume"]
    assert _train(args) == 2


def test_checkpoint_every_keeps_epoch_files_on_its_period_and_the_last(data: Path, tmp_path: Path, capsys) -> None:
    common = ["mvit_tiny", "--data", str(data), "--batch-size", "2", "--threads", "1", "--eval-every", "0"]
    for every, kept in (("2", ["checkpoint_epoch_00002.pyth", "checkpoint_epoch_00003.pyth"]), ("0", [])):
        run = tmp_path / every
        assert _train([*common, "--out", str(run), "--epochs", "3", "--checkpoint-every", every]) == 0
        assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.pyth", *kept, "last.pyth"]
        assert read_pyth(run / "checkpoints" / "last.pyth")["epoch"] == 3
        assert json.loads((run / "config.json").read_text())["options"]["checkpoint_every"] == int(every)
    capsys.readouterr()
    assert _train([*common, "--out", str(tmp_path / "bad"), "--checkpoint-every", "-1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("--checkpoint-every must be >= 0 (0: last and best only), got -1") and "\n" not in err
    assert not (tmp_path / "bad").exists()


def test_default_epochs_see_9600_training_videos_at_most_60() -> None:
    assert [default_epochs(n) for n in (1, 160, 200, 320, 5000)] == [60, 60, 48, 30, 30]


def test_epochs_default_by_dataset_size_and_resume_keeps_the_runs_own(
    data: Path, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without --epochs a run trains default_epochs(its training videos) (here stood in for by 2, so the
    test stays short); a resume without it continues to the run's own --epochs, not to that default."""
    asked: list[int] = []
    monkeypatch.setattr(trainer, "default_epochs", lambda videos: asked.append(videos) or 2)
    common = ["--data", str(data), "--batch-size", "2", "--threads", "1", "--eval-every", "0"]
    assert _train(["mvit_tiny", *common, "--out", str(tmp_path / "d")]) == 0
    assert asked == [4] and json.loads((tmp_path / "d" / "config.json").read_text())["options"]["epochs"] == 2
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["epochs"] == 2
    run = tmp_path / "one"
    assert _train(["memvit_tiny", *common, "--out", str(run), "--epochs", "1"]) == 0
    assert _train(["memvit_tiny", *common, "--out", str(run), "--resume"]) == 2
    assert "already finished 1 epochs (--epochs 1)" in capsys.readouterr().err
    (run / "config.json").unlink()  # no record of the run's own: refused, not the dataset's default
    assert _train(["memvit_tiny", *common, "--out", str(run), "--resume"]) == 2
    assert "does not say the run's --epochs" in capsys.readouterr().err
    assert asked == [4]


def test_default_epochs_count_only_readable_training_videos(
    data: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Unreadable training videos are skipped in training, so the --epochs default does not count them
    (here 2 of 6 listed: a missing file and a zero-length one), and says so."""
    import shutil

    root = tmp_path / "data"
    shutil.copytree(data, root)
    (root / "empty.mp4").write_bytes(b"")
    with (root / "train.csv").open("a") as f:
        f.write("missing.mp4 0\nempty.mp4 1\n")
    asked: list[int] = []
    monkeypatch.setattr(trainer, "default_epochs", lambda videos: asked.append(videos) or 2)
    common = ["--data", str(root), "--batch-size", "2", "--threads", "1", "--eval-every", "0"]
    assert _train(["mvit_tiny", *common, "--out", str(tmp_path / "run")]) == 0
    assert asked[-1] == 4 and json.loads((tmp_path / "run" / "config.json").read_text())["options"]["epochs"] == 2
    assert "2 of 6 training videos are unreadable" in caplog.text


def test_memory_sampler_option_trains_that_layout_and_resume_keeps_it(data: Path, tmp_path: Path) -> None:
    """``--memory-sampler win2``: the run's card (and the model rebuilt from it) has the window layout; a
    resume without the option continues that layout, one with another layout is refused."""
    run = tmp_path / "win"
    common = ["memvit_tiny_pooled", "--data", str(data), "--out", str(run), "--batch-size", "2", "--threads", "1"]
    layout = ["--memory-sampler", "win2", "--memory-block", "2:3:gap2"]
    assert _train([*common, "--epochs", "1", "--eval-every", "0", *layout]) == 0
    trained, _ = load_trained(run)
    assert trained.cfg.memory.sampler == "win2" and trained.cfg.memory.windows(0) == ((1, 2), (3, 4), (5, 6))
    assert trained.cfg.memory.per_block == ((2, 3, "gap2"),) and trained.cfg.memory.windows(2) == ((2,), (4,))
    assert _train([*common, "--epochs", "2", "--eval-every", "0", "--resume", "--memory-sampler", "win3"]) == 2
    assert _train([*common, "--epochs", "2", "--eval-every", "0", "--resume"]) == 0
    resumed, _ = load_trained(run)
    assert resumed.cfg.memory == trained.cfg.memory


def test_regulariser_options_reach_the_model_and_resume_names_a_missing_one(data: Path, tmp_path: Path, capsys) -> None:
    """``--drop-path`` / ``--head-dropout`` set the MViT config (stochastic depth rising over the blocks) and the
    CM backbone's head dropout; a resume without model options continues with them, one with only some of them
    is refused naming the config entry that differs."""
    run = tmp_path / "reg"
    common = ["memvit_tiny", "--data", str(data), "--out", str(run), "--batch-size", "2", "--threads", "1"]
    regs = ["--drop-path", "0.3", "--head-dropout", "0.25"]
    assert _train([*common, "--epochs", "1", "--eval-every", "0", *regs]) == 0
    trained, _ = load_trained(run)
    assert trained.cfg.drop_path_rate == 0.3 and trained.cfg.head_dropout == 0.25
    assert [round(b.drop_path, 6) for b in trained.blocks] == [0.0, 0.1, 0.2, 0.3]
    assert trained.head.dropout.p == 0.25
    capsys.readouterr()
    assert _train([*common, "--epochs", "2", "--eval-every", "0", "--resume", "--head-dropout", "0.25"]) == 2
    err = capsys.readouterr().err
    assert "drop_path_rate 0.3 in the run, 0.0 asked" in err and "without model options" in err, err
    assert _train([*common, "--epochs", "2", "--eval-every", "0", "--resume", *regs]) == 0
    assert _train([*common, "--epochs", "3", "--eval-every", "0", "--resume"]) == 0  # the run's own options
    resumed, _ = load_trained(run)
    assert resumed.cfg.drop_path_rate == 0.3 and resumed.cfg.head_dropout == 0.25
    assert _train(["mvit_tiny", *common[1:], "--epochs", "4", "--eval-every", "0", "--resume"]) == 2
    assert f"--resume: {run} trains memvit_tiny, not mvit_tiny" in capsys.readouterr().err
    cm_run = tmp_path / "cm"
    cm = ["cm_slow_tiny", "--data", str(data), "--out", str(cm_run), *TINY, "--clips-per-video", "2"]
    assert _train([*cm, "--head-dropout", "0.4", "--alpha", "0.5"]) == 0
    assert load_trained(cm_run)[0].backbone.cfg.dropout == 0.4
    plain = ["cm_slow_tiny", "--data", str(data), "--out", str(cm_run), *TINY[2:], "--epochs", "2", "--resume"]
    assert _train(plain) == 0  # the CM run's clips, alpha and dropout from its card
    resumed = load_trained(cm_run)[0]
    assert resumed.backbone.cfg.dropout == 0.4
    config = json.loads((cm_run / "config.json").read_text())["model_card"]["config"]
    assert config["alpha"] == 0.5 and config["clips"] == 2


def test_memory_block_gives_memory_to_a_block_and_compression_applies_to_every_block(
    data: Path, tmp_path: Path
) -> None:
    """``--memory-block 1:3:all`` gives block 1 (no memory in the preset) memory; ``--memory-compression
    1x1x1/1x1x1`` keeps every token in every memory block; the run's model has that layout."""
    run = tmp_path / "every"
    args = ["memvit_tiny_pooled", "--data", str(data), "--out", str(run), "--batch-size", "2", "--threads", "1"]
    layout = ["--memory-block", "1:3:all", "--memory-compression", "1x1x1/1x1x1"]
    assert _train([*args, "--epochs", "1", "--eval-every", "0", *layout]) == 0
    trained, _ = load_trained(run)
    mem = trained.cfg.memory
    assert trained.memory_blocks == (0, 1, 2) and mem.exclude_layers == (3,)
    assert mem.compress_kernel == mem.compress_stride == (1, 1, 1)
    assert all(trained.memory_shape(i) == trained.raw_memory_shape(i) for i in trained.memory_blocks)


def test_raw_memory_on_the_clip_tables_trains_with_no_memory_parameters(data: Path, tmp_path: Path) -> None:
    """``--memory-compression none --memory-positions clip``: the run's model keeps raw memory keys on the
    clip's tables, has no memory parameters (so no memory learning-rate scale is recorded), and a
    ``--resume`` without the options continues that model."""
    run = tmp_path / "raw"
    args = ["memvit_tiny", "--data", str(data), "--out", str(run), "--batch-size", "2", "--threads", "1"]
    layout = ["--memory-compression", "none", "--memory-positions", "clip"]
    assert _train([*args, "--epochs", "1", "--eval-every", "0", *layout]) == 0
    trained, _ = load_trained(run)
    assert trained.cfg.memory.positions == "clip" and not trained.cfg.memory.compress
    assert trained.memory_parameters() == []
    assert not any("rel_pos_mem" in k or "compress" in k for k in trained.state_dict())
    assert json.loads((run / "config.json").read_text())["options"]["memory_lr_scale"] is None
    assert _train([*args, "--epochs", "2", "--eval-every", "0", "--resume"]) == 0
    resumed = load_trained(run)[0]
    assert resumed.cfg.memory.positions == "clip"
    # the stateful graph streams it as PyTorch does (onnxruntime, 8 steps with resets)
    report = to_onnx(resumed, tmp_path / "raw.onnx", clips=8, runtimes=("ort-cpu",)).report
    assert report is not None and report.passed


def test_cm_stagewise_init_and_wrong_init(data: Path, tmp_path: Path, capsys) -> None:
    clip_run = tmp_path / "slow"
    assert _train(["slow_tiny", "--data", str(data), "--out", str(clip_run), *TINY]) == 0
    cm_run = tmp_path / "cm"
    args = ["cm_slow_tiny", "--data", str(data), "--out", str(cm_run), *TINY, "--clips-per-video", "2"]
    assert _train([*args, "--init", str(clip_run / "checkpoints" / "last.pyth")]) == 0
    config = json.loads((cm_run / "config.json").read_text())
    assert "stage-wise" in config["init"]
    capsys.readouterr()
    mvit_run = tmp_path / "mvit"
    assert _train(["mvit_tiny", "--data", str(data), "--out", str(mvit_run), *TINY]) == 0
    bad = tmp_path / "bad"
    assert _train([*args[:4], str(bad), *TINY, "--init", str(mvit_run / "checkpoints" / "last.pyth")]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "backbone" in err and "Traceback" not in err
    assert not bad.exists()


def test_torchrun_two_processes_ddp(data: Path, tmp_path: Path) -> None:
    """torchrun, 2 CPU processes (gloo): MeMViT streaming with per-rank slots."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for model in ("memvit_tiny",):
        run = tmp_path / model
        cmd = [
            sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
            "-m", "edgemem.cli", "train", model, "--data", str(data), "--out", str(run),
            "--epochs", "1", "--batch-size", "1", "--eval-every", "1", "--threads", "1",
        ]  # fmt: skip
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
        assert out.returncode == 0, out.stderr[-3000:]
        config = json.loads((run / "config.json").read_text())
        assert config["options"]["world_size"] == 2
        epochs = [m for m in _metrics(run) if m["kind"] == "epoch"]
        assert len(epochs) == 1 and epochs[0]["val_videos"] == 2  # both ranks' shares summed
        assert (run / "checkpoints" / "last.pyth").is_file()


def test_step_result_says_what_the_loop_does() -> None:
    from edgemem.train.loop import StepResult

    assert StepResult.forward_only().is_forward_only
    done = StepResult(torch.tensor(1.0), {"count": 2.0}, backward_done=True)
    assert not done.is_forward_only and done.backward_done
    with pytest.raises(ValueError, match="needs the loss"):
        StepResult(None, backward_done=True)

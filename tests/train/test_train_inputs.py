"""Bad input to ``edgemem train``/``eval``: one-line errors, nothing written; unreadable videos skipped."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from conftest import TINY_TRAIN as TINY

from edgemem.cli import main


def _fails(args: list[str], capsys, *needles: str) -> None:
    torch.set_num_threads(1)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("edgemem ") and "Traceback" not in err
    for n in needles:
        assert n in err, err


def test_missing_csv_and_unknown_model(tmp_path: Path, data: Path, capsys) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    run = tmp_path / "run"
    _fails(["train", "mvit_tiny", "--data", str(empty), "--out", str(run)], capsys, "train.csv")
    _fails(["train", "no_such_model", "--data", str(data), "--out", str(run)], capsys, "unknown model")
    for cm_only in (["--no-batch-reduction"], ["--multi-iteration"], ["--infusion", "residual"]):
        _fails(["train", "mvit_tiny", "--data", str(data), "--out", str(run), *cm_only], capsys, "CM models only")
    _fails(["train", "mvit_tiny", "--data", str(data), "--out", str(run), "--memory-grad", "bptt"], capsys, "MeMViT")
    _fails(
        ["train", "memvit_tiny", "--data", str(data), "--out", str(run), "--stream-loss", "all"], capsys, "pipelined"
    )
    for hold in ("1", "-0.1"):
        _fails(["train", "mvit_tiny", "--data", str(data), "--out", str(run), "--lr-hold", hold], capsys, "[0, 1)")
    _fails(["train", "mvit_tiny", "--data", str(data), "--out", str(run), "--memory-lr-scale", "10"], capsys, "MeMViT")
    _fails(["train", "memvit_tiny", "--data", str(data), "--out", str(run), "--memory-lr-scale", "0"], capsys, "> 0")
    _fails(["train", "mvit_tiny", "--data", str(data), "--out", str(run), "--memory-sampler", "win4"], capsys, "MeMViT")
    _fails(
        ["train", "memvit_tiny", "--data", str(data), "--out", str(run), "--memory-sampler", "ring4"], capsys, "sampler"
    )
    for block, why in (
        ("2-5-gap4", "BLOCK:ATTN_MAX_LEN:SAMPLER"),
        ("4:5:gap4", "depth is 4"),
        ("0:1:all", "ATTN"),
    ):
        _fails(["train", "memvit_tiny", "--data", str(data), "--out", str(run), "--memory-block", block], capsys, why)
    off = ["--memory-block", "0:off", "--memory-block", "2:off"]  # memvit_tiny_pooled's two memory blocks
    _fails(["train", "memvit_tiny_pooled", "--data", str(data), "--out", str(run), *off], capsys, "every block")
    for compression, why in (
        ("5x3x3", "KTxKHxKW/STxSHxSW"),
        ("5x3x3/0x2x2", ">= 1"),
        ("5x3/4x2", "KTxKHxKW"),
        ("2x2x2/2x2x2", "temporal position table"),
    ):
        args = ["--memory-compression", compression]
        _fails(["train", "memvit_tiny", "--data", str(data), "--out", str(run), *args], capsys, why)
    _fails(
        ["train", "mvit_tiny", "--data", str(data), "--out", str(run), "--memory-compression", "1x1x1/1x1x1"],
        capsys,
        "MeMViT",
    )
    for layout, why in (
        (["--memory-compression", "none"], "memory positions 'clip'"),  # raw keys need the clip's tables
        (["--memory-compression", "5x3x3/4x2x2", "--memory-positions", "clip"], "strided compression"),
        (["--memory-compression", "none", "--memory-positions", "clip", "--memory-sampler", "gap2"], "sampler gap2"),
        (["--memory-compression", "none", "--memory-positions", "clip", "--memory-lr-scale", "5"], "no parameters"),
    ):
        _fails(["train", "memvit_tiny", "--data", str(data), "--out", str(run), *layout], capsys, why)
    _fails(
        ["train", "mvit_tiny", "--data", str(data), "--out", str(run), "--memory-positions", "clip"], capsys, "MeMViT"
    )
    _fails(
        ["train", "mvit_tiny", "--data", str(data), "--out", str(run), "--memory-block", "0:3:all"], capsys, "MeMViT"
    )
    _fails(["train", "memvit_tiny", "--data", str(data), "--out", str(run), "--alpha", "0.5"], capsys, "CM models only")
    for model in ("slow_tiny", "cm_slow_tiny"):
        _fails(["train", model, "--data", str(data), "--out", str(run), "--drop-path", "0.1"], capsys, "MViT / MeMViT")
    for option in ("--drop-path", "--head-dropout"):
        for value in ("1", "-0.1", "nan"):
            _fails(["train", "memvit_tiny", "--data", str(data), "--out", str(run), option, value], capsys, option)
    # a NaN or infinite number is refused before it reaches the optimizer (or the run's config.json)
    for option, value in (
        ("--lr", "inf"), ("--weight-decay", "nan"), ("--weight-decay", "-1"), ("--warmup-epochs", "-1"),
        ("--clip-grad", "nan"), ("--alpha", "nan"), ("--memory-lr-scale", "inf"), ("--eval-every", "-1"),
    ):  # fmt: skip
        model = "cm_slow_tiny" if option == "--alpha" else "memvit_tiny"
        _fails(["train", model, "--data", str(data), "--out", str(run), option, value], capsys, option, value)
    assert not run.exists()


def test_label_out_of_range(tmp_path: Path, data: Path, capsys) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(data, bad)
    lines = (bad / "train.csv").read_text().splitlines()
    lines[1] = lines[1].rsplit(" ", 1)[0] + " 7"
    (bad / "train.csv").write_text("\n".join(lines) + "\n")
    run = tmp_path / "run"
    _fails(["train", "mvit_tiny", "--data", str(bad), "--out", str(run)], capsys, "out of range")
    assert not run.exists()


def test_existing_run_needs_resume_and_resume_needs_a_run(tmp_path: Path, data: Path, capsys) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("mine")
    _fails(["train", "mvit_tiny", "--data", str(data), "--out", str(run)], capsys, "--resume")
    _fails(["train", "mvit_tiny", "--data", str(data), "--out", str(tmp_path / "new"), "--resume"], capsys, "resume")
    assert sorted(p.name for p in run.iterdir()) == ["notes.txt"]
    _fails(["eval", str(tmp_path / "nothing"), "--data", str(data)], capsys, "checkpoint")


def test_unreadable_videos_are_skipped_and_counted(tmp_path: Path, data: Path, capsys) -> None:
    bad = tmp_path / "corrupt"
    shutil.copytree(data, bad)
    (bad / "videos" / "train" / "000001.mp4").write_bytes(b"")  # zero-length
    (bad / "videos" / "train" / "000002.mp4").write_bytes(b"not a video at all" * 50)  # garbage
    for model in ("mvit_tiny", "memvit_tiny", "cm_slow_tiny"):
        run = tmp_path / model
        torch.set_num_threads(1)
        extra = ["--clips-per-video", "2"] if model.startswith("cm") else []
        assert main(["train", model, "--data", str(bad), "--out", str(run), *TINY, *extra]) == 0
        summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert summary["skipped_videos"] == 2, (model, summary)
    (bad / "videos" / "val" / "000000.mp4").write_bytes(b"")
    assert main(["eval", str(tmp_path / "memvit_tiny"), "--data", str(bad), "--json"]) == 0
    m = json.loads(capsys.readouterr().out)
    assert m["skipped"] == 1 and m["videos"] == 1

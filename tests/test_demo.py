"""`edgemem demo`, the README's main job, end to end on the shipped weights."""

from __future__ import annotations

from edgemem.cli import main


def test_demo_exports_verifies_and_predicts_every_video(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["demo", "--videos", "2", "--runtimes", "ort-cpu", "--workdir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "PASSED" in out and "every runtime predicted every video right" in out
    assert len(list((tmp_path / "videos").glob("*.mp4"))) == 2 and list(tmp_path.glob("*.onnx"))


def test_demo_renders_the_distance_the_weights_were_trained_on(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    """memvit_tiny_long's weights were trained on cues 12 clips apart: the demo's videos are that task."""
    args = ["demo", "--model", "memvit_tiny_long", "--videos", "2", "--runtimes", "ort-cpu", "--workdir", str(tmp_path)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "cues 12 clips apart" in out and "every runtime predicted every video right" in out


def test_demo_refuses_unknown_runtimes(capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["demo", "--runtimes", "no-such-runtime"]) == 2
    assert "cannot run no-such-runtime" in capsys.readouterr().err

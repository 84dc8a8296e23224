"""Numeric options whose NaN or sign would slip through a comparison, and options that depend on another, refused."""

from __future__ import annotations

import argparse

import pytest

from edgemem.argtypes import positive_float
from edgemem.cli import main


def test_positive_float() -> None:
    assert positive_float("2.5") == 2.5
    for bad in ("nan", "inf", "0", "-1", "ten"):
        with pytest.raises(argparse.ArgumentTypeError):
            positive_float(bad)


@pytest.mark.parametrize(
    "argv",
    [
        ["bench", "--models", "memvit_tiny", "--runtimes", "ort-cpu", "--timeout", "nan"],
        ["bench", "--models", "memvit_tiny", "--runtimes", "ort-cpu", "--max-memory-mb", "-5"],
        ["stream", "v.mp4", "--model", "memvit_tiny", "--timeout", "nan"],
        ["stream", "v.mp4", "--model", "memvit_tiny", "--triton", "localhost:1", "--request-timeout", "0"],
        ["serve", "start", "--repo", "r", "--timeout", "nan"],
        ["serve", "bench", "--triton", "localhost:1", "--model", "m", "--timeout", "-1"],
        ["serve", "export", "g.onnx", "--repo", "r", "--idle-timeout", "nan"],
    ],
)
def test_nan_and_non_positive_limits_are_usage_errors(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    assert "must be a finite number > 0" in capsys.readouterr().err


def test_request_timeout_without_triton_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    """It configures requests to a server; a local session makes none, so it is not silently ignored."""
    assert main(["stream", "v.mp4", "--model", "memvit_tiny", "--request-timeout", "5"]) == 2
    assert capsys.readouterr().err.strip() == (
        "edgemem stream: error: --request-timeout applies with --triton (a local session makes no requests)"
    )


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--in-process-batch", "4"], "--in-process-batch: only with --in-process GRAPH"),
        (["--threads", "2"], "--threads: only with --in-process GRAPH"),
        (["--in-process", "g.onnx", "--in-process-batch", "0"], "--in-process-batch must be >= 1, got 0"),
    ],
)
def test_serve_bench_in_process_options(extra: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Checked before any stream runs (a batch of 0 divided by zero after the whole benchmark)."""
    assert main(["serve", "bench", "--triton", "localhost:1", "--model", "m", *extra]) == 2
    assert capsys.readouterr().err.strip() == f"edgemem serve: error: {message}"

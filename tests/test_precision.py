"""One precision spelling (f32, bf16, fp16, int8); old spellings only when reading old files."""

from __future__ import annotations

import pytest

from edgemem.cli import main
from edgemem.errors import UnsupportedError
from edgemem.precision import GRAPH_PRECISIONS, LEGACY, Precision, choices, of_export_record


def test_one_spelling() -> None:
    assert choices() == ["f32", "bf16", "fp16", "int8", "int8+bf16"]
    assert choices(GRAPH_PRECISIONS) == ["f32", "fp16", "int8"]
    assert str(Precision.FP16) == "fp16" and Precision.parse("int8") is Precision.INT8


def test_old_spellings_read_from_files() -> None:
    assert {Precision.parse(old) for old in LEGACY} <= set(Precision)
    assert Precision.parse("fp32") is Precision.F32 and Precision.parse("f16") is Precision.FP16
    with pytest.raises(
        UnsupportedError, match="unknown precision 'fp64'; use one of f32, bf16, fp16, int8, int8\\+bf16"
    ):
        Precision.parse("fp64")


@pytest.mark.parametrize(
    ("record", "want"),
    [
        ({"precision": "fp32", "quantize": None}, Precision.F32),  # contract-1 graphs of earlier exporters
        ({"precision": "fp32", "quantize": "int8"}, Precision.INT8),
        ({"precision": "fp16", "quantize": None}, Precision.FP16),
        ({"precision": "int8"}, Precision.INT8),  # today's records
        ({}, Precision.F32),
    ],
)
def test_graph_precision_from_old_and_new_export_records(record: dict, want: Precision) -> None:
    assert of_export_record(record) is want


@pytest.mark.parametrize(
    "argv",
    [
        ["export", "mvit_tiny", "--out", "x.onnx", "--precision", "fp32"],
        ["stream", "v.mp4", "--model", "mvit_tiny", "--precision", "f16"],
        ["train", "mvit_tiny", "--data", "d", "--out", "o", "--precision", "fp32"],
    ],
)
def test_cli_accepts_only_the_one_spelling(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2 and "invalid choice" in capsys.readouterr().err


def test_export_has_no_quantize_option(capsys: pytest.CaptureFixture[str]) -> None:
    """int8 is a precision like the others: ``--precision int8``."""
    with pytest.raises(SystemExit):
        main(["export", "mvit_tiny", "--out", "x.onnx", "--quantize", "int8"])
    assert "unrecognized arguments: --quantize" in capsys.readouterr().err

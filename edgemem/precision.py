"""The one spelling of a numeric precision: ``f32``, ``bf16``, ``fp16``, ``int8``, ``int8+bf16``.

``int8+bf16`` is the int8 graph with what it leaves in float (softmax, ``softmax·V``, the norms, the
relative-position products) run in bf16: OpenVINO's bf16 inference hint on the int8 graph, for CPUs
with AVX512-BF16 or AMX.

The CLI accepts these values only (``choices()``); results, graphs' export records and docs use them.
Files written before this module (graphs with ``{"precision": "fp32", "quantize": "int8"}``, saved
references with ``"fp32"``, OpenVINO's own ``f16``) are still read: ``LEGACY`` is the one table of old
spellings, and ``Precision.parse``/``of_export_record`` are the only places that read them.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from typing import Any

from edgemem.errors import UnsupportedError


class Precision(str, Enum):
    """A compute precision; ``str(p)`` and ``p.value`` are its one spelling."""

    F32 = "f32"
    BF16 = "bf16"
    FP16 = "fp16"
    INT8 = "int8"
    INT8_BF16 = "int8+bf16"

    def __str__(self) -> str:
        return self.value

    @classmethod
    def parse(cls, text: str | Precision) -> Precision:
        """The precision named by ``text`` (its spelling, or an old one from ``LEGACY`` read from a
        file); UnsupportedError naming the spellings otherwise."""
        if isinstance(text, Precision):
            return text
        value = LEGACY.get(str(text), str(text))
        try:
            return cls(value)
        except ValueError:
            raise UnsupportedError(f"unknown precision '{text}'; use one of {', '.join(choices())}") from None


# Old spellings, read from files written before the one spelling (never accepted at the CLI).
LEGACY: dict[str, str] = {"fp32": "f32", "float32": "f32", "f16": "fp16", "float16": "fp16", "i8": "int8"}

# What an exported graph itself holds (bf16 is a runtime's inference mode on an f32 graph).
GRAPH_PRECISIONS = (Precision.F32, Precision.FP16, Precision.INT8)


def choices(only: tuple[Precision, ...] = tuple(Precision)) -> list[str]:
    """Argparse ``choices``: the spellings of ``only`` (default: every precision)."""
    return [p.value for p in only]


def of_graph(record: Mapping[str, Any], quantized: bool) -> Precision:
    """A graph's compute precision: int8 when it holds int8 ops (``quantized``, read from its nodes:
    a graph quantized outside ``edgemem export`` has no record saying so), else its export record's."""
    return Precision.INT8 if quantized else of_export_record(record)


def of_export_record(record: Mapping[str, Any]) -> Precision:
    """The precision of a graph from its ``edgemem.export`` record, old records included
    (``{"precision": "fp32", "quantize": "int8"}`` is int8); f32 when the record says nothing."""
    if record.get("quantize") == "int8":
        return Precision.INT8
    return Precision.parse(record.get("precision") or "f32")

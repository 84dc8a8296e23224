"""``to_onnx``: a StreamingModel to one stateful ONNX graph, checked, verified, written atomically."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx
import torch

import edgemem
from edgemem.atomic import atomic_path, check_writable
from edgemem.contract import BATCH_DIM, read_contract, write_contract
from edgemem.errors import EdgememError, InputError, UnsupportedError
from edgemem.export.calibration import Calibration
from edgemem.export.graph import (
    GraphStats,
    fold_param_transposes,
    gemm_to_matmul,
    lint_graph,
    rename_initializers,
    weights_from_graph,
)
from edgemem.export.quantize import QUANTIZERS, require
from edgemem.export.verify import Tolerance, VerifyReport, run_checker, verify_graph
from edgemem.export.wrapper import PREFIX, StepGraph
from edgemem.models.info import model_cost
from edgemem.models.streaming import StreamingModel
from edgemem.precision import GRAPH_PRECISIONS, Precision, choices
from edgemem.runtimes.graph import read_graph

DEFAULT_OPSET = 18
MIN_OPSET = 18  # the dynamo exporter's lowest native opset
SINGLE_FILE_LIMIT = 2**31 - 2**26  # protobuf's 2 GB limit, with room for the graph itself


@dataclass
class ExportResult:
    path: Path
    seconds: float
    bytes: int
    stats: GraphStats
    report: VerifyReport | None


def to_onnx(
    model: StreamingModel,
    path: str | os.PathLike[str],
    *,
    batch: int | None = 1,
    opset: int = DEFAULT_OPSET,
    precision: Precision | str = Precision.F32,
    verify: bool = True,
    clips: int = 16,
    boundaries: int = 2,
    tolerance: Tolerance | None = None,
    runtimes: tuple[str, ...] | None = None,
    calibration: Calibration | None = None,
    quantizer: str = "nncf",
) -> ExportResult:
    """Export ``model.step`` as a stateful graph at ``path`` (see docs/CONTRACT.md).

    ``batch`` fixes the batch size (None: a dynamic ``batch`` dimension). ``precision`` (one of
    ``GRAPH_PRECISIONS``): ``fp16`` computes in fp16 behind f32 inputs/outputs; ``int8`` quantizes
    statically (QDQ, ``quantizer`` "nncf" or "ort", see ``export.quantize``) with scales from
    ``calibration`` streamed through the f32 graph with its memory. With ``verify`` (default) the graph is checked
    and a stream of ``clips`` steps with ``boundaries`` video boundaries is compared against the
    model on ``runtimes`` (default ort-cpu; int8 also openvino); on failure (or any error)
    nothing is left at ``path``.
    """
    start = time.perf_counter()
    out, precision = _check_args(model, Path(path), batch, opset, precision)
    int8 = precision == Precision.INT8
    if not int8 and calibration is not None:
        raise InputError(f"calibration data applies to int8 only, not to a {precision} graph")
    if int8 and calibration is None:
        raise InputError("int8 needs calibration data: --calib DATA (a dataset, videos, or 'random')")
    if int8 and quantizer not in QUANTIZERS:
        raise UnsupportedError(f"unknown quantizer '{quantizer}'; choose from {', '.join(QUANTIZERS)}")
    if int8 and quantizer == "nncf":
        require("nncf", "int8")  # before the export, not after it
    if runtimes is None:
        runtimes = ("ort-cpu", "openvino") if int8 else ("ort-cpu",)
    with atomic_path(out) as tmp:
        card = model.model_card().with_(cost=model_cost(model))  # measured here, carried by the graph
        proto = _export_proto(model, batch, opset)
        if precision == Precision.FP16:
            from edgemem.export.precision import to_fp16

            proto = to_fp16(proto)
        _, unused = weights_from_graph(proto, list(model.state_dict()))  # parameters the step never reads
        export_info: dict[str, Any] = {"precision": precision.value, "opset": opset, "torch": torch.__version__,
                       "edgemem": edgemem.__version__, "unused_weights": unused}  # fmt: skip
        specs = model.state_specs(BATCH_DIM if batch is None else batch)
        write_contract(proto, specs, card, export_info)
        if int8 and calibration is not None:
            proto = _quantize(proto, tmp, calibration, quantizer, batch or 1, set(model.state_dict()))
            export_info |= {"quantizer": quantizer, "calibration": calibration.describe()}
            write_contract(proto, specs, card, export_info)
        stats = lint_graph(proto)
        if proto.ByteSize() > SINGLE_FILE_LIMIT:
            raise UnsupportedError("graphs over 2 GB (external data) are not supported yet")
        onnx.save_model(proto, str(tmp))
        checker = run_checker(proto)  # the proto just saved: not read back
        if checker != "PASS":
            raise UnsupportedError(f"the exporter did not produce a valid opset {opset} graph: {checker}")
        report = None
        if verify:
            stream = None
            if int8 and calibration is not None and calibration.source != "random":
                from edgemem.export.calibration import as_stream

                stream = as_stream(calibration, batch or 2, clips)  # int8 is checked on real clips
            info = read_graph(tmp, read_contract(proto))  # parsed once, from memory
            report = verify_graph(info, model, runtimes=runtimes, clips=clips, boundaries=boundaries,
                                  tolerance=tolerance, name=out.name, check=False, stream=stream)  # fmt: skip
            if not report.passed:
                raise VerificationError(report)
    return ExportResult(out, time.perf_counter() - start, out.stat().st_size, stats, report)


def _quantize(
    proto: onnx.ModelProto, tmp: Path, cal: Calibration, quantizer: str, batch: int, params: set[str]
) -> onnx.ModelProto:
    """Stream the calibration videos through the f32 graph (written to ``tmp``), then quantize."""
    from edgemem.export.calibration import collect_feeds
    from edgemem.export.quantize import quantize_nncf, quantize_ort

    gemm_to_matmul(proto, params)
    onnx.save_model(proto, str(tmp))
    feeds = collect_feeds(tmp, cal, batch)
    return (quantize_nncf if quantizer == "nncf" else quantize_ort)(proto, feeds)


class VerificationError(EdgememError):
    """The exported graph does not reproduce the model; carries the report."""

    def __init__(self, report: VerifyReport) -> None:
        super().__init__(f"verification failed ({report.failures()}); nothing written\n{report.format()}")
        self.report = report


def _check_args(
    model: Any, out: Path, batch: int | None, opset: int, precision: Precision | str
) -> tuple[Path, Precision]:
    if not isinstance(model, StreamingModel):
        raise InputError(f"to_onnx needs a StreamingModel, got {type(model).__name__}")
    if batch is not None and (not isinstance(batch, int) or batch < 1):
        raise InputError(f"batch must be a positive integer or None (dynamic), got {batch!r}")
    if str(precision) not in choices(GRAPH_PRECISIONS):
        raise UnsupportedError(
            f"a graph cannot be exported in '{precision}'; choose from {', '.join(choices(GRAPH_PRECISIONS))}"
        )
    newest = onnx.defs.onnx_opset_version()
    if not MIN_OPSET <= opset <= newest:
        raise UnsupportedError(f"opset {opset} cannot be produced: the exporter writes opsets {MIN_OPSET}..{newest}")
    if out.suffix != ".onnx":
        raise InputError(f"output must be a .onnx file, got {out}")
    return check_writable(out), Precision(str(precision))


def _export_proto(model: StreamingModel, batch: int | None, opset: int) -> onnx.ModelProto:
    """Trace with the dynamo exporter, then optimize so that every parameter keeps its name."""
    model.eval()
    b = batch or 2
    specs = model.state_specs(b)
    wrapper = StepGraph(model, specs).eval()
    args = (
        torch.zeros((b, *model.input_shape), dtype=torch.float32),
        torch.zeros(b, dtype=torch.bool),
        *(torch.zeros(s.concrete().shape, dtype=getattr(torch, s.dtype)) for s in specs),
    )
    dynamic = None
    if batch is None:
        dim = torch.export.Dim(BATCH_DIM, min=1, max=4096)
        # *state is one vararg; a memory-less model has none, and torch.export wants no entry then
        dynamic = ({0: dim}, {0: dim}, *((tuple({0: dim} for _ in specs),) if specs else ()))
    params = set(wrapper.state_dict())
    try:
        with torch.no_grad(), _quiet(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                wrapper, args, None, dynamo=True, optimize=False, opset_version=opset, verbose=False,
                input_names=wrapper.input_names, output_names=wrapper.output_names, dynamic_shapes=dynamic,
            )  # fmt: skip
            if program is None:  # dynamo=True with no file always returns the program
                raise UnsupportedError("the ONNX exporter returned no program")
            _optimize(program.model, params)
            proto = program.model_proto
    except EdgememError:
        raise
    except Exception as e:  # the exporter raises many types; report the first line
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UnsupportedError(f"the ONNX exporter failed ({type(e).__name__}): {msg}") from None
    rename_initializers(proto, PREFIX)
    fold_param_transposes(proto, {p.removeprefix(PREFIX) for p in params})
    proto.producer_name, proto.producer_version = "edgemem", edgemem.__version__
    return proto


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the exporter's progress prints and logged warnings (errors still raise)."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "onnxscript", "onnx_ir")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _optimize(model: Any, params: set[str]) -> None:
    """onnxscript's default optimization minus what would lose parameter names: no folding of nodes
    that read a parameter (index/shape computations such as relative positions still fold), no
    deduplication of equal-valued initializers, no BatchNorm fusion (runtimes fuse it at load)."""
    import onnx_ir.passes.common as passes
    import onnxscript.optimizer
    import onnxscript.rewriter

    def keep_params(node: Any) -> bool | None:
        return False if any(v is not None and v.name in params for v in node.inputs) else None

    rules = [r for r in onnxscript.rewriter._DEFAULT_REWRITE_RULES if "BatchNorm" not in str(r.name)]
    passes.InlinePass()(model)
    onnxscript.optimizer.fold_constants_ir(model, should_fold=keep_params)
    onnxscript.rewriter.rewrite(model, pattern_rewrite_rules=rules)
    onnxscript.optimizer.fold_constants_ir(model, should_fold=keep_params)
    passes.RemoveUnusedNodesPass()(model)
    passes.LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0)(model)
    passes.CommonSubexpressionEliminationPass()(model)
    passes.RemoveUnusedNodesPass()(model)

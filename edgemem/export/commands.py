"""``edgemem export`` and ``edgemem verify``."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from edgemem.errors import InputError
from edgemem.precision import GRAPH_PRECISIONS, Precision, choices, of_graph

if TYPE_CHECKING:
    import torch

    from edgemem.contract import GraphContract
    from edgemem.export.calibration import Calibration
    from edgemem.export.saved_reference import SavedReference
    from edgemem.export.verify import Tolerance
    from edgemem.models.streaming import StreamingModel


def register(sub: argparse._SubParsersAction) -> None:
    # no abbreviations: the old `--quantize int8` must not read as `--quantizer int8`
    p = sub.add_parser(
        "export", help="export a model as a stateful ONNX graph, verified against PyTorch", allow_abbrev=False
    )
    p.add_argument(
        "model",
        help="preset (see `edgemem models`: its shipped default weights), shipped weights name "
        "(`edgemem models --zoo`), PySlowFast/MeMViT YAML, or a .pyth edgemem wrote (a run's checkpoint)",
    )
    p.add_argument(
        "--checkpoint",
        help="PySlowFast .pyth checkpoint (loaded all-or-nothing), or shipped weights of MODEL by name "
        "(`edgemem models --zoo`)",
    )
    p.add_argument(
        "--random-weights", action="store_true",
        help="export a preset or config without weights untrained (speed tests: its classes mean nothing)",
    )  # fmt: skip
    p.add_argument("--out", required=True, help="output .onnx file (written atomically)")
    p.add_argument("--batch", default="1", help="batch size, or 'dynamic' (default 1)")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default 18)")
    p.add_argument(
        "--precision", choices=choices(GRAPH_PRECISIONS), default="f32",
        help="the graph's precision: f32, fp16 compute behind f32 I/O, int8 (static QDQ, calibrated with --calib)",
    )  # fmt: skip
    p.add_argument(
        "--calib", metavar="DATA", default=None,
        help="int8 calibration: an edgemem dataset (its train split), a folder of videos, a video, a .txt "
        "list of videos, or 'random' (seeded noise: for speed tests of untrained weights only)",
    )  # fmt: skip
    p.add_argument(
        "--calib-videos", type=int, default=None, metavar="N", help="calibration videos (default 16; 4 with 'random')"
    )
    p.add_argument(
        "--quantizer", choices=("nncf", "ort"), default=None,
        help="nncf (default: OpenVINO and ONNX Runtime) or ort (ONNX Runtime static, symmetric: also TensorRT)",
    )  # fmt: skip
    p.add_argument("--no-verify", action="store_true", help="skip the verification stream (checks still run)")
    p.add_argument(
        "--view", choices=("train", "test"), default=None,
        help="YAML configs: input at DATA.TRAIN_CROP_SIZE (default) or DATA.TEST_CROP_SIZE (the official test view)",
    )  # fmt: skip
    _stream_args(p)
    p.set_defaults(func=_export)

    v = sub.add_parser("verify", help="compare an edgemem ONNX graph with its PyTorch reference over a stream")
    v.add_argument("graph", help="edgemem .onnx graph")
    v.add_argument("--runtimes", default="ort-cpu", help="comma-separated runtimes (see `edgemem runtimes`)")
    v.add_argument(
        "--checkpoint",
        help="reference weights from this .pyth, or shipped weights by name (`edgemem models --zoo`), "
        "instead of the graph's initializers",
    )
    v.add_argument("--batch", type=int, default=None, help="batch for graphs with a dynamic batch (default 2)")
    v.add_argument("--json", action="store_true", help="print the report as JSON")
    v.add_argument("--save-reference", metavar="REF.npz", help="also write the stream and PyTorch outputs there")
    v.add_argument("--reference", metavar="REF.npz", help="compare with a saved reference instead of PyTorch")
    v.add_argument(
        "--data", metavar="DATA", default=None,
        help="stream real clips instead of generated ones (a dataset, videos or a .txt list, as --calib); "
        "--clips caps the steps",
    )  # fmt: skip
    v.add_argument("--data-videos", type=int, default=None, metavar="N", help="videos of --data (default 16)")
    _stream_args(v)
    v.set_defaults(func=_verify, clips=None, boundaries=None)  # None: not given (16 and 2 unless --reference)


def _stream_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--clips", type=int, default=16, help="verification stream length (default 16)")
    p.add_argument("--boundaries", type=int, default=2, help="video boundaries in the stream (default 2)")
    p.add_argument("--atol", type=float, default=None, help="logits tolerance (default per precision)")
    p.add_argument("--state-atol", type=float, default=None, help="state tolerance (default per precision)")
    p.add_argument(
        "--outliers",
        type=float,
        default=None,
        help="share of an output's elements allowed beyond the tolerance (default per precision: int8 0.001, else 0)",
    )


def _tolerance(args: argparse.Namespace, precision: str) -> Tolerance:
    """The default tolerance of ``precision`` with --atol/--state-atol/--outliers applied."""
    from dataclasses import replace

    from edgemem.export.verify import TOLERANCES

    tol = TOLERANCES[Precision.parse(precision)]
    if args.atol is not None:
        tol = replace(tol, logits_atol=args.atol)
    if args.state_atol is not None:
        tol = replace(tol, state_atol=args.state_atol)
    if args.outliers is not None:
        tol = replace(tol, outliers=args.outliers)
    return tol


def _export(args: argparse.Namespace) -> int:
    from edgemem.export.model_source import build_model
    from edgemem.export.onnx import DEFAULT_OPSET, VerificationError, to_onnx

    if args.batch == "dynamic":
        batch = None
    elif args.batch.isdigit() and int(args.batch) > 0:
        batch = int(args.batch)
    else:
        raise InputError(f"--batch must be a positive integer or 'dynamic', got {args.batch!r}")
    notes: list[str] = []  # which weights: printed with the result, so that an error stays one line
    model, _ = build_model(args.model, args.checkpoint, args.random_weights, notes.append, view=args.view)
    calibration = _calibration(args, model)
    try:
        result = to_onnx(
            model, args.out, batch=batch, opset=args.opset or DEFAULT_OPSET, precision=args.precision,
            verify=not args.no_verify, clips=args.clips, boundaries=args.boundaries,
            tolerance=_tolerance(args, args.precision), calibration=calibration, quantizer=args.quantizer or "nncf",
        )  # fmt: skip
    except VerificationError as e:
        print(e.report.format(), file=sys.stderr)
        hint = ""
        if Precision.parse(args.precision) is Precision.INT8:
            hint = (
                "; int8 rounding differs by quantizer and calibration: try the other --quantizer or more "
                "--calib-videos, or accept the error shown with --atol/--state-atol/--outliers"
            )
        print(
            f"edgemem export: error: verification failed ({e.report.failures()}), nothing written to {args.out}{hint}",
            file=sys.stderr,
        )
        return 1
    if result.report is not None:
        print(result.report.format())
    for line in notes:
        print(f"edgemem export: weights: {line}", file=sys.stderr)
    s = result.stats
    print(
        f"wrote {result.path} ({result.bytes / 2**20:.2f} MiB, {s.nodes} nodes, {s.parameters / 1e6:.2f} M weights)"
        f" in {result.seconds:.1f} s"
    )
    return 0


def _calibration(args: argparse.Namespace, model: StreamingModel) -> Calibration | None:
    """The calibration set of ``--precision int8``; calibration options without it are an error."""
    from edgemem.export.calibration import DEFAULT_VIDEOS, load_calibration, synthetic_calibration

    if args.precision != Precision.INT8:
        given = [o for o, v in (("--calib", args.calib), ("--calib-videos", args.calib_videos),
                                ("--quantizer", args.quantizer)) if v is not None]  # fmt: skip
        if given:
            raise InputError(f"{', '.join(given)}: only with --precision int8")
        return None
    if args.calib is None:
        raise InputError("--precision int8 needs --calib DATA (a dataset, videos, or 'random')")
    videos = DEFAULT_VIDEOS if args.calib_videos is None else args.calib_videos
    if args.calib == "random":
        return synthetic_calibration(model.input_shape, videos=4 if args.calib_videos is None else args.calib_videos)
    return load_calibration(args.calib, model.model_card(), videos)


def _verify(args: argparse.Namespace) -> int:
    from edgemem.contract import read_contract
    from edgemem.export.graph import load_graph_proto
    from edgemem.export.verify import verify_graph
    from edgemem.runtimes.graph import read_graph

    proto = load_graph_proto(args.graph)  # parsed once: the contract, the reference's weights, the checker
    contract = read_contract(proto)
    info = read_graph(args.graph, contract)
    runtimes = tuple(r.strip() for r in args.runtimes.split(",") if r.strip())
    if not runtimes:
        raise InputError("--runtimes is empty")
    stream = None
    if args.data is not None:
        if args.reference:
            raise InputError("--data and --reference exclude each other (a saved reference carries its own stream)")
        from edgemem.export.calibration import DEFAULT_VIDEOS, as_stream, load_calibration

        videos = load_calibration(
            args.data, contract.card, DEFAULT_VIDEOS if args.data_videos is None else args.data_videos, option="--data"
        )
        b = contract.batch if isinstance(contract.batch, int) else (args.batch or 2)
        stream = as_stream(videos, b, 16 if args.clips is None else args.clips)
    elif args.data_videos is not None:
        raise InputError("--data-videos only applies with --data")
    reference: SavedReference | torch.nn.Module
    if args.reference:
        reference = _saved_reference(args, contract)
    else:
        from edgemem.export.reference import reference_model

        reference = reference_model(info, args.checkpoint, proto=proto)
    report = verify_graph(
        info, reference, proto=proto, runtimes=runtimes, clips=16 if args.clips is None else args.clips,
        boundaries=2 if args.boundaries is None else args.boundaries, batch=args.batch,
        tolerance=_tolerance(args, of_graph(contract.export, contract.quantized)), save_reference=args.save_reference,
        stream=stream,
    )  # fmt: skip
    print(json.dumps(report.to_json(), indent=2) if args.json else report.format())
    return 0 if report.passed else 1


def _saved_reference(args: argparse.Namespace, contract: GraphContract) -> SavedReference:
    """The ``--reference`` file, refused with the options it makes meaningless or contradicts."""
    from edgemem.export.saved_reference import load_reference

    for flag, value in (("--checkpoint", args.checkpoint), ("--save-reference", args.save_reference)):
        if value:
            raise InputError(f"{flag} cannot be combined with --reference (no PyTorch model runs)")
    saved = load_reference(args.reference, args.graph, contract)
    given = {"--clips": (args.clips, saved.stream.steps), "--batch": (args.batch, saved.stream.batch),
             "--boundaries": (args.boundaries, saved.meta.get("boundaries"))}  # fmt: skip
    for flag, (value, stored) in given.items():
        if value is not None and value != stored:
            raise InputError(f"{flag} {value} differs from the reference's {stored} ({args.reference})")
    return saved

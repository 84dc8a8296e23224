"""``edgemem stream``: classify videos online with memory carried by a runtime session."""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path
from typing import Any

from edgemem.argtypes import positive_float
from edgemem.precision import choices, of_graph


def register(sub: Any) -> None:
    s = sub.add_parser(
        "stream",
        help="classify videos online, clip by clip, with memory carried by a runtime session",
        description="Decode each SOURCE (file, URL, capture device such as v4l2:/dev/video0), "
        "resample it to the model's rate, and step every clip through the model (a source ending mid-clip "
        "gets a last clip of its last frames, over part of the clip before; one shorter than a clip has "
        "its last frame repeated); state is reset at each new source.",
        epilog="Exit status: 0 every source streamed to its end; 2 an error (nothing classified, NaN/inf "
        "in a state or output, bad input: no output file is left); 3 incomplete: clips were classified "
        "but a source could not be opened or stopped early on a decode error or a truncated file (each is "
        "reported with the clip index where it stopped; the outputs hold the clips classified).",
    )
    s.add_argument("sources", nargs="+", metavar="SOURCE")
    s.add_argument(
        "--model", required=True,
        help="an edgemem ONNX graph, a preset or shipped weights name, a YAML config, or a .pyth edgemem wrote",
    )  # fmt: skip
    s.add_argument(
        "--checkpoint",
        help="weights for a preset/config (.pyth, or shipped weights by name); default: the preset's shipped weights",
    )
    s.add_argument(
        "--random-weights", action="store_true",
        help="stream a preset/config without trained weights (timing only: its classes mean nothing)",
    )  # fmt: skip
    s.add_argument("--runtime", default="ort-cpu", help="see `edgemem runtimes` (default: ort-cpu)")
    s.add_argument(
        "--precision",
        choices=choices(),
        help="openvino: f32 (default), bf16, fp16 where the CPU has them; tensorrt/ort-tensorrt: fp16 "
        "(see `edgemem runtimes`)",
    )
    s.add_argument("--threads", type=int, help="CPU threads of the runtime (default: the usable CPUs)")
    s.add_argument("--jsonl", type=Path, help="write one JSON record per clip (flushed per record)")
    s.add_argument("--out", type=Path, help="write an annotated copy of the video (several sources: _N suffix)")
    s.add_argument("--batch", action="store_true", help="run the sources as parallel streams in one batch")
    s.add_argument("--realtime", action="store_true", help="decode at the video's pace, skip frames when behind")
    s.add_argument(
        "--timeout", type=positive_float, default=10.0, help="seconds to wait for a network source (default 10)"
    )
    s.add_argument("--topk", type=int, default=5, help="classes per record (default 5)")
    s.add_argument(
        "--cache-dir", type=Path,
        help="where presets are exported (default ~/.cache/edgemem/graphs; keyed on model, weights content, "
        "export options and edgemem version)",
    )  # fmt: skip
    s.add_argument("--resume", type=Path, help="continue from a state file (.npz/.safetensors) of an earlier run")
    s.add_argument("--save-state", type=Path, help="write the state after the last clip (.npz or .safetensors)")
    s.add_argument("--quiet", action="store_true", help="no live view, only the summary")
    s.add_argument("--triton", metavar="HOST:PORT", help="remote steps on a Triton server (--model: its model name)")
    s.add_argument(
        "--request-timeout", type=positive_float, default=None, help="--triton: seconds per request (default 30)"
    )
    s.set_defaults(func=_stream)


def _session_options(args: argparse.Namespace, batch: int) -> dict[str, Any]:
    from edgemem.contract import read_contract
    from edgemem.errors import InputError, UnsupportedError
    from edgemem.runtimes.precisions import precision_options, run_graph_options

    opts: dict[str, Any] = {"batch": batch, "threads": args.threads}
    if not args.precision:
        return opts
    if str(args.model).endswith(".onnx") and Path(args.model).is_file():  # the graph computes in its own precision
        contract = read_contract(args.model)
        have = of_graph(contract.export, contract.quantized)
        try:
            return opts | run_graph_options(args.runtime, have, args.precision)[1]
        except UnsupportedError as e:
            raise InputError(f"{Path(args.model).name} is an {have.value} graph: {e}") from None
    return opts | precision_options(args.runtime, args.precision)  # names what this machine lacks


def _stream(args: argparse.Namespace) -> int:
    if args.triton:  # every source a concurrent stream on a Triton server
        from edgemem.serve.remote_stream import stream_command

        return stream_command(args)
    from edgemem.errors import InputError
    from edgemem.export.model_source import resolve_graph
    from edgemem.runtimes.availability import check
    from edgemem.runtimes.registry import RUNTIMES, open_session
    from edgemem.runtimes.state_io import check_same_model, check_suffix, load_state, save_state
    from edgemem.serve.annotate import AnnotationSink
    from edgemem.serve.live import LiveView
    from edgemem.serve.stream import EXIT_INCOMPLETE, JsonlWriter, StreamStats, run_stream

    if args.runtime not in RUNTIMES:
        raise InputError(f"unknown runtime '{args.runtime}'; available: {', '.join(RUNTIMES)}")
    if args.topk < 1:
        raise InputError("--topk must be >= 1")
    if args.request_timeout is not None:
        raise InputError("--request-timeout applies with --triton (a local session makes no requests)")
    avail = check(args.runtime)
    if not avail.available:
        raise InputError(f"runtime {args.runtime} is not available here: {avail.detail}")
    batch = len(args.sources) if args.batch else 1
    options = _session_options(args, batch)  # a precision this machine cannot run fails before any export
    model = resolve_graph(
        args.model, args.runtime, batch=batch, checkpoint=args.checkpoint, cache_dir=args.cache_dir,
        random_weights=args.random_weights, note=lambda line: print(f"edgemem stream: weights: {line}", file=sys.stderr),
    )  # fmt: skip
    saved = load_state(args.resume) if args.resume else None
    if args.save_state:
        check_suffix(args.save_state)  # refuse a bad suffix before streaming, not after
    jsonl = JsonlWriter(args.jsonl) if args.jsonl else None
    sink = AnnotationSink(args.out, len(args.sources)) if args.out else None
    view = LiveView(args.runtime)
    callbacks = [c for c in (jsonl, None if args.quiet else view) if c is not None]
    keep = False  # outputs are moved into place only when clips were classified and nothing failed
    stats = StreamStats()
    try:
        with (
            open_session(model, args.runtime, **options) as session,
            contextlib.nullcontext() if args.quiet else view,
        ):
            if saved is not None:
                check_same_model(saved, session.model_card, args.resume)
            stats = run_stream(
                session,
                args.sources,
                batch=args.batch,
                realtime=args.realtime,
                k=args.topk,
                on_clip=callbacks,
                frame_sink=sink,
                resume=saved.state if saved is not None else None,
                timeout_s=args.timeout,
            )
            if not stats.clips:
                first = stats.errors[0] if stats.errors else None
                more = f" (and {len(stats.errors) - 1} more source errors)" if len(stats.errors) > 1 else ""
                raise InputError(f"no clip was classified: {first.message if first else 'no frames'}{more}")
            if args.save_state:
                save_state(args.save_state, session.get_state(), session.state_spec, session.model_card)
            keep = True
    except KeyboardInterrupt:  # a live stream ends with Ctrl-C: keep the clips classified so far
        keep = True
        raise
    finally:
        if jsonl is not None:
            jsonl.close(keep=keep)
        if sink is not None:
            sink.close(keep=keep)
    view.summary(stats)
    for e in stats.errors:
        print(f"edgemem stream: incomplete: {e}", file=sys.stderr)
    if stats.errors:
        print(
            f"edgemem stream: {len(stats.errors)} of {len(args.sources)} sources incomplete;"
            f" {stats.clips} clips classified (exit status {EXIT_INCOMPLETE})",
            file=sys.stderr,
        )
        return EXIT_INCOMPLETE
    return 0

"""``edgemem serve export|start|bench``: Triton model repositories, a local server, a serving benchmark."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from edgemem.argtypes import positive_float
from edgemem.errors import InputError


def register(sub: Any) -> None:
    p = sub.add_parser("serve", help="serve graphs to many streams with NVIDIA Triton Inference Server")
    ss = p.add_subparsers(dest="serve_command", metavar="SUBCOMMAND", required=True)

    e = ss.add_parser("export", help="write a Triton model repository from edgemem graphs (their contract alone)")
    e.add_argument("graphs", nargs="+", metavar="GRAPH", help="edgemem .onnx graphs (step graphs or CM pair halves)")
    e.add_argument("--repo", required=True, type=Path, help="model repository folder (created; models replaced)")
    e.add_argument("--name", action="append", help="model name, once per graph (default: the file name)")
    e.add_argument("--max-batch", type=int, help="dynamic-batch graphs: Triton's max_batch_size (default 8)")
    e.add_argument("--instances", type=int, default=1, help="model instances (default 1)")
    e.add_argument("--strategy", choices=("oldest", "direct"), help="sequence batcher strategy (default oldest)")
    e.add_argument(
        "--idle-timeout", type=positive_float, help="seconds before an idle stream's memory is freed (default 60)"
    )
    e.add_argument("--max-sequences", type=int, help="oldest: streams per instance kept as candidates (default 256)")
    e.add_argument("--queue-delay-us", type=int, default=0, help="how long a batch may wait for more steps (default 0)")
    e.add_argument("--kind", choices=("cpu", "gpu"), default="cpu", help="instance kind (default cpu)")
    e.add_argument("--accelerator", choices=("openvino", "tensorrt"), help="ONNX Runtime backend accelerator")
    e.add_argument("--threads", type=int, help="intra-op threads of each instance (default: ONNX Runtime's)")
    e.set_defaults(func=_export)

    s = ss.add_parser("start", help="start a local Triton server on a repository (Ctrl-C stops it)")
    s.add_argument("--repo", required=True, type=Path, help="model repository (from `edgemem serve export`)")
    s.add_argument("--tritonserver", type=Path, help="server binary (default: the one nvidia-pytriton installs)")
    s.add_argument("--backend-directory", type=Path, help="backends folder with onnxruntime/ (default: assembled "
                   "from the kit in $EDGEMEM_TRITON_KIT)")  # fmt: skip
    s.add_argument("--grpc-port", type=int, default=8001, help="gRPC port on 127.0.0.1 (default 8001)")
    s.add_argument("--timeout", type=positive_float, default=120.0, help="seconds to wait until the models are ready")
    s.add_argument("--log", type=Path, help="server log file (default: a temp file)")
    s.set_defaults(func=_start)

    b = ss.add_parser("bench", help="latency, throughput and batch formation of concurrent streams on Triton")
    b.add_argument("--triton", required=True, metavar="HOST:PORT", help="the server's gRPC address")
    b.add_argument("--model", required=True, help="model name on the server")
    b.add_argument("--streams", default="1,4,16,32", help="concurrency levels (default 1,4,16,32)")
    b.add_argument("--clips", type=int, default=32, help="timed clips per stream (default 32)")
    b.add_argument("--warmup", type=int, default=2, help="untimed clips per stream first (default 2)")
    b.add_argument("--timeout", type=positive_float, default=60.0, help="seconds per request (default 60)")
    b.add_argument("--out", type=Path, help="write one bench result per level here (for `edgemem report`)")
    b.add_argument("--in-process", metavar="GRAPH", help="also time this graph in one batched in-process session")
    b.add_argument("--in-process-batch", type=int, default=None, help="its batch (default 8)")
    b.add_argument("--threads", type=int, help="its ONNX Runtime threads")
    b.set_defaults(func=_bench)


def _export(args: argparse.Namespace) -> int:
    from edgemem.serve.config import ServeOptions
    from edgemem.serve.graphs import STATEFUL, read_served_graph
    from edgemem.serve.repository import write_repository

    graphs = [read_served_graph(g) for g in args.graphs]
    stateful = [g for g in graphs if g.kind == STATEFUL]
    for flag, value in (("--strategy", args.strategy), ("--idle-timeout", args.idle_timeout),
                        ("--max-sequences", args.max_sequences)):  # fmt: skip
        if value is not None and not stateful:
            raise InputError(f"{flag} applies to graphs with state (the sequence batcher); none of these has state")
    if args.max_batch is not None and all(g.batch is not None for g in graphs):
        raise InputError("--max-batch applies to dynamic-batch graphs; these are batch 1 (max_batch_size 0)")
    if args.threads is not None and args.threads < 1:
        raise InputError("--threads must be >= 1")
    opts = ServeOptions(
        max_batch=args.max_batch or 8, instances=args.instances, strategy=args.strategy or "oldest",
        idle_timeout_s=args.idle_timeout or 60.0, kind=args.kind, accelerator=args.accelerator,
        max_sequences=256 if args.max_sequences is None else args.max_sequences,
        queue_delay_us=args.queue_delay_us, threads=args.threads,
    )  # fmt: skip
    served = write_repository(args.graphs, args.repo, names=args.name, opts=opts)
    for m in served:
        g = m.graph
        how = "sequence batcher, " + f"{len(g.state)} states" if g.kind == STATEFUL else "dynamic batching"
        if g.batch is not None and g.kind != STATEFUL:
            how = "no batching (batch-1 graph; export --batch dynamic to batch)"
        batch = f"max_batch_size {opts.max_batch}" if g.batch is None else "max_batch_size 0"
        print(f"{m.path}: {g.kind} model '{m.name}' from {g.path.name} ({how}, {batch})")
    return 0


def _start(args: argparse.Namespace) -> int:
    from edgemem.serve.server import TritonServer, find_tritonserver, resolve_backends

    if not 0 < args.grpc_port < 65536:
        raise InputError(f"--grpc-port must be a port number, got {args.grpc_port}")
    refuse_saturating_repository(Path(args.repo))
    binary, libs = find_tritonserver(args.tritonserver)
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edgemem" / "triton"
    backends = resolve_backends(args.backend_directory, libs, cache)
    server = TritonServer(args.repo, binary=binary, libs=libs, backends=backends, grpc_port=args.grpc_port,
                          log_path=args.log)  # fmt: skip
    server.start(args.timeout)  # a Ctrl-C while it loads stops it there (KeyboardInterrupt)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):  # Ctrl-C or a service manager: stop the server, then exit
        signal.signal(sig, lambda *_: stop.set())
    try:
        print(f"Triton serving {', '.join(server.models)} at {server.url} (gRPC); log {server.log_path}; Ctrl-C stops")
        sys.stdout.flush()
        while not stop.is_set() and server.process is not None and server.process.poll() is None:
            stop.wait(0.5)
        if server.process is not None and server.process.poll() is not None:
            print(f"edgemem serve: error: tritonserver stopped: {server.last_error()}", file=sys.stderr)
            return 2
    finally:
        server.stop()
    print("Triton stopped")
    return 0


def refuse_saturating_repository(repo: Path) -> None:
    """The CPU models of a repository this machine would serve pass ``refuse_saturating_weights``:
    Triton's ONNX Runtime backend would run 8-bit int8 weights here as ``ort-cpu`` would, saturated."""
    from edgemem.runtimes.int8_weights import refuse_saturating_weights

    for model in sorted(repo.glob("*/1/model.onnx")):
        config = model.parent.parent / "config.pbtxt"
        if config.is_file() and "KIND_CPU" in config.read_text():
            refuse_saturating_weights(model, f"Triton model '{model.parent.parent.name}'")


def _bench(args: argparse.Namespace) -> int:
    from edgemem.bench.schema import write_result
    from edgemem.serve.bench import in_process_clips_s, serve_bench

    try:
        streams = [int(s) for s in args.streams.split(",") if s.strip()]
    except ValueError:
        raise InputError(f"--streams must be comma-separated counts, got {args.streams!r}") from None

    def show(r: dict[str, Any], seconds: float) -> None:
        s, lat = r["serving"], r["latency_ms"]
        print(f"{s['streams']:>3} streams: {r['throughput_clips_s']:8.1f} clips/s, p50 {lat['p50']:.1f} ms, "
              f"p99 {lat['p99']:.1f} ms, real-time streams {s['realtime_streams']}/{s['streams']}, "
              f"mean batch {s['mean_batch']} ({s['inferences']} steps in {s['executions']} executions), "
              f"load {r['load_avg']} [{seconds:.0f} s]", flush=True)  # fmt: skip

    if args.in_process is None:
        given = [
            o for o, v in (("--in-process-batch", args.in_process_batch), ("--threads", args.threads)) if v is not None
        ]
        if given:
            raise InputError(f"{', '.join(given)}: only with --in-process GRAPH")
    for flag, value in (("--in-process-batch", args.in_process_batch), ("--threads", args.threads)):
        if value is not None and value < 1:
            raise InputError(f"{flag} must be >= 1, got {value}")
    batch = args.in_process_batch or 8
    results = serve_bench(args.triton, args.model, streams, args.clips, args.warmup, args.timeout, show)
    if args.in_process:
        steps = max(1, max(streams) * args.clips // batch)
        ref = in_process_clips_s(args.in_process, batch, steps, args.threads)
        print(f"in-process ort-cpu batch {batch}: {ref:.1f} clips/s")
        for r in results:
            ratio = r["throughput_clips_s"] / ref
            r["serving"]["in_process"] = {"graph": Path(args.in_process).name, "batch": batch,
                                          "clips_s": round(ref, 3), "ratio": round(ratio, 3)}  # fmt: skip
            print(f"{r['serving']['streams']:>3} streams: {ratio:.2f}x the in-process clips/s")
    if args.out:
        for r in results:
            print(f"wrote {write_result(args.out, r)}")
    return 0

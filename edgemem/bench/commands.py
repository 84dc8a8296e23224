"""``edgemem bench`` (run cells) and ``edgemem report`` (merge results into tables and plots)."""

from __future__ import annotations

import argparse
from pathlib import Path

from edgemem.argtypes import positive_float
from edgemem.errors import EdgememError
from edgemem.precision import choices


def _csv_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _int_list(text: str) -> list[int]:
    try:
        return [int(t) for t in _csv_list(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got '{text}'") from None


def _mapping(items: list[str] | None, what: str) -> dict[str, str]:
    out = {}
    for item in items or []:
        if "=" not in item:
            raise EdgememError(f"{what} must be MODEL=VALUE, got '{item}'")
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def register(sub: argparse._SubParsersAction) -> None:
    b = sub.add_parser(
        "bench",
        help="benchmark cells (model x runtime x precision x frame-scale), each in a fresh process",
        description="Measure latency (first, steady p50/p90/p99, reset), throughput, real-time factor, peak "
        "memory, GFLOPs, state bytes and (with --data) accuracy; one results JSON per cell in --out.",
    )
    b.add_argument("--models", type=_csv_list, required=True, help="comma-separated presets")
    b.add_argument("--runtimes", type=_csv_list, default=["ort-cpu"], help="comma-separated (see `edgemem runtimes`)")
    b.add_argument("--precision", type=_csv_list, default=["f32"], help=f"comma-separated: {','.join(choices())}")
    b.add_argument(
        "--frame-scale", type=_int_list, default=[1], help="comma-separated k: memory-less baseline fed k x frames"
    )
    b.add_argument("--clips", type=int, default=20, help="steady steps timed per cell")
    b.add_argument("--warmup", type=int, default=3, help="steps run and discarded before timing")
    b.add_argument("--repeats", type=int, default=1, help="interleaved rounds over all cells (medians are kept)")
    b.add_argument("--batch", type=int, default=1, help="streams per step")
    b.add_argument("--threads", type=int, default=None, help="intra-op threads per session (default: usable CPUs)")
    b.add_argument("--data", default=None, help="dataset folder: measure top-1 through each session")
    b.add_argument("--data-limit", type=int, default=None, help="at most this many videos for accuracy")
    b.add_argument("--checkpoint", action="append", metavar="MODEL=PATH", help="weights for a model (repeatable)")
    b.add_argument("--out", type=Path, default=Path("bench_results"), help="results folder")
    b.add_argument("--cache", type=Path, default=None, help="exported graphs cache (default OUT/graphs)")
    b.add_argument("--timeout", type=positive_float, default=1800.0, help="seconds before a cell (or export) is killed")
    b.add_argument(
        "--max-memory-mb",
        type=positive_float,
        default=None,
        help="kill a cell whose RSS exceeds this (default: 80%% of the memory available at start)",
    )
    b.set_defaults(func=_bench)

    r = sub.add_parser("report", help="merge benchmark results from any machines into Markdown/CSV tables and plots")
    r.add_argument("dirs", nargs="+", help="results folders or files")
    r.add_argument("--md", type=Path, default=None, help="Markdown report file (default: print it)")
    r.add_argument("--csv", type=Path, default=None, help="one CSV of every merged result")
    r.add_argument("--tables", type=Path, default=None, help="folder for bench-<runtime>-<precision>-<device>.csv")
    r.add_argument("--plots", type=Path, default=None, help="folder for PNG plots")
    r.add_argument(
        "--pair",
        action="append",
        metavar="MEMORY=BACKBONE",
        help="pair a memory model with a backbone (default: the backbone its graph card declares)",
    )
    r.set_defaults(func=_report)


def _available_mb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        return None
    return None


def _bench(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from edgemem.bench.harness import BenchConfig, count_runs, run_bench

    limit = args.max_memory_mb
    if limit is None and (avail := _available_mb()) is not None:
        limit = 0.8 * avail
    config = BenchConfig(
        models=args.models,
        runtimes=args.runtimes,
        precisions=args.precision,
        frame_scales=args.frame_scale,
        batch=args.batch,
        clips=args.clips,
        warmup=args.warmup,
        repeats=args.repeats,
        out=args.out,
        cache=args.cache,
        data=args.data,
        data_limit=args.data_limit,
        checkpoints=_mapping(args.checkpoint, "--checkpoint"),
        threads=args.threads,
        timeout_s=args.timeout,
        max_memory_mb=limit,
    )
    console = Console(stderr=True)
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        task = progress.add_task("planning", total=count_runs(config))

        def note(desc: str, advance: int = 0) -> None:
            if desc:
                progress.update(task, description=desc)
            if advance:
                progress.advance(task, advance)

        results = run_bench(config, note)
        progress.update(task, description="done", completed=progress.tasks[0].total)
    counts = {s: sum(r["status"] == s for r in results) for s in ("ok", "failed", "skipped")}
    reasons: dict[tuple[str, str], list[str]] = {}
    for r in results:
        if r["status"] != "ok":
            cell = f"{r['model']} fs{r['frame_scale']} {r['runtime']} {r['precision']}"
            reasons.setdefault((r["status"], r["error"] or ""), []).append(cell)
    for (status, why), cells in sorted(reasons.items()):
        colour = "red" if status == "failed" else "yellow"
        console.print(
            f"[{colour}]{status}[/] {len(cells)} cell(s) ({', '.join(cells[:4])}{' ...' if len(cells) > 4 else ''}): "
            + escape(why)
        )
    console.print(f"{counts['ok']} ok, {counts['failed']} failed, {counts['skipped']} skipped; results in {config.out}")
    return 0 if counts["failed"] == 0 else 1


def _report(args: argparse.Namespace) -> int:
    from edgemem.atomic import write_text
    from edgemem.bench.report import build_markdown, csv_text, dedupe, flat_row, table_groups
    from edgemem.bench.schema import read_results

    results = dedupe(read_results(args.dirs))
    if not results:
        raise EdgememError(f"no results files under {', '.join(args.dirs)}")
    pairs = _mapping(args.pair, "--pair")
    plots: list[Path] = []
    if args.plots is not None:
        from edgemem.bench.plots import accuracy_plots, fig3_plots, support_plots

        plots = fig3_plots(results, args.plots, pairs) + support_plots(results, args.plots)
        plots += accuracy_plots(results, args.plots)
    if args.csv is not None:
        write_text(args.csv, csv_text([flat_row(r) for r in results]))
    if args.tables is not None:
        for name, rs in table_groups(results).items():
            write_text(args.tables / f"{name}.csv", csv_text([flat_row(r) for r in rs]))
    links = plots
    if args.md is not None:  # links relative to the Markdown file
        import os

        links = [Path(os.path.relpath(p.resolve(), args.md.resolve().parent)) for p in plots]
    text = build_markdown(results, pairs, links)
    if args.md is not None:
        write_text(args.md, text)
        print(f"{len(results)} results -> {args.md}" + (f", {len(plots)} plots in {args.plots}" if plots else ""))
    else:
        print(text)
    return 0

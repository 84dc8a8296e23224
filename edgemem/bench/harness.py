"""Plan benchmark cells and run each one in a fresh subprocess.

A cell is model x runtime x precision x frame-scale (x batch). Frame-scale k means the memory-less
baseline fed k x more frames in one clip; memory models run at frame-scale 1 only (their temporal
support comes from the memory), so other combinations are recorded as skipped, with the reason.
Graphs are exported once per model/frame-scale/graph precision (in their own subprocess, so that
export memory never counts against a cell) and cached. Repeats are interleaved: round r runs every
cell once, in an order rotated by r, so that a noisy neighbour on a shared machine spreads over all
cells instead of ruining one; each cell's repeats are merged (medians) into one result file.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import edgemem.export  # noqa: F401  (registers the PyTorch runtimes "torch" and "torch-cuda")
from edgemem.atomic import write_json
from edgemem.bench.schema import Cell, empty_result, machine_info, write_result
from edgemem.bench.stats import derive_rates, merge_repeats
from edgemem.contract import ModelCard, read_contract
from edgemem.errors import EdgememError, UnsupportedError
from edgemem.hardware import resolve_threads
from edgemem.precision import choices
from edgemem.runtimes.precisions import graph_precision, session_options
from edgemem.runtimes.registry import takes_model


@dataclass
class BenchConfig:
    """Everything ``edgemem bench`` was asked to do."""

    models: list[str]
    runtimes: list[str]
    precisions: list[str] = field(default_factory=lambda: ["f32"])
    frame_scales: list[int] = field(default_factory=lambda: [1])
    batch: int = 1
    clips: int = 20
    warmup: int = 3
    repeats: int = 1
    out: Path = Path("bench_results")
    cache: Path | None = None
    data: str | None = None
    data_limit: int | None = None
    checkpoints: dict[str, str] = field(default_factory=dict)
    threads: int | None = None  # intra-op threads per session (None: the usable CPUs)
    timeout_s: float = 1800.0
    max_memory_mb: float | None = None

    def __post_init__(self) -> None:
        from edgemem.runtimes import list_runtimes

        unknown = [r for r in self.runtimes if r not in list_runtimes()]
        if unknown:
            raise EdgememError(f"unknown runtime {unknown}; choose from {', '.join(list_runtimes())}")
        bad = [p for p in self.precisions if p not in choices()]
        if bad:
            raise EdgememError(f"unknown precision {bad}; choose from {', '.join(choices())}")
        if any(k < 1 for k in self.frame_scales):
            raise EdgememError(f"frame scales must be >= 1, got {self.frame_scales}")
        for name, n, low in (("batch", self.batch, 1), ("clips", self.clips, 1), ("warmup", self.warmup, 0)):
            if n < low:
                raise EdgememError(f"--{name} must be >= {low}, got {n}")
        if self.threads is not None and self.threads < 1:
            raise EdgememError(f"--threads must be >= 1, got {self.threads}")
        if self.repeats < 1:
            raise EdgememError(f"--repeats must be >= 1, got {self.repeats}")
        if self.data_limit is not None and (self.data is None or self.data_limit < 1):
            raise EdgememError(f"--data-limit must be >= 1 and needs --data, got {self.data_limit}")
        for flag, limit in (("--timeout", self.timeout_s), ("--max-memory-mb", self.max_memory_mb)):
            if limit is not None and not (math.isfinite(limit) and limit > 0):
                raise EdgememError(f"{flag} must be a finite number > 0, got {limit}")
        if self.data is not None:
            from edgemem.models.pretrained import is_zoo_name

            untrained = [m for m in self.models if m not in self.checkpoints and not is_zoo_name(m)]
            if untrained:
                raise EdgememError(
                    f"--data scores accuracy, and {', '.join(untrained)} would run untrained (a preset benchmarks its "
                    "random initialisation): name shipped weights (`edgemem models --zoo`) or pass --checkpoint MODEL=PATH"
                )
        self.out = Path(self.out)
        self.cache = Path(self.cache) if self.cache else self.out / "graphs"


@dataclass
class PlannedCell:
    cell: Cell
    skip: str | None = None  # why this combination is not measured


def card_facts(card: ModelCard, graph: Path) -> dict[str, Any]:
    """What a cell records about its model, from a graph's card (the cost was measured at export)."""
    cost = card.cost
    if cost is None:
        raise EdgememError(f"{graph} carries no cost (a contract-1 graph): delete it so that it is re-exported")
    return {
        "name": card.name, "family": card.family, "frames": card.clip.frames,
        "sampling_rate": card.clip.sampling_rate, "crop_size": card.clip.crop_size, "frame_scale": card.frame_scale,
        "clip_seconds": round(card.clip.seconds, 4), "gflops_step": cost.gflops_step,
        "gflops_first_step": cost.gflops_first_step, "params": cost.params, "state_bytes": cost.state_bytes,
        "temporal_support": {"clips": cost.temporal_support_clips, "seconds": cost.temporal_support_s},
        "memory": None if card.memory is None else card.memory.kind, "backbone": card.backbone,
    }  # fmt: skip


def model_facts(config: BenchConfig, model: str, frame_scale: int) -> dict[str, Any]:
    """``card_facts`` of the model at this frame scale, read from its f32 graph (exported once, cached;
    the f32 cells of the model run that same file)."""
    path = prepare_graph(config, Cell(model, "ort-cpu", "f32", frame_scale, config.batch))
    return card_facts(read_contract(path).card, path)


def plan_cells(config: BenchConfig, is_memory_model: Callable[[str], bool]) -> list[PlannedCell]:
    """Every requested combination, with the meaningless ones marked skipped (and why)."""
    planned = []
    for model in config.models:
        memory = is_memory_model(model)
        for k in config.frame_scales:
            for runtime in config.runtimes:
                for precision in config.precisions:
                    cell = Cell(model, runtime, precision, k, config.batch)
                    skip = None
                    if memory and k != 1:
                        skip = (
                            f"{model} is a memory model: it runs at frame-scale 1 (its temporal support comes"
                            " from memory); frame-scaling applies to memory-less baselines"
                        )
                    planned.append(PlannedCell(cell, skip))
    return planned


def interleaved_order(n: int, round_index: int) -> list[int]:
    """Cell indices for one round: all cells, rotated by the round number."""
    if n == 0:
        return []
    r = round_index % n
    return list(range(r, n)) + list(range(r))


def _vm_rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        return None
    return None


@dataclass
class ProcessOutcome:
    returncode: int | None
    stderr_tail: str
    killed: str | None  # why the harness killed the process, if it did
    seconds: float


def run_watched(cmd: list[str], timeout_s: float, max_memory_mb: float | None) -> ProcessOutcome:
    """Run ``cmd``; kill it past ``timeout_s`` or when its RSS exceeds ``max_memory_mb``."""
    t0 = time.monotonic()
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=_child_env())
        killed = None
        while proc.poll() is None:
            elapsed = time.monotonic() - t0
            if elapsed > timeout_s:
                killed = f"timed out after {timeout_s:.0f} s"
            elif max_memory_mb is not None and (_vm_rss_mb(proc.pid) or 0) > max_memory_mb:
                killed = f"exceeded the memory limit of {max_memory_mb:.0f} MiB (--max-memory-mb)"
            if killed:
                proc.kill()
                proc.wait()
                break
            time.sleep(0.1)
        err.seek(0)
        tail = err.read()[-4000:].decode(errors="replace")
    return ProcessOutcome(proc.returncode, tail, killed, time.monotonic() - t0)


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def _last_error_line(stderr: str) -> str:
    lines = [ln.strip() for ln in stderr.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "no error output"


def graph_file(config: BenchConfig, cell: Cell) -> Path:
    """Where the exported graph of a cell is cached (the one graph cache's key: the checkpoint's content,
    not its name; bench graphs of presets without --checkpoint have random weights, for timing)."""
    from edgemem.export.graph_cache import GraphKey, weights_id

    assert config.cache is not None
    key = GraphKey.of(
        cell.model, weights_id(config.checkpoints.get(cell.model)), batch=cell.batch,
        precision=graph_precision(cell.runtime, cell.precision), frame_scale=cell.frame_scale,
    )  # fmt: skip
    return config.cache / key.filename()


def prepare_graph(config: BenchConfig, cell: Cell) -> Path:
    """Export (once, in a subprocess) the graph a cell runs; raises EdgememError if export fails."""
    path = graph_file(config, cell)
    if path.is_file():
        return path
    cmd = [
        sys.executable,
        "-m",
        "edgemem.bench.prepare",
        "--model",
        cell.model,
        "--frame-scale",
        str(cell.frame_scale),
        "--batch",
        str(cell.batch),
        "--precision",
        graph_precision(cell.runtime, cell.precision),
        "--out",
        str(path),
    ]
    if cell.model in config.checkpoints:
        cmd += ["--checkpoint", config.checkpoints[cell.model]]
    outcome = run_watched(cmd, config.timeout_s, config.max_memory_mb)
    if outcome.killed or outcome.returncode != 0 or not path.is_file():
        why = outcome.killed or _last_error_line(outcome.stderr_tail)
        raise EdgememError(f"export of {path.name} failed: {why}")
    return path


def run_cell_process(
    config: BenchConfig, cell: Cell, graph: Path | None, info: dict[str, Any], machine: dict[str, Any]
) -> dict[str, Any]:
    """One repeat of one cell in a fresh subprocess; a crash or kill becomes a failed result."""
    spec = {
        "cell": cell.to_json(),
        "graph": None if graph is None else str(graph),
        "checkpoint": config.checkpoints.get(cell.model),
        "info": info,
        "machine": machine,
        "clips": config.clips,
        "warmup": config.warmup,
        "data": config.data,
        "data_limit": config.data_limit,
        "threads": resolve_threads(config.threads),  # the effective count, recorded in settings
    }
    with tempfile.TemporaryDirectory(prefix="edgemem-cell-") as tmp:
        spec_file, out_file = Path(tmp) / "spec.json", Path(tmp) / "result.json"
        spec_file.write_text(json.dumps(spec))
        cmd = [sys.executable, "-m", "edgemem.bench.cell", "--spec", str(spec_file), "--out", str(out_file)]
        outcome = run_watched(cmd, config.timeout_s, config.max_memory_mb)
        if out_file.is_file() and not outcome.killed:
            return json.loads(out_file.read_text())
    why = outcome.killed or f"cell process exited with code {outcome.returncode}: " + _last_error_line(
        outcome.stderr_tail
    )
    return empty_result(cell, machine, "failed", why)


@dataclass
class _Row:
    planned: PlannedCell
    info: dict[str, Any] | None = None
    graph: Path | None = None
    error: str | None = None
    repeats: list[dict[str, Any]] = field(default_factory=list)


def run_bench(config: BenchConfig, progress: Any = None) -> list[dict[str, Any]]:
    """Run every planned cell ``config.repeats`` times (interleaved) and write one result per cell.

    ``progress(description, advance)`` is called as work completes (see ``commands``).
    """
    note = progress or (lambda desc, advance=0: None)
    machine = machine_info()
    facts: dict[tuple[str, int], dict[str, Any] | EdgememError] = {}

    def facts_of(model: str, k: int) -> dict[str, Any] | EdgememError:
        if (model, k) not in facts:
            try:
                note(f"export {model} fs{k} f32 (its card holds the costs)")
                facts[(model, k)] = model_facts(config, model, k)
            except Exception as e:  # noqa: BLE001 - an unbuildable model fails its cells, not the run
                facts[(model, k)] = e if isinstance(e, EdgememError) else EdgememError(f"{type(e).__name__}: {e}")
        return facts[(model, k)]

    def is_memory(model: str) -> bool:
        f = facts_of(model, 1)
        return isinstance(f, dict) and bool(f.get("memory"))

    rows = [_Row(p) for p in plan_cells(config, is_memory)]
    for row in rows:
        cell = row.planned.cell
        if row.planned.skip:
            continue
        f = facts_of(cell.model, cell.frame_scale)
        if isinstance(f, EdgememError):
            row.error = f"model: {f}"
            continue
        row.info = f
        try:
            session_options(cell.runtime, cell.precision)
        except UnsupportedError as e:
            row.planned.skip = str(e)
    write_json(config.out / "bench_config.json", _config_json(config, machine))
    for row in rows:  # skipped and failed cells are on disk before anything is measured
        if row.planned.skip or row.error:
            _write_row(config, row, machine)

    # Graphs are exported when a cell first needs one, so results appear while the run goes on.
    export_errors: dict[Path, str] = {}
    active = [r for r in rows if not r.planned.skip and not r.error]
    for rnd in range(config.repeats):
        for i in interleaved_order(len(active), rnd):
            row = active[i]
            cell = row.planned.cell
            if row.error:
                continue
            if row.info is None:  # every active row had its model facts set above
                raise RuntimeError(f"bench cell {cell.key} has no model facts")
            if not takes_model(cell.runtime) and row.graph is None:  # torch runtimes build the model themselves
                path = graph_file(config, cell)
                note(f"export {cell.model} fs{cell.frame_scale} {graph_precision(cell.runtime, cell.precision)}")
                try:
                    if path in export_errors:
                        raise EdgememError(export_errors[path])
                    row.graph = prepare_graph(config, cell)
                except EdgememError as e:
                    row.error = export_errors[path] = str(e)
                    _write_row(config, row, machine)
                    note("", advance=config.repeats - rnd)
                    continue
            note(f"[{rnd + 1}/{config.repeats}] {cell.key}")
            row.repeats.append(run_cell_process(config, cell, row.graph, row.info, machine))
            _write_row(config, row, machine)
            note("", advance=1)
    return [_write_row(config, row, machine) for row in rows]


def _write_row(config: BenchConfig, row: _Row, machine: dict[str, Any]) -> dict[str, Any]:
    """The row's result as it stands (repeats merged so far), written to its file."""
    cell = row.planned.cell
    if row.planned.skip:
        result = empty_result(cell, machine, "skipped", row.planned.skip)
    elif row.error:
        result = empty_result(cell, machine, "failed", row.error)
    else:
        result = merge_repeats(row.repeats)
        derive_rates(result)
    write_result(config.out, result)
    return result


def count_runs(config: BenchConfig) -> int:
    """Upper bound of cell processes (skips excluded later), for a progress bar."""
    return (
        len(config.models) * len(config.runtimes) * len(config.precisions) * len(config.frame_scales) * (config.repeats)
    )


def _config_json(config: BenchConfig, machine: dict[str, Any]) -> dict[str, Any]:
    d = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(config).items()}
    return {"bench_config": d, "argv": sys.argv, "machine": machine}

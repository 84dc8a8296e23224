"""``edgemem runtimes``: what can run here (``edgemem stream`` is in ``edgemem.serve``)."""

from __future__ import annotations

import argparse
import json
from typing import Any

# What int8 buys on this CPU, by ``hardware.int8_gemm`` (measured: docs/BENCHMARKS.md, "Does int8 pay").
_INT8_GEMM = {
    "amx": "int8 GEMMs: AMX",
    "vnni": "int8 GEMMs: VNNI (int8 Linear layers 2-4x f32)",
    "avx2": "int8 GEMMs: AVX2 without VNNI (on a Zen 3 EPYC: ONNX Runtime's int8 step 1.4x its f32, "
    "OpenVINO's int8 slower than its f32; measure with python -m edgemem.bench.gemm)",
    "none": "int8 GEMMs: no x86 int8 dot-product instructions",
}


def register(sub: Any) -> None:
    p = sub.add_parser("runtimes", help="list the runtimes and whether they can run here")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_runtimes)


def _runtimes(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from edgemem import hardware
    from edgemem.runtimes.availability import availability
    from edgemem.runtimes.registry import RUNTIMES

    rows = availability()
    machine = hardware.summary()
    if args.json:
        rows_json = [
            r.to_json() | {"description": RUNTIMES[r.runtime].description, "device": RUNTIMES[r.runtime].device}
            for r in rows
        ]
        print(json.dumps({"machine": machine, "runtimes": rows_json}, indent=2))
        return 0
    quota, omp = machine["cpu_quota"], machine["omp_num_threads"]
    table = Table(
        title="edgemem runtimes",
        caption=f"usable CPUs {machine['usable_cpus']} (affinity {machine['affinity_cpus']}, cgroup quota "
        f"{'none' if quota is None else f'{quota:g}'}), default threads {machine['default_threads']}"
        f"{f' (OMP_NUM_THREADS={omp})' if omp else ''}; "
        f"CPU flags: {' '.join(machine['flags']) or 'unknown'}; {_INT8_GEMM[machine['int8_gemm']]}",
    )
    for col in ("runtime", "available", "precisions", "detail"):
        table.add_column(col)
    for r in rows:
        table.add_row(r.runtime, "yes" if r.available else "no", ",".join(r.precisions), escape(r.detail))
    Console().print(table)
    return 0

"""The machine's measured fp32 peak: large matrix products (``python -m edgemem.bench.peak``).

Real FLOPs (2 per multiply-add), as the achieved GFLOP/s of the result files. Two numbers: per
wall-clock second (all cores, what was available then) and per CPU-second of the process (one
core's rate, which a busy shared machine does not dilute); the machine's peak is the second times
the cores.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np


def matmul_peak(n: int = 2048, repeats: int = 10) -> dict[str, float]:
    """Best fp32 GFLOP/s of ``n x n @ n x n`` (numpy's BLAS): per wall second and per CPU-second."""
    rng = np.random.default_rng(0)
    a = rng.random((n, n), dtype=np.float32)
    b = rng.random((n, n), dtype=np.float32)
    a @ b  # warm-up: threads, caches
    wall = cpu = float("inf")
    for _ in range(repeats):
        c0, t0 = time.process_time(), time.perf_counter()
        a @ b
        wall = min(wall, time.perf_counter() - t0)
        cpu = min(cpu, time.process_time() - c0)
    flops = 2 * n**3 / 1e9
    per_core = flops / cpu
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return {
        "gflop_s_wall": round(flops / wall, 1),
        "gflop_s_per_core": round(per_core, 1),
        "cores": cores,
        "gflop_s_peak": round(per_core * cores, 1),
        "n": n,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m edgemem.bench.peak", description=__doc__)
    p.add_argument("--n", type=int, default=2048)
    p.add_argument("--repeats", type=int, default=10)
    args = p.parse_args(argv)
    print(json.dumps(matmul_peak(args.n, args.repeats)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

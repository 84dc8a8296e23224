"""The machine's measured fp32 peak: large matrix products (``python -m edgemem.bench.peak``).

Real FLOPs (2 per multiply-add), as the achieved GFLOP/s of the result files. The best of
``repeats`` timings of an ``n x n`` product; on a shared machine it is what was available then.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np


def matmul_peak_gflop_s(n: int = 2048, repeats: int = 10) -> float:
    """Best fp32 GFLOP/s of ``n x n @ n x n`` with numpy's BLAS, all cores."""
    rng = np.random.default_rng(0)
    a = rng.random((n, n), dtype=np.float32)
    b = rng.random((n, n), dtype=np.float32)
    a @ b  # warm-up: threads, caches
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m edgemem.bench.peak", description=__doc__)
    p.add_argument("--n", type=int, default=2048)
    p.add_argument("--repeats", type=int, default=10)
    args = p.parse_args(argv)
    print(json.dumps({"fp32_matmul_gflop_s": round(matmul_peak_gflop_s(args.n, args.repeats), 1), "n": args.n}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

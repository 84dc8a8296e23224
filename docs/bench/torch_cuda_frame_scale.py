"""PyTorch on CUDA: step latency and peak GPU memory of the memory models against the memory-less model
frame-scaled (k x frames per clip), batch 1, f32, random weights (latency and memory do not depend on them).

    NVIDIA_TF32_OVERRIDE=0 PYTHONPATH=. python docs/bench/torch_cuda_frame_scale.py OUT.json [cpu]

Each cell: one first step (reset), 2 warm-up steps, then up to 10 timed steps (60 s cap); the median is
kept. A cell that fails (out of memory, say) is recorded with its error. `cpu` runs two tiny cells on the
CPU to try the script. Results of the H200 run: docs/bench/results/gpu-h200-torch/, docs/BENCHMARKS.md.
"""
import json, statistics, sys, time

import numpy as np
import torch

import edgemem.export  # noqa: F401  registers the torch runtime
from edgemem.models import create_model
from edgemem.runtimes import open_session

out, device = sys.argv[1], (sys.argv[2] if len(sys.argv) > 2 else "cuda")
cells = [("memvit16_16x4", 1), ("mvit16_16x4", 1), ("mvit16_16x4", 4), ("mvit16_16x4", 16),
         ("memvit_tiny_long", 1), ("mvit_tiny", 1), ("mvit_tiny", 16)]
if device == "cpu":
    cells = [("memvit_tiny_long", 1), ("mvit_tiny", 4)]
rows = []
for name, k in cells:
    row = {"model": name, "frame_scale": k, "device": device}
    try:
        torch.manual_seed(0)
        model = create_model(name, frame_scale=k) if k > 1 else create_model(name)
        if device == "cuda":
            torch.cuda.empty_cache(); torch.cuda.reset_peak_memory_stats()
        with open_session(model, "torch", batch=1, device=device) as s:
            x = np.random.default_rng(0).standard_normal((1, *s.input_shape)).astype(np.float32)
            reset = np.zeros(1, bool)
            t0 = time.perf_counter(); s.step(x, np.ones(1, bool)); first = time.perf_counter() - t0
            for _ in range(2):
                s.step(x, reset)
            times, start = [], time.perf_counter()
            while len(times) < 10 and time.perf_counter() - start < 60:
                t = time.perf_counter(); s.step(x, reset); times.append(time.perf_counter() - t)
        row.update(first_ms=1e3 * first, p50_ms=1e3 * statistics.median(times), steps=len(times),
                   input=list(x.shape), status="ok")
        if device == "cuda":
            row["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
        del model
    except Exception as e:  # record out-of-memory and the like as the result it is
        row.update(status="failed", error=f"{type(e).__name__}: {str(e).splitlines()[0][:300]}")
    rows.append(row)
    print(json.dumps(row), flush=True)
    json.dump({"torch": torch.__version__, "gpu": torch.cuda.get_device_name(0) if device == "cuda" else None,
               "tf32": torch.backends.cuda.matmul.allow_tf32, "rows": rows}, open(out, "w"), indent=1)

"""Round-robin step timing of several contenders in one process: int8 vs f32, runtime vs runtime, and
the official eager MeMViT code, all under the same neighbours.

``python -m edgemem.bench.roundrobin --graph f32-ov=F32.onnx:openvino --graph int8-ov=INT8.onnx:openvino
--official /tmp/memvit_official --rounds 6 --baseline f32-ov``

Every contender is opened once and warmed up; then each round runs one step of every contender, the
order rotated by one each round, so a noisy neighbour spreads over all of them. Printed (JSON): per
contender the median wall and CPU ms per step and the per-round wall times; per pair with the
baseline the median of the per-round ratios (contender / baseline); the machine's ISA flags and
the load average before and after. ``bench.pair`` is the two-graph special case.

ISA caps: run with ``ONEDNN_MAX_CPU_ISA=AVX2`` (OpenVINO's oneDNN and snippets kernels, PyTorch's
oneDNN), ``ATEN_CPU_CAPABILITY=avx2`` (PyTorch's own kernels) and ``MKL_ENABLE_INSTRUCTIONS=AVX2``
(PyTorch's BLAS) to time AVX2 kernels on an AVX-512 CPU. The result records the caps
(``machine.isa_caps``), the kernel ISA each OpenVINO contender really compiled to
(``openvino_kernel_isa``: OpenVINO's MVN/Reduce/RMS kernels and its MLAS f32 GEMMs ignore the cap)
and PyTorch's CPU capability; ONNX Runtime has no such cap (MLAS picks kernels by CPUID), so its
rows keep the CPU's full ISA.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from edgemem.errors import EdgememError, InputError

ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_int8", "amx_bf16")
ISA_CAPS = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS")


def isa_caps() -> dict[str, str]:
    """The kernel-ISA caps set in the environment (``ISA_CAPS``): the CPU's flags are then not the
    ISA the kernels ran."""
    return {k: os.environ[k] for k in ISA_CAPS if os.environ.get(k)}


def cpu_info() -> dict[str, Any]:
    """CPU model and the ISA flags of ``ISA_FLAGS`` it reports in /proc/cpuinfo (Linux)."""
    try:
        with open("/proc/cpuinfo") as f:
            lines = f.read().splitlines()
    except OSError:
        return {"cpu": platform.machine(), "isa": [], "cpus": os.cpu_count()}
    field = {ln.split(":", 1)[0].strip(): ln.split(":", 1)[1].strip() for ln in reversed(lines) if ":" in ln}
    flags = field.get("flags", "").split()
    return {"cpu": field.get("model name", platform.machine()), "isa": [f for f in ISA_FLAGS if f in flags],
            "cpus": os.cpu_count()}  # fmt: skip


def _graph_contender(spec: str, threads: int | None) -> tuple[str, Callable[[], object], Any, str]:
    """``LABEL=PATH:RUNTIME[:PRECISION]`` -> (label, step, session, the precision it runs)."""
    from edgemem.contract import read_contract
    from edgemem.precision import of_graph
    from edgemem.runtimes import open_session
    from edgemem.runtimes.precisions import run_graph_options

    label, sep, rest = spec.partition("=")
    parts = rest.split(":")
    if not sep or not label or len(parts) not in (2, 3):
        raise InputError(f"--graph {spec!r}: expected LABEL=PATH:RUNTIME[:PRECISION]")
    path, runtime = parts[0], parts[1]
    contract = read_contract(path)
    # PRECISION is what runs (the graph's own by default); one the graph cannot run is refused
    run, options = run_graph_options(
        runtime, of_graph(contract.export, contract.quantized), parts[2] if len(parts) == 3 else None
    )
    session = open_session(path, runtime, threads=threads, **options)
    frames = np.random.default_rng(0).standard_normal((session.batch, *session.input_shape), dtype=np.float32)
    return label, lambda: session.step(frames), session, run.value


def _timed(step: Callable[[], object]) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    step()
    return (time.perf_counter() - wall) * 1e3, (time.process_time() - cpu) * 1e3


def roundrobin(
    graphs: list[str], official: str | None, rounds: int, warmup: int, threads: int | None, baseline: str | None
) -> dict[str, Any]:
    contenders: list[tuple[str, Callable[[], object]]] = []
    sessions = []
    precisions: dict[str, str] = {}
    for spec in graphs:
        label, step, session, precisions[label] = _graph_contender(spec, threads)
        contenders.append((label, step))
        sessions.append(session)
    if official:
        from edgemem.bench.official import official_step

        num_classes = sessions[0].num_classes if sessions else 400
        shape = (1, *sessions[0].input_shape) if sessions else (1, 3, 16, 224, 224)
        frames = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
        run = official_step(official, num_classes, threads)
        contenders.append(("official-eager", lambda: run(frames)))
    labels = [c[0] for c in contenders]
    if len(set(labels)) != len(labels):
        raise InputError(f"contender labels must be unique, got {labels}")
    if baseline is not None and baseline not in labels:
        raise InputError(f"--baseline {baseline!r} is not one of {labels}")
    load_before = os.getloadavg()
    for _ in range(warmup):
        for _, step in contenders:
            step()
    times: dict[str, list[tuple[float, float]]] = {lab: [] for lab in labels}
    for r in range(rounds):
        k = r % len(contenders)
        for label, step in contenders[k:] + contenders[:k]:
            times[label].append(_timed(step))
    kernels = {lab: s.kernel_precisions() for lab, s in zip(labels[: len(sessions)], sessions, strict=True)
               if hasattr(s, "kernel_precisions")}  # fmt: skip
    kernel_isa = {lab: s.kernel_isas() for lab, s in zip(labels[: len(sessions)], sessions, strict=True)
                  if hasattr(s, "kernel_isas")}  # fmt: skip
    for s in sessions:
        s.close()
    machine = cpu_info()
    caps = isa_caps()
    if caps:
        machine["isa_caps"] = caps
        machine["isa_note"] = ("kernels capped by isa_caps: 'isa' lists the CPU's flags, not the kernels' ISA; "
                               "see openvino_kernel_isa (ONNX Runtime has no cap)")  # fmt: skip
    result: dict[str, Any] = {
        "rounds": rounds,
        "threads": threads,
        "machine": machine,
        "load_avg_1min": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "contenders": {
            lab: {
                "wall_ms_p50": round(statistics.median(w for w, _ in ts), 1),
                "cpu_ms_p50": round(statistics.median(c for _, c in ts), 1),
                "precision": precisions.get(lab, "f32"),  # the official code runs eager f32
                "wall_ms": [round(w, 1) for w, _ in ts],
            }
            for lab, ts in times.items()
        },
    }
    result["openvino_kernel_precisions"] = kernels
    result["openvino_kernel_isa"] = kernel_isa
    if official:
        import torch

        result["official_torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    if baseline is not None:
        base = [w for w, _ in times[baseline]]
        result["baseline"] = baseline
        result["wall_ratio_p50"] = {
            lab: round(statistics.median(w / b for (w, _), b in zip(ts, base, strict=True)), 3)
            for lab, ts in times.items()
        }
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m edgemem.bench.roundrobin", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--graph", action="append", default=[], metavar="LABEL=PATH:RUNTIME[:PRECISION]")
    p.add_argument("--official", default=None, metavar="DIR", help="a checkout of facebookresearch/MeMViT")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--baseline", default=None, metavar="LABEL", help="ratios are per round against this one")
    args = p.parse_args(argv)
    try:
        if args.rounds < 1 or not (args.graph or args.official):
            raise InputError("need --rounds >= 1 and at least one --graph or --official")
        result = roundrobin(args.graph, args.official, args.rounds, args.warmup, args.threads, args.baseline)
    except EdgememError as e:
        print(f"python -m edgemem.bench.roundrobin: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

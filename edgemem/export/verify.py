"""Polygraphy-style verification of an exported graph against the PyTorch reference.

A generated stream (``stream.make_stream``: several videos per slot, boundaries at different steps
in different slots) goes through the reference (``StreamingModel.step``) and through each runtime
session (``edgemem.runtimes.open_session``); both carry their own state, so the per-step error is
the error accumulated over the stream (the drift curve). Every output is compared: ``logits`` and
every state tensor. An output passes when every element satisfies |Δ| <= atol + rtol * |ref|, or
all but ``Tolerance.outliers`` of them (int8: 0.1%) do, and none is NaN or infinite.
The reference may also be a saved one (``saved_reference.SavedReference``): its stream and outputs
replace the PyTorch model, so a machine without the model checks its runtimes against them.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgemem.contract import LOGITS, state_out_name
from edgemem.errors import EdgememError, InputError, UnsupportedError
from edgemem.export.stream import Stream, make_stream
from edgemem.precision import Precision, of_graph
from edgemem.runtimes.graph import GraphInfo, read_graph


@dataclass(frozen=True)
class Tolerance:
    """Per-element bound |Δ| <= atol + rtol * |reference| for logits and for state tensors, and the share
    of an output's elements (over all steps, rounded down) allowed beyond it: ``outliers``."""

    logits_atol: float
    logits_rtol: float
    state_atol: float
    state_rtol: float
    outliers: float = 0.0

    def __post_init__(self) -> None:
        for name in ("logits_atol", "logits_rtol", "state_atol", "state_rtol", "outliers"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):  # NaN would pass every comparison's negation
                flag = {"logits_atol": "--atol", "state_atol": "--state-atol", "outliers": "--outliers"}.get(name, name)
                raise InputError(f"{flag} must be a finite number >= 0, got {value}")
        if self.outliers >= 1:
            raise InputError(f"--outliers is a share of the elements, below 1, got {self.outliers}")

    def for_output(self, name: str) -> tuple[float, float]:
        return (self.logits_atol, self.logits_rtol) if name == LOGITS else (self.state_atol, self.state_rtol)


# Defaults per graph precision (see docs/EXPORT.md for the measurements behind them).
TOLERANCES: dict[Precision, Tolerance] = {
    Precision.F32: Tolerance(1e-4, 0.0, 1e-4, 1e-4),
    Precision.FP16: Tolerance(5e-2, 5e-2, 5e-2, 5e-2),
    # int8: activation quantization leaves a few outliers in a long stream's state (5 of 133,120 elements of
    # memvit_tiny's mem.3.k over 16 real clips, |Δ| 0.72, p99 0.14), so 0.1% of the elements may exceed.
    Precision.INT8: Tolerance(0.5, 0.2, 0.5, 0.2, outliers=1e-3),
}


@dataclass
class OutputResult:
    """Error statistics of one output over all steps, and its per-step max |Δ| (the drift curve)."""

    name: str
    max_abs: float
    mean_abs: float
    p99_abs: float
    max_ref: float
    atol: float
    rtol: float
    violations: int
    worst_step: int
    per_step_max: list[float]
    top1_agreement: float | None = None  # logits only: share of (step, slot) with the same argmax
    elements: int = 0  # compared, over all steps
    allowed: int = 0  # violations allowed: Tolerance.outliers of the elements, rounded down

    @property
    def passed(self) -> bool:
        return self.violations <= self.allowed and math.isfinite(self.max_abs)

    def verdict(self) -> str:
        """``PASS``, ``PASS (3 of 133120 elements beyond, 133 allowed)`` or ``FAIL (N elements, ...)``."""
        if self.passed:
            return (
                f"PASS ({self.violations} of {self.elements} elements beyond, {self.allowed} allowed)"
                if self.violations
                else "PASS"
            )
        allowed = f", {self.allowed} allowed" if self.allowed else ""
        return f"FAIL ({self.violations} elements{allowed}, worst at step {self.worst_step})"


@dataclass
class RuntimeResult:
    runtime: str
    outputs: list[OutputResult] = field(default_factory=list)
    seconds: float = 0.0
    error: str | None = None
    kernels: dict[str, dict[str, int]] | None = None  # OpenVINO: compiled layers per runtime precision

    @property
    def passed(self) -> bool:
        return self.error is None and all(o.passed for o in self.outputs)

    def drift(self) -> dict[str, list[float]]:
        """Per-step max |Δ| of the logits and of all state tensors together."""
        logits = next((o.per_step_max for o in self.outputs if o.name == LOGITS), [])
        states = [o.per_step_max for o in self.outputs if o.name != LOGITS]
        return {"logits": logits, "state": [max(v) for v in zip(*states, strict=True)] if states else []}


@dataclass
class VerifyReport:
    graph: str
    precision: str
    batch: int
    steps: int
    boundaries: list[list[int]]
    checker: str
    runtimes: list[RuntimeResult]
    reference: str = "torch"

    @property
    def passed(self) -> bool:
        return self.checker == "PASS" and all(r.passed for r in self.runtimes)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["passed"] = self.passed
        for r, rj in zip(self.runtimes, out["runtimes"], strict=True):
            rj["passed"] = r.passed
            rj["drift"] = r.drift()
            for o, oj in zip(r.outputs, rj["outputs"], strict=True):
                oj["passed"] = o.passed
        return out

    def failures(self) -> str:
        """What failed, in one line: ``runtime: output N elements, max |Δ| X; ...`` (the checker first)."""
        parts = [] if self.checker == "PASS" else [f"onnx.checker {self.checker}"]
        for r in self.runtimes:
            if r.error:
                parts.append(f"{r.runtime}: {r.error.splitlines()[0]}")
            bad = [f"{o.name} {o.violations} elements, max |Δ| {o.max_abs:.3g}" for o in r.outputs if not o.passed]
            if bad:
                parts.append(f"{r.runtime}: " + ", ".join(bad))
        return "; ".join(parts)

    def format(self) -> str:
        """A Polygraphy-like text report: one line per output, the drift curve, the verdict."""
        lines = [
            f"[I] Verifying {self.graph} ({self.precision}): {self.steps} steps, batch {self.batch}, "
            f"video boundaries per slot {self.boundaries}",
            f"[I] onnx.checker (full): {self.checker}",
        ]
        for r in self.runtimes:
            if r.error:
                lines.append(f"[E] {r.runtime}: {r.error}")
                continue
            lines.append(f"[I] Comparing {r.runtime} vs {self.reference} ({r.seconds:.1f} s)")
            width = max(len(o.name) for o in r.outputs)
            for o in r.outputs:
                lines.append(
                    f"[I]   {o.name:<{width}}  max {o.max_abs:.3e}  mean {o.mean_abs:.3e}  p99 {o.p99_abs:.3e}"
                    f"  (|ref| <= {o.max_ref:.3g}; atol {o.atol:g} rtol {o.rtol:g})  "
                    + ("" if o.top1_agreement is None else f"top-1 agree {100 * o.top1_agreement:.1f}%  ")
                    + o.verdict()
                )
            for key, curve in r.drift().items():
                if curve:
                    lines.append(f"[I]   drift {key:<6} max|Δ| per step: " + " ".join(f"{v:.1e}" for v in curve))
            if r.kernels is not None:
                from edgemem.runtimes.openvino import format_kernels, int8_kernel_count

                none = self.precision == Precision.INT8 and int8_kernel_count(r.kernels) == 0
                lines.append(f"[{'W' if none else 'I'}]   compiled kernels: {format_kernels(r.kernels)}"
                             + (" (no int8 kernel)" if none else ""))  # fmt: skip
            lines.append(f"[{'I' if r.passed else 'E'}]   {r.runtime}: {'PASS' if r.passed else 'FAIL'}")
        lines.append("[I] PASSED" if self.passed else "[E] FAILED")
        return "\n".join(lines)


def run_checker(graph: Path | Any) -> str:
    """``onnx.checker.check_model(full_check=True)`` of a path or a loaded ``onnx.ModelProto``: "PASS"
    or the first line of the failure."""
    import onnx

    try:
        onnx.checker.check_model(graph if isinstance(graph, onnx.ModelProto) else str(graph), full_check=True)
    except Exception as e:  # ValidationError, InferenceError, ...
        return f"FAIL: {str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}"
    return "PASS"


def _run_stream(session: Any, stream: Stream, names: list[str]) -> list[dict[str, np.ndarray]]:
    """Each step's outputs (logits and the state after the step) from a runtime session."""
    steps = []
    for frames, reset in zip(stream.frames, stream.reset, strict=True):
        logits = session.step(frames, reset)
        state = session.get_state()
        steps.append({LOGITS: np.asarray(logits), **{state_out_name(n): np.asarray(state[n]) for n in names}})
    return steps


def compare(ref: list[dict[str, np.ndarray]], got: list[dict[str, np.ndarray]], tol: Tolerance) -> list[OutputResult]:
    """Per-output statistics of |got - ref| over all steps."""
    results = []
    for name in ref[0]:
        atol, rtol = tol.for_output(name)
        per_step, errs, viol, worst, max_ref = [], [], 0, 0, 0.0
        for t, (r, g) in enumerate(zip(ref, got, strict=True)):
            a, b = r[name].astype(np.float64), g[name].astype(np.float64)
            if a.shape != b.shape:
                raise EdgememError(f"output {name} has shape {list(b.shape)}, reference {list(a.shape)}")
            d = np.abs(a - b)
            d[~(np.isfinite(a) & np.isfinite(b))] = np.inf  # a NaN on either side is a violation, never a pass
            per_step.append(float(d.max(initial=0.0)))
            worst = t if per_step[-1] >= per_step[worst] else worst
            viol += int((d > atol + rtol * np.abs(a)).sum())
            max_ref = max(max_ref, float(np.abs(a).max(initial=0.0)))
            errs.append(d.ravel())
        top1 = None
        if name == LOGITS:
            same = [np.argmax(r[name], -1) == np.argmax(g[name], -1) for r, g in zip(ref, got, strict=True)]
            top1 = float(np.mean(np.concatenate(same)))
        e = np.concatenate(errs)
        finite = e[np.isfinite(e)]
        results.append(
            OutputResult(
                name=name,
                max_abs=float(e.max(initial=0.0)),
                mean_abs=float(finite.mean()) if finite.size else math.inf,
                p99_abs=float(np.percentile(finite, 99)) if finite.size else math.inf,
                max_ref=max_ref,
                atol=atol,
                rtol=rtol,
                violations=viol,
                elements=int(e.size),
                allowed=math.floor(tol.outliers * e.size),
                worst_step=worst,
                per_step_max=per_step,
                top1_agreement=top1,
            )
        )
    return results


def verify_graph(
    path: str | Path | GraphInfo,
    reference: Any,
    *,
    runtimes: tuple[str, ...] = ("ort-cpu",),
    clips: int = 16,
    boundaries: int = 2,
    batch: int | None = None,
    tolerance: Tolerance | None = None,
    seed: int = 0,
    name: str | None = None,
    check: bool = True,
    save_reference: str | Path | None = None,
    proto: Any = None,
    stream: Stream | None = None,
) -> VerifyReport:
    """Check ``path`` (full onnx.checker), then stream through ``reference`` and each runtime and
    compare. ``reference`` is a StreamingModel, or a ``SavedReference`` whose stream and outputs are
    used as they are (``clips``, ``boundaries``, ``seed`` and ``batch`` then come from it).
    ``batch`` defaults to the graph's static batch, or 2 if dynamic; ``name`` is the graph's name in
    the report (default: the file name); ``check=False`` skips the checker (the caller ran it);
    ``save_reference`` writes the model's stream and outputs there (see ``saved_reference``);
    ``stream`` replaces the generated stream (real clips). ``path`` may be a parsed ``GraphInfo``
    (``runtimes.graph.read_graph``) and ``proto`` the loaded ``onnx.ModelProto`` (checked instead of
    reading the file again): every session opens that ``GraphInfo``, so the graph is parsed once here,
    besides each runtime's own load."""
    from edgemem.export.saved_reference import SavedReference
    from edgemem.runtimes import open_session

    info = read_graph(path)
    path, contract = info.path, info.contract
    precision = of_graph(contract.export, contract.quantized)
    tol = tolerance or TOLERANCES[precision]
    if precision == Precision.INT8:  # a quantised graph needs an int8 path; refuse before any streaming
        from edgemem.runtimes.precisions import check_precision

        for rt in runtimes:
            check_precision(rt, "int8")
    saved = reference if isinstance(reference, SavedReference) else None
    b = contract.batch if isinstance(contract.batch, int) else (saved.stream.batch if saved else batch or 2)
    if batch is not None and batch != b:
        raise UnsupportedError(f"{path.name} was exported for batch {b}, cannot verify batch {batch}")
    checker = run_checker(path if proto is None else proto) if check else "PASS"
    names = [s.name for s in contract.state]
    if saved is not None:
        stream, ref, against = saved.stream, saved.outputs, saved.describe()
    else:
        if stream is None:
            c, t, h, w = contract.frames.shape[1:]
            stream = make_stream(
                (int(c), int(t), int(h), int(w)), batch=b, clips=clips, boundaries=boundaries, seed=seed
            )
        with open_session(reference.eval(), "torch", batch=b) as ref_session:
            ref, against = _run_stream(ref_session, stream, names), "torch"
        if save_reference is not None:
            from edgemem.export.saved_reference import save_reference as save

            save(save_reference, path, contract, precision.value, stream, ref, seed=seed, boundaries=boundaries,
                 made_by="torch")  # fmt: skip
    results = []
    for rt in runtimes:
        start = time.perf_counter()
        try:
            with open_session(info, rt, batch=b) as session:
                got = _run_stream(session, stream, names)
                kernels = session.kernel_precisions() if hasattr(session, "kernel_precisions") else None
        except EdgememError as e:
            results.append(RuntimeResult(rt, error=str(e)))
            continue
        results.append(RuntimeResult(rt, compare(ref, got, tol), time.perf_counter() - start, kernels=kernels))
    return VerifyReport(
        name or path.name, precision.value, b, stream.steps, stream.boundaries, checker, results, against
    )

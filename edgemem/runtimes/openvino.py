"""OpenVINO sessions: explicit state (fed and fetched every step) and stateful (state in variables).

The inference precision is always set explicitly (``precision="f32"`` by default): OpenVINO would
otherwise run bf16 on CPUs that support it. A precision the device lacks (OPTIMIZATION_CAPABILITIES,
``runtimes.precisions``) is refused before compiling, and the compiled model's precision is checked
against the one asked for: OpenVINO never falls back silently. Threads default to the usable CPUs.

The stateful variant rewrites the graph the way OpenVINO's MakeStateful does (each ``state_in.X``
parameter becomes a ReadValue, each ``state_out.X`` result an Assign of the same variable) but gives
every ReadValue an explicit zero initial value and fixes all shapes, so ``reset_state()`` means
"empty memory" by construction. Per-slot resets still go through the graph's ``reset`` input.
"""

from __future__ import annotations

from collections.abc import Set as AbstractSet
from pathlib import Path
from typing import Any

import numpy as np

from edgemem import contract as C
from edgemem.errors import UnsupportedError
from edgemem.hardware import resolve_threads, shared_core
from edgemem.optional import require
from edgemem.precision import Precision
from edgemem.runtimes.base import Session, State
from edgemem.runtimes.graph import GraphInfo, read_graph
from edgemem.runtimes.int8_weights import refuse_saturating_int8
from edgemem.runtimes.precisions import check_precision

# edgemem precision -> OpenVINO's INFERENCE_PRECISION_HINT (int8 is the graph's, computed at f32 hints).
_HINTS = {Precision.F32: "f32", Precision.BF16: "bf16", Precision.FP16: "f16"}


def _import_ov() -> Any:
    return require("openvino", extra="openvino", purpose="runtime openvino")


def _compile_config(precision: str | Precision, threads: int | None, device: str = "CPU") -> dict[str, str]:
    p = Precision.parse(precision)
    if p not in _HINTS:
        raise UnsupportedError(f"OpenVINO has no {p} inference mode; use one of {', '.join(map(str, _HINTS))}")
    check_precision("openvino", p, device)
    config = {"INFERENCE_PRECISION_HINT": _HINTS[p]}
    if device == "CPU" or threads:
        config["INFERENCE_NUM_THREADS"] = str(resolve_threads(threads))
    return config


def _read_static(ov: Any, info: GraphInfo, batch: int) -> Any:
    """Read the ONNX into an OpenVINO model with every input shape fixed for ``batch``."""
    core = shared_core()
    try:
        model = core.read_model(str(info.path))
    except Exception as e:  # OpenVINO raises RuntimeError subclasses for unreadable graphs
        raise UnsupportedError(f"OpenVINO cannot read {info.path.name}: {str(e).splitlines()[0]}") from None
    shapes = {C.FRAMES: [batch, *info.input_shape], C.RESET: [batch]}
    specs = [s.concrete(batch) for s in info.specs]
    shapes.update({C.state_in_name(s.name): list(s.shape) for s in specs})
    model.reshape(shapes)
    return model


def _output(model: Any, name: str) -> Any:
    for o in model.outputs:
        if name in o.get_names():
            return o
    raise UnsupportedError(f"OpenVINO model has no output '{name}'")


def compile_model(
    model: Any, device: str = "CPU", precision: str = "f32", threads: int | None = None, **extra: Any
) -> Any:
    """Compile ``model`` (an ``ov.Model`` or a path) on the shared Core with an explicit precision and
    thread count (``extra``: more properties); UnsupportedError when the device lacks the precision
    or compiled another one."""
    config = _compile_config(precision, threads, device)
    try:
        compiled = shared_core().compile_model(model, device, config | extra)
    except RuntimeError as e:
        raise UnsupportedError(f"OpenVINO cannot compile for {device}: {str(e).splitlines()[0]}") from None
    got = str(compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name())
    if got != config["INFERENCE_PRECISION_HINT"]:
        raise UnsupportedError(f"OpenVINO compiled {got} for {device} instead of the {precision} asked for")
    return compiled


class _OpenVinoBase(Session):
    """Reads the graph with static shapes and compiles it with an explicit precision hint."""

    def __init__(
        self,
        model_path: str | Path | GraphInfo,
        *,
        batch: int | None = None,
        precision: str = "f32",
        device: str = "CPU",
        threads: int | None = None,
    ) -> None:
        info = read_graph(model_path)
        if device == "CPU":
            refuse_saturating_int8(info, "openvino")
        super().__init__(info.specs, info.card, info.input_shape, info.resolve_batch(batch))
        self._ov = _import_ov()
        model = _read_static(self._ov, info, self.batch)
        self._prepare(model)
        self._matmuls = {op.get_friendly_name() for op in model.get_ops() if op.get_type_name() == "MatMul"}
        self._compiled = compile_model(model, device, precision, threads)
        self._request = self._compiled.create_infer_request()
        self._logits = _output(self._compiled, C.LOGITS)

    def _prepare(self, model: Any) -> None:
        """Rewrite the OpenVINO model before compiling (nothing for explicit state)."""

    @property
    def precision(self) -> str:
        """The inference precision the compiled model reports, in edgemem's spelling (``f32``, ``bf16``, ``fp16``)."""
        return Precision.parse(str(self._compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name())).value

    def kernel_precisions(self) -> dict[str, dict[str, int]]:
        """Per compute layer type of the compiled model (FullyConnected, Convolution, MatMul, MHA): how
        many layers run at each runtime precision (``i8``/``u8`` = int8 kernels, ``f32``, ``bf16``)."""
        return kernel_precisions(self._compiled, self._matmuls)

    def kernel_isas(self) -> dict[str, int]:
        """Executed nodes per kernel ISA (``kernel_isas``)."""
        return kernel_isas(self._compiled)

    def _close(self) -> None:
        del self._request, self._compiled


COMPUTE_LAYERS = ("FullyConnected", "Convolution", "MatMul")
MHA = "MHA"  # a fused snippets Subgraph holding MatMuls: the attention's q.k, softmax, softmax.V


def kernel_precisions(compiled: Any, matmuls: AbstractSet[str] = frozenset()) -> dict[str, dict[str, int]]:
    """``{layer type: {runtimePrecision: count}}`` of a compiled model's execution graph; a
    ``Subgraph`` that fused any of the model's ``matmuls`` (names) counts as ``MHA`` (``i8``: a
    quantized GEMM inside it runs int8)."""
    out: dict[str, dict[str, int]] = {}
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        kind = str(info["layerType"].astype(str))
        if kind == "Subgraph" and matmuls & set(str(info["originalLayersNames"].astype(str)).split(",")):
            kind = MHA
        if kind in (*COMPUTE_LAYERS, MHA):
            prec = str(info["runtimePrecision"].astype(str))
            out.setdefault(kind, {})
            out[kind][prec] = out[kind].get(prec, 0) + 1
    return out


_ISAS = ("mlas", "amx", "avx512", "avx2", "sse41")


def kernel_isas(compiled: Any) -> dict[str, int]:
    """How many executed nodes of a compiled model run a kernel named after each ISA (its
    ``primitiveType``: ``brgemm_avx512_i8``, ``jit_avx2_f32``, ...); ``mlas`` for MLAS GEMMs
    (they pick their ISA by CPUID: no cap applies), ``other`` for ISA-neutral names (``ref``,
    ``jit_uni``, ``jit_gemm``, ``unknown``). Shows what an ISA cap such as ``ONEDNN_MAX_CPU_ISA``
    really changed."""
    out: dict[str, int] = {}
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        if str(info["layerType"].astype(str)) in ("Input", "Output", "Const"):
            continue
        prim = str(info["primitiveType"].astype(str)).lower()
        isa = next((i for i in _ISAS if i in prim), "other")
        out[isa] = out.get(isa, 0) + 1
    return out


INT8_KERNELS = ("i8", "u8")


def format_kernels(kernels: dict[str, dict[str, int]]) -> str:
    """``Convolution u8 20, FullyConnected i8 5, MatMul f32 2`` (``i8``/``u8``: int8 kernels)."""
    return ", ".join(f"{kind} {prec} {n}" for kind, precs in kernels.items() for prec, n in precs.items())


def int8_kernel_count(kernels: dict[str, dict[str, int]]) -> int:
    """How many compute layers run an int8 kernel."""
    return sum(n for precs in kernels.values() for prec, n in precs.items() if prec in INT8_KERNELS)


class OpenVinoSession(_OpenVinoBase):
    """OpenVINO with the state as explicit inputs/outputs, held as host arrays."""

    runtime = "openvino"

    def __init__(self, model_path: str | Path | GraphInfo, **options: Any) -> None:
        super().__init__(model_path, **options)
        self._outs = {s.name: _output(self._compiled, C.state_out_name(s.name)) for s in self._specs}
        self._state = self.zeros_state()

    def _run(self, frames: np.ndarray, reset: np.ndarray) -> np.ndarray:
        feeds: dict[str, np.ndarray] = {C.FRAMES: frames, C.RESET: reset}
        feeds.update({C.state_in_name(k): v for k, v in self._state.items()})
        res = self._request.infer(feeds)
        self._state = {k: np.array(res[o], copy=True) for k, o in self._outs.items()}
        return np.array(res[self._logits], copy=True)

    def _read_state(self) -> State:
        return self._state

    def _write_state(self, state: State) -> None:
        self._state = dict(state)


def make_stateful(ov: Any, model: Any, specs: list[C.TensorSpec]) -> None:
    """Turn each ``state_in.X``/``state_out.X`` pair into variable ``X`` with a zero initial value."""
    from openvino import opset13 as ops
    from openvino.op.util import Variable, VariableInfo

    params = {n: p for p in model.get_parameters() for n in p.output(0).get_names()}
    results = {n: r for r in model.get_results() for n in r.output(0).get_names()}
    sinks, variables = [], []
    for s in specs:
        param, result = params[C.state_in_name(s.name)], results[C.state_out_name(s.name)]
        init = ops.constant(s.concrete().zeros())
        vinfo = VariableInfo()
        vinfo.variable_id = s.name
        vinfo.data_shape = ov.PartialShape(list(s.shape))
        vinfo.data_type = init.get_output_element_type(0)
        var = Variable(vinfo)
        read = ops.read_value(init, var)
        for target in list(param.output(0).get_target_inputs()):
            target.replace_source_output(read.output(0))
        src = result.input_value(0)
        node = src.get_node() if src.get_node().get_output_size() == 1 else ops.convert(src, vinfo.data_type)
        sinks.append(ov.op.assign(node, var))
        variables.append(var)
        model.remove_result(result)
        model.remove_parameter(param)
    model.add_variables(variables)
    model.add_sinks(sinks)
    model.validate_nodes_and_infer_types()


class OpenVinoStatefulSession(_OpenVinoBase):
    """OpenVINO with the state in variables of the infer request (never copied to the host per step)."""

    runtime = "openvino-stateful"

    def _prepare(self, model: Any) -> None:
        make_stateful(self._ov, model, self._specs)

    def _run(self, frames: np.ndarray, reset: np.ndarray) -> np.ndarray:
        res = self._request.infer({C.FRAMES: frames, C.RESET: reset})
        return np.array(res[self._logits], copy=True)

    def _variables(self) -> dict[str, Any]:
        return {v.name: v for v in self._request.query_state()}

    def _read_state(self) -> State:
        return {k: v.state.data for k, v in self._variables().items()}

    def _write_state(self, state: State) -> None:
        for k, v in self._variables().items():
            v.state = self._ov.Tensor(np.ascontiguousarray(state[k]))

    def _zero_state(self) -> None:
        self._request.reset_state()

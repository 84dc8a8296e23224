"""Native TensorRT 10 / 11 session: an engine built from the ONNX graph, state ping-ponged on the device.

The engine is built for static shapes (the session batch) and cached next to the model as
``<model>.<key>.engine``, the key hashing the graph bytes, the input shapes, the build plan and the
TensorRT version. Precision follows what each major version allows (``build_plan``): a graph
exported with ``--precision fp16`` or ``int8`` (QDQ: explicit quantization) is built as a strongly
typed network (its own types and Q/DQ decide);
``fp16=True`` on an fp32 graph uses the weak-typing ``BuilderFlag.FP16``, which exists on TensorRT
10 only (11 builds strongly typed networks only and is refused with the fix). fp32 graphs are
built with TF32 off, so fp32 means fp32. Device memory goes through cuda-python's runtime API.
Not verifiable on machines without an NVIDIA GPU (see docs/RUNTIMES.md).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgemem import contract as C
from edgemem.atomic import write_bytes
from edgemem.errors import UnsupportedError
from edgemem.optional import require
from edgemem.precision import Precision, of_graph
from edgemem.runtimes.base import Session, State
from edgemem.runtimes.graph import GraphInfo, read_graph

SUPPORTED_MAJORS = (10, 11)


def import_tensorrt() -> tuple[Any, Any]:
    """(tensorrt, cudart) or UnsupportedError naming what is missing or the unsupported version."""
    trt = require("tensorrt", extra="tensorrt", purpose="runtime tensorrt")
    trt_major(trt)
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:  # cuda-python < 12.6
        cudart = require("cuda.cudart", extra="tensorrt", purpose="runtime tensorrt (cuda-python)")
    return trt, cudart


def _check(result: Any) -> Any:
    """Unwrap a cuda-python ``(err, *values)`` tuple, raising on a CUDA error."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise UnsupportedError(f"CUDA error {err}")
    return values[0] if len(values) == 1 else values


def gpu_count(cudart: Any) -> int:
    err, n = cudart.cudaGetDeviceCount()
    return int(n) if int(err) == 0 else 0


def trt_major(trt: Any) -> int:
    """The major version of ``trt``; UnsupportedError outside TensorRT 10 and 11."""
    version = str(getattr(trt, "__version__", "?"))
    head = version.split(".")[0]
    major = int(head) if head.isdigit() else -1
    if major not in SUPPORTED_MAJORS:
        raise UnsupportedError(
            f"TensorRT {version} is not supported: edgemem supports TensorRT "
            + " and ".join(str(m) for m in SUPPORTED_MAJORS)
        )
    return major


@dataclass(frozen=True)
class BuildPlan:
    """How an engine is built: the network's typing and the builder flags set or cleared."""

    strongly_typed: bool  # NetworkDefinitionCreationFlag.STRONGLY_TYPED: precision from the graph's types
    fp16_flag: bool  # BuilderFlag.FP16 (weak typing; TensorRT 10 only)
    no_tf32: bool  # clear BuilderFlag.TF32 (on by default) so an fp32 graph runs in fp32

    @property
    def key(self) -> str:
        return f"typed={int(self.strongly_typed)} fp16flag={int(self.fp16_flag)} notf32={int(self.no_tf32)}"


def build_plan(trt: Any, graph: Precision, fp16: bool) -> BuildPlan:
    """The build for this TensorRT version. ``graph``: the graph's own precision (``--precision fp16``:
    fp16 compute in its types; int8: QDQ, explicit quantization); ``fp16``: the session asks for fp16."""
    version = trt.__version__
    trt_major(trt)
    if graph == Precision.INT8 and fp16:
        raise UnsupportedError("this graph is int8 (QDQ): its precision comes from the graph, not from fp16=True")
    if graph in (Precision.FP16, Precision.INT8):
        return BuildPlan(strongly_typed=True, fp16_flag=False, no_tf32=False)
    if fp16:
        if getattr(getattr(trt, "BuilderFlag", None), "FP16", None) is None:
            raise UnsupportedError(
                f"TensorRT {version} builds strongly typed networks only (no BuilderFlag.FP16): fp16 must come"
                " from the graph; export it with --precision fp16 (this graph is not fp16)"
            )
        return BuildPlan(strongly_typed=False, fp16_flag=True, no_tf32=False)
    # An fp32 graph: strongly typed (the only mode on 11, opt-in on 10) and TF32 off.
    return BuildPlan(strongly_typed=True, fp16_flag=False, no_tf32=True)


def engine_path(info: GraphInfo, shapes: dict[str, list[int]], plan: BuildPlan, trt_version: str) -> Path:
    h = hashlib.sha256()
    data_files = [info.path, *sorted(info.path.parent.glob(info.path.name + ".data"))]
    for f in data_files:
        h.update(f.read_bytes())
    h.update(repr(sorted(shapes.items())).encode())
    h.update(f"{plan.key} trt={trt_version}".encode())
    return info.path.with_name(f"{info.path.stem}.{h.hexdigest()[:16]}.engine")


def network_flags(trt: Any, plan: BuildPlan) -> int:
    """``create_network`` flags: STRONGLY_TYPED where the plan wants it (11 accepts it, always typed)."""
    if not plan.strongly_typed:
        return 0
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    if flag is None:
        if trt_major(trt) >= 11:  # strong typing is unconditional there
            return 0
        raise UnsupportedError(f"TensorRT {trt.__version__} has no strongly typed networks (STRONGLY_TYPED)")
    return 1 << int(flag)


def build_engine(trt: Any, info: GraphInfo, shapes: dict[str, list[int]], plan: BuildPlan) -> bytes:
    """Parse the graph and build a serialized engine; a missing API is named with the version."""
    try:
        return _build(trt, info, shapes, plan)
    except AttributeError as e:
        raise UnsupportedError(f"TensorRT {trt.__version__} lacks an API edgemem uses: {e}") from None


def _build(trt: Any, info: GraphInfo, shapes: dict[str, list[int]], plan: BuildPlan) -> bytes:
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(network_flags(trt, plan))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(info.path)):
        errors = "; ".join(" ".join(str(parser.get_error(i)).split()) for i in range(parser.num_errors))
        raise UnsupportedError(f"TensorRT cannot parse {info.path.name}: {errors}")
    config = builder.create_builder_config()
    if plan.fp16_flag:
        config.set_flag(trt.BuilderFlag.FP16)
    if plan.no_tf32 and getattr(trt.BuilderFlag, "TF32", None) is not None:
        config.clear_flag(trt.BuilderFlag.TF32)
    dynamic = [network.get_input(i) for i in range(network.num_inputs) if -1 in tuple(network.get_input(i).shape)]
    if dynamic:  # a dynamic-batch graph: one profile pinned to the session's shapes
        profile = builder.create_optimization_profile()
        for tensor in dynamic:
            profile.set_shape(tensor.name, shapes[tensor.name], shapes[tensor.name], shapes[tensor.name])
        config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise UnsupportedError(f"TensorRT {trt.__version__} failed to build an engine for {info.path.name}")
    return bytes(serialized)


def load_or_build(trt: Any, info: GraphInfo, shapes: dict[str, list[int]], plan: BuildPlan) -> bytes:
    path = engine_path(info, shapes, plan, trt.__version__)
    if path.is_file():
        return path.read_bytes()
    blob = build_engine(trt, info, shapes, plan)
    write_bytes(path, blob)
    return blob


class TensorRTSession(Session):
    """A TensorRT engine; frames/reset copied in, logits copied out, state stays on the GPU."""

    runtime = "tensorrt"

    def __init__(
        self, model_path: str | Path | GraphInfo, *, batch: int | None = None, device_id: int = 0, fp16: bool = False
    ) -> None:
        info = read_graph(model_path)
        super().__init__(info.specs, info.card, info.input_shape, info.resolve_batch(batch))
        trt, cudart = import_tensorrt()
        if gpu_count(cudart) == 0:
            raise UnsupportedError("tensorrt needs an NVIDIA GPU; none was found")
        self._trt, self._cudart = trt, cudart
        graph = of_graph(info.contract.export, info.contract.quantized)
        plan = build_plan(trt, graph, fp16)
        self.precision = Precision.FP16 if plan.fp16_flag else graph  # what the engine computes in
        _check(cudart.cudaSetDevice(device_id))
        shapes = {C.FRAMES: [self.batch, *self.input_shape], C.RESET: [self.batch]}
        shapes.update({C.state_in_name(s.name): list(s.concrete().shape) for s in self._specs})
        blob = load_or_build(trt, info, shapes, plan)
        try:
            self._engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(blob)
            self._context = self._engine.create_execution_context()
            for name, shape in shapes.items():
                self._context.set_input_shape(name, shape)
        except AttributeError as e:
            raise UnsupportedError(f"TensorRT {trt.__version__} lacks an API edgemem uses: {e}") from None
        self._stream = _check(cudart.cudaStreamCreate())
        self._buffers: list[int] = []
        self._frames = self._alloc(int(np.prod(shapes[C.FRAMES])) * 4)
        self._reset = self._alloc(self.batch)  # bool, one byte each
        self._logits_host = np.zeros((self.batch, self.num_classes), np.float32)
        self._logits = self._alloc(self._logits_host.nbytes)
        self._cur = {s.name: self._alloc(s.nbytes_per_item * self.batch) for s in self._specs}
        self._nxt = {s.name: self._alloc(s.nbytes_per_item * self.batch) for s in self._specs}
        self._zero_state()

    def _alloc(self, nbytes: int) -> int:
        ptr = int(_check(self._cudart.cudaMalloc(max(nbytes, 1))))
        self._buffers.append(ptr)
        return ptr

    def _copy(self, dst: int, src: int, nbytes: int, kind: Any) -> None:
        _check(self._cudart.cudaMemcpyAsync(dst, src, nbytes, kind, self._stream))

    def _run(self, frames: np.ndarray, reset: np.ndarray) -> np.ndarray:
        kinds = self._cudart.cudaMemcpyKind
        self._copy(self._frames, frames.ctypes.data, frames.nbytes, kinds.cudaMemcpyHostToDevice)
        self._copy(self._reset, reset.ctypes.data, reset.nbytes, kinds.cudaMemcpyHostToDevice)
        ctx = self._context
        ctx.set_tensor_address(C.FRAMES, self._frames)
        ctx.set_tensor_address(C.RESET, self._reset)
        ctx.set_tensor_address(C.LOGITS, self._logits)
        for s in self._specs:
            ctx.set_tensor_address(C.state_in_name(s.name), self._cur[s.name])
            ctx.set_tensor_address(C.state_out_name(s.name), self._nxt[s.name])
        if not ctx.execute_async_v3(self._stream):
            raise UnsupportedError("TensorRT execution failed")
        out = self._logits_host
        self._copy(out.ctypes.data, self._logits, out.nbytes, kinds.cudaMemcpyDeviceToHost)
        _check(self._cudart.cudaStreamSynchronize(self._stream))
        self._cur, self._nxt = self._nxt, self._cur
        return out.copy()

    def _read_state(self) -> State:
        kind = self._cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        state = {}
        for s in self._specs:
            host = np.empty(s.concrete().shape, s.dtype)
            self._copy(host.ctypes.data, self._cur[s.name], host.nbytes, kind)
            state[s.name] = host
        _check(self._cudart.cudaStreamSynchronize(self._stream))
        return state

    def _write_state(self, state: State) -> None:
        kind = self._cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        for s in self._specs:
            v = state[s.name]
            self._copy(self._cur[s.name], v.ctypes.data, v.nbytes, kind)
        _check(self._cudart.cudaStreamSynchronize(self._stream))

    def _zero_state(self) -> None:
        for s in self._specs:
            _check(self._cudart.cudaMemsetAsync(self._cur[s.name], 0, s.nbytes_per_item * self.batch, self._stream))
        _check(self._cudart.cudaStreamSynchronize(self._stream))

    def _close(self) -> None:
        for ptr in self._buffers:
            self._cudart.cudaFree(ptr)
        self._cudart.cudaStreamDestroy(self._stream)
        del self._context, self._engine

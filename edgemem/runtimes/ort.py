"""ONNX Runtime sessions: CPU (host arrays), CUDA and TensorRT execution providers (state on device).

On CUDA/TensorRT the state lives in two sets of device buffers bound with IOBinding and swapped
after every step (ping-pong), so only the logits cross to the host. ONNX Runtime silently falls
back to the CPU when an execution provider cannot load; the session checks ``get_providers()``
and refuses to run in that case.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Any

import numpy as np

from edgemem import contract as C
from edgemem.errors import UnsupportedError
from edgemem.hardware import resolve_threads
from edgemem.optional import install_hint
from edgemem.precision import Precision, of_graph
from edgemem.runtimes.base import Session, State
from edgemem.runtimes.graph import GraphInfo, read_graph
from edgemem.runtimes.int8_weights import refuse_saturating_int8
from edgemem.runtimes.precisions import check_precision

PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}


def _import_ort() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise UnsupportedError("onnxruntime is not installed (pip install onnxruntime)") from None
    return onnxruntime


def inference_session(ort: Any, model: str | bytes, **kwargs: Any) -> Any:
    """``ort.InferenceSession`` with ORT's provider fallback notes (``EP Error ... Falling back``), which its
    Python layer prints to stdout, sent to stderr: stdout carries ``--json`` reports."""
    with contextlib.redirect_stdout(sys.stderr):
        return ort.InferenceSession(model, **kwargs)


def session_options(ort: Any, threads: int | None, inter_threads: int | None, spinning: bool) -> Any:
    """Intra-op threads: ``threads``, else the usable CPUs (affinity and cgroup quota)."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = resolve_threads(threads)
    if inter_threads:
        opts.inter_op_num_threads = int(inter_threads)
    flag = "1" if spinning else "0"
    opts.add_session_config_entry("session.intra_op.allow_spinning", flag)
    opts.add_session_config_entry("session.inter_op.allow_spinning", flag)
    opts.log_severity_level = 3
    return opts


def provider_list(device: str, device_id: int, fp16: bool, cache_dir: Path, int8: bool = False) -> list[Any]:
    """The providers of ``device``; TensorRT: ``int8`` for a QDQ graph (explicit quantization: the Q/DQ
    scales are the graph's, so no calibration table), engines cached beside the graph."""
    if device == "cpu":
        return [PROVIDERS["cpu"]]
    if device == "cuda":
        return [(PROVIDERS["cuda"], {"device_id": device_id}), PROVIDERS["cpu"]]
    trt = {
        "device_id": device_id,
        "trt_fp16_enable": fp16,
        "trt_int8_enable": int8,
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": str(cache_dir),
    }
    return [(PROVIDERS["tensorrt"], trt), (PROVIDERS["cuda"], {"device_id": device_id}), PROVIDERS["cpu"]]


def open_ort(ort: Any, path: Path, device: str, options: Any, providers: list[Any]) -> Any:
    """Create the InferenceSession; fail clearly if the wanted provider is missing or fell back."""
    want = PROVIDERS[device]
    if want not in ort.get_available_providers():
        raise UnsupportedError(
            f"ONNX Runtime here has no {want} (available: {', '.join(ort.get_available_providers())}):"
            f" {install_hint('gpu')}"
        )
    try:
        sess = inference_session(ort, str(path), sess_options=options, providers=providers)
    except Exception as e:  # ORT raises its own exception types for invalid graphs
        raise UnsupportedError(f"ONNX Runtime cannot load {path.name}: {str(e).splitlines()[0]}") from None
    if want not in sess.get_providers():
        raise UnsupportedError(
            f"ONNX Runtime fell back to {', '.join(sess.get_providers())} instead of {want}"
            " (no GPU, or CUDA/cuDNN/TensorRT libraries not found)"
        )
    return sess


class OrtSession(Session):
    """ONNX Runtime on the CPU: state kept as host arrays and fed back every step."""

    runtime = "ort-cpu"

    def __init__(
        self,
        model_path: str | Path | GraphInfo,
        *,
        batch: int | None = None,
        threads: int | None = None,
        inter_threads: int | None = None,
        spinning: bool = False,
    ) -> None:
        info = read_graph(model_path)
        refuse_saturating_int8(info, "ort-cpu")
        super().__init__(info.specs, info.card, info.input_shape, info.resolve_batch(batch))
        ort = _import_ort()
        opts = session_options(ort, threads, inter_threads, spinning)
        self._sess = open_ort(ort, info.path, "cpu", opts, provider_list("cpu", 0, False, info.path.parent))
        self._outputs = [C.LOGITS] + [C.state_out_name(s.name) for s in self._specs]
        self._state = self.zeros_state()

    def _run(self, frames: np.ndarray, reset: np.ndarray) -> np.ndarray:
        feeds: dict[str, np.ndarray] = {C.FRAMES: frames, C.RESET: reset}
        feeds.update({C.state_in_name(k): v for k, v in self._state.items()})
        logits, *new = self._sess.run(self._outputs, feeds)
        self._state = {s.name: v for s, v in zip(self._specs, new, strict=True)}
        return logits

    def _read_state(self) -> State:
        return self._state

    def _write_state(self, state: State) -> None:
        self._state = dict(state)

    def _close(self) -> None:
        del self._sess


class OrtDeviceSession(Session):
    """ONNX Runtime with the CUDA or TensorRT provider; state ping-pongs between device buffers."""

    def __init__(
        self,
        model_path: str | Path | GraphInfo,
        *,
        device: str = "cuda",
        batch: int | None = None,
        device_id: int = 0,
        fp16: bool = False,
        threads: int | None = None,
    ) -> None:
        if device not in ("cuda", "tensorrt"):
            raise UnsupportedError(f"unknown ONNX Runtime device '{device}'")
        self.runtime = f"ort-{device}"
        info = read_graph(model_path)
        super().__init__(info.specs, info.card, info.input_shape, info.resolve_batch(batch))
        ort = _import_ort()
        opts = session_options(ort, threads, None, False)
        int8 = of_graph(info.contract.export, info.contract.quantized) == Precision.INT8
        if int8:
            check_precision(self.runtime, Precision.INT8)  # the CUDA provider: refused, with the reason
        providers = provider_list(device, device_id, fp16, info.path.parent, int8=int8)
        self._sess = open_ort(ort, info.path, device, opts, providers)
        self._ort, self._device_id = ort, device_id
        # Two buffers per state tensor: read one (state_in), write the other (state_out), swap.
        self._cur = {s.name: self._device_value(s.concrete().zeros()) for s in self._specs}
        self._nxt = {s.name: self._device_value(s.concrete().zeros()) for s in self._specs}
        self._binding = self._sess.io_binding()

    def _device_value(self, array: np.ndarray) -> Any:
        return self._ort.OrtValue.ortvalue_from_numpy(array, "cuda", self._device_id)

    def _run(self, frames: np.ndarray, reset: np.ndarray) -> np.ndarray:
        io = self._binding
        io.clear_binding_inputs()
        io.clear_binding_outputs()
        io.bind_cpu_input(C.FRAMES, frames)
        io.bind_cpu_input(C.RESET, reset)
        io.bind_output(C.LOGITS, "cpu")  # bound first: get_outputs() keeps binding order
        for s in self._specs:
            io.bind_ortvalue_input(C.state_in_name(s.name), self._cur[s.name])
            io.bind_ortvalue_output(C.state_out_name(s.name), self._nxt[s.name])
        self._sess.run_with_iobinding(io)
        logits = io.get_outputs()[0].numpy()
        self._cur, self._nxt = self._nxt, self._cur
        return logits

    def _read_state(self) -> State:
        return {k: v.numpy() for k, v in self._cur.items()}

    def _write_state(self, state: State) -> None:
        for k, v in state.items():
            self._cur[k].update_inplace(v)

    def _close(self) -> None:
        del self._binding, self._sess, self._cur, self._nxt

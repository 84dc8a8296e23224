"""Triton ``config.pbtxt`` of one served graph, built as Triton's own ``ModelConfig`` message.

Step graphs with state: the sequence batcher with one implicit state per state tensor (zero initial
state) and ``reset`` as the START control. A batch-1 graph is served with ``max_batch_size: 0`` (the
control arrives as ``[1]``, as its ``reset`` is); a dynamic-batch graph with ``max_batch_size: N``,
its control arriving as ``[B, 1]`` (the repository wraps the graph so that this feeds ``reset [B]``).
Graphs without state get plain dynamic batching. The contract metadata goes into ``parameters``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from edgemem import contract as C
from edgemem.errors import UnsupportedError
from edgemem.serve.graphs import PAIR, STATEFUL, TRITON_TYPES, ServedGraph

STRATEGIES = ("oldest", "direct")
KINDS = {"cpu": "KIND_CPU", "gpu": "KIND_GPU"}
ACCELERATORS = {"openvino": "cpu", "tensorrt": "gpu"}  # accelerator -> the instance kind it runs on
PARAM_SERVE = "edgemem.serve"  # JSON: how the model is served (kind, graph batch, source file)


@dataclass(frozen=True)
class ServeOptions:
    max_batch: int = 8
    instances: int = 1
    strategy: str = "oldest"
    idle_timeout_s: float = 60.0
    kind: str = "cpu"
    accelerator: str | None = None
    max_sequences: int = 256  # oldest: streams an instance keeps as batch candidates
    queue_delay_us: int = 0  # how long a batch may wait for more requests
    threads: int | None = None  # intra-op threads of each instance (None: ONNX Runtime's default)

    def check(self) -> None:
        if self.max_batch < 1:
            raise UnsupportedError(f"--max-batch must be >= 1, got {self.max_batch}")
        if self.instances < 1:
            raise UnsupportedError(f"--instances must be >= 1, got {self.instances}")
        if self.strategy not in STRATEGIES:
            raise UnsupportedError(f"--strategy must be one of {list(STRATEGIES)}, got {self.strategy!r}")
        if not self.idle_timeout_s > 0:
            raise UnsupportedError(f"--idle-timeout must be positive, got {self.idle_timeout_s}")
        if self.kind not in KINDS:
            raise UnsupportedError(f"--kind must be one of {list(KINDS)}, got {self.kind!r}")
        if self.accelerator is not None:
            if self.accelerator not in ACCELERATORS:
                raise UnsupportedError(f"--accelerator must be one of {list(ACCELERATORS)}, got {self.accelerator!r}")
            if ACCELERATORS[self.accelerator] != self.kind:
                raise UnsupportedError(
                    f"--accelerator {self.accelerator} runs on --kind {ACCELERATORS[self.accelerator]}, not {self.kind}"
                )
        if self.max_sequences < 1 or self.queue_delay_us < 0:
            raise UnsupportedError("--max-sequences must be >= 1 and --queue-delay-us >= 0")


def model_config_pb2() -> Any:
    """Triton's ``model_config_pb2`` (from tritonclient), or a one-line install hint."""
    try:
        from tritonclient.grpc import model_config_pb2
    except ImportError:
        raise UnsupportedError("Triton's client is not installed (pip install 'tritonclient[grpc]')") from None
    return model_config_pb2


def _dims(shape: tuple[int | str, ...], batched: bool) -> list[int]:
    return [-1 if isinstance(d, str) else int(d) for d in (shape[1:] if batched else shape)]


def _tensor(msg: Any, spec: C.TensorSpec, batched: bool) -> None:
    if spec.dtype not in TRITON_TYPES:
        raise UnsupportedError(f"tensor '{spec.name}' has dtype {spec.dtype}, which Triton does not carry")
    msg.name, msg.data_type = spec.name, getattr(model_config_pb2().DataType, TRITON_TYPES[spec.dtype])
    msg.dims.extend(_dims(spec.shape, batched))


def check_servable(g: ServedGraph) -> None:
    """Refuse what Triton cannot serve, with the reason."""
    if g.batch is not None and g.batch != 1:
        raise UnsupportedError(
            f"{g.path.name} was exported for a static batch of {g.batch}: Triton batches requests of independent "
            "streams itself, so serve a batch-1 graph (`edgemem export --batch 1`) or a dynamic one (`--batch dynamic`)"
        )
    for s in g.state:
        if any(isinstance(d, str) for d in s.shape[1:]):
            raise UnsupportedError(
                f"state '{s.name}' has a symbolic dimension {list(s.shape)}; Triton states need fixed dims"
            )
    # Triton pairs implicit state inputs and outputs by sorted name (upstream issue #8586).
    ins = sorted(C.state_in_name(s.name) for s in g.state)
    outs = sorted(C.state_out_name(s.name) for s in g.state)
    if [n.removeprefix(C.STATE_IN) for n in ins] != [n.removeprefix(C.STATE_OUT) for n in outs]:
        raise UnsupportedError(f"{g.path.name}: state inputs and outputs do not sort alike; Triton would mis-pair them")


def build_config(g: ServedGraph, name: str, opts: ServeOptions) -> Any:
    """The ``ModelConfig`` message of graph ``g`` served as model ``name``."""
    check_servable(g)
    pb = model_config_pb2()
    cfg = pb.ModelConfig(name=name, backend="onnxruntime")
    batched = g.batch is None
    cfg.max_batch_size = opts.max_batch if batched else 0
    if g.kind == STATEFUL:
        _sequence_batching(cfg, g, opts, batched)
        inputs = [g.spec(C.FRAMES)]
        outputs = [g.spec(C.LOGITS)]
    elif g.kind == PAIR:
        inputs, outputs = list(g.inputs), list(g.outputs)
    else:
        inputs = [g.spec(C.FRAMES)] + ([g.spec(C.RESET)] if g.reset_used else [])
        outputs = [g.spec(C.LOGITS)]
    if g.kind != STATEFUL and batched:
        cfg.dynamic_batching.max_queue_delay_microseconds = opts.queue_delay_us
    for spec in inputs:
        _tensor(cfg.input.add(), spec, batched)
        if spec.name == C.RESET and batched:  # [B] in the graph: one scalar per request item
            cfg.input[-1].dims[:] = [1]
            cfg.input[-1].reshape.SetInParent()
    for spec in outputs:
        _tensor(cfg.output.add(), spec, batched)
    group = cfg.instance_group.add()
    group.count, group.kind = opts.instances, getattr(pb.ModelInstanceGroup.Kind, KINDS[opts.kind])
    if opts.accelerator == "openvino":
        cfg.optimization.execution_accelerators.cpu_execution_accelerator.add(name="openvino")
    elif opts.accelerator == "tensorrt":
        trt = cfg.optimization.execution_accelerators.gpu_execution_accelerator.add(name="tensorrt")
        trt.parameters["precision_mode"] = "FP32"
    for key, value in sorted(g.metadata.items()):
        cfg.parameters[key].string_value = value
    if opts.threads is not None:
        cfg.parameters["intra_op_thread_count"].string_value = str(opts.threads)
    serve = {"kind": g.kind, "graph_batch": g.batch, "graph": g.path.name, "role": g.role}
    cfg.parameters[PARAM_SERVE].string_value = json.dumps(serve)
    return cfg


def _sequence_batching(cfg: Any, g: ServedGraph, opts: ServeOptions, batched: bool) -> None:
    pb = model_config_pb2()
    seq = cfg.sequence_batching
    seq.max_sequence_idle_microseconds = int(opts.idle_timeout_s * 1e6)
    if opts.strategy == "direct":
        seq.direct.max_queue_delay_microseconds = opts.queue_delay_us
    else:
        seq.oldest.max_candidate_sequences = opts.max_sequences
        seq.oldest.max_queue_delay_microseconds = opts.queue_delay_us
    ctrl = seq.control_input.add(name=C.RESET)
    c = ctrl.control.add(kind=pb.ModelSequenceBatching.Control.CONTROL_SEQUENCE_START)
    c.bool_false_true.extend([False, True])
    for s in g.state:
        st = seq.state.add(input_name=C.state_in_name(s.name), output_name=C.state_out_name(s.name))
        st.data_type = getattr(pb.DataType, TRITON_TYPES[s.dtype])
        st.dims.extend(_dims(s.shape, batched))
        init = st.initial_state.add(name="empty", zero_data=True, data_type=st.data_type)
        init.dims.extend(st.dims)


def to_pbtxt(cfg: Any) -> str:
    """The text form, checked by parsing it back into Triton's schema (``text_format.Parse``)."""
    from google.protobuf import text_format

    text = text_format.MessageToString(cfg)
    # proto3 omits enum zeros: spell out the START control (kind 0) for readers of the file
    text = re.sub(r"\n( *)control \{\n", lambda m: f"{m.group(0)}{m.group(1)}  kind: CONTROL_SEQUENCE_START\n", text)
    try:
        again = text_format.Parse(text, model_config_pb2().ModelConfig())
    except text_format.ParseError as e:
        raise UnsupportedError(f"the generated config of '{cfg.name}' is not a valid Triton ModelConfig: {e}") from None
    if again != cfg:
        raise UnsupportedError(f"the generated config of '{cfg.name}' does not round-trip through Triton's schema")
    return text

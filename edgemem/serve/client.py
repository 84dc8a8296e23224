"""Remote steps on a Triton server: ``RemoteSession`` is a batch-1 ``Session`` whose memory lives in the server.

A stream is one Triton sequence: START on its first clip (and wherever ``reset`` asks for empty
memory), END on its last (``mark_last``); the sequence batcher keeps the state between requests and
batches steps of different streams together. Every call has a timeout; a failed call is a
``RemoteError`` that says which clip of the stream failed and that its memory is lost (a restarted
server has no state for the stream).
"""

from __future__ import annotations

import json
import random
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgemem import contract as C
from edgemem.errors import EdgememError, InputError, StateError, UnsupportedError
from edgemem.runtimes.base import Session, State
from edgemem.serve.config import PARAM_SERVE
from edgemem.serve.graphs import PAIR, STATEFUL

_ids_lock = threading.Lock()
_next_id = [random.SystemRandom().randrange(1, 2**62)]  # random base: two clients never share ids


class RemoteError(EdgememError):
    """A call to the Triton server failed (unreachable, timed out, or refused)."""


def next_sequence_id() -> int:
    with _ids_lock:
        _next_id[0] += 1
        return _next_id[0]


def parse_url(url: str) -> str:
    host, sep, port = url.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InputError(f"--triton must be HOST:PORT (gRPC), got {url!r}")
    return url


def connect(url: str) -> Any:
    try:
        import tritonclient.grpc as gc
    except ImportError:
        raise UnsupportedError("Triton's client is not installed (pip install 'tritonclient[grpc]')") from None
    return gc.InferenceServerClient(parse_url(url))


def _reason(e: Exception) -> str:
    status = getattr(e, "status", lambda: None)()
    msg = (getattr(e, "message", lambda: None)() or str(e)).strip().splitlines()
    return f"{status or type(e).__name__}: {msg[0] if msg else ''}".strip()


@dataclass(frozen=True)
class RemoteModel:
    """What a client needs of a served model, read from its Triton config (edgemem's parameters)."""

    name: str
    kind: str  # stateful / clip / pair
    card: C.ModelCard
    state: tuple[C.TensorSpec, ...]
    input_shape: tuple[int, int, int, int]
    max_batch_size: int
    reset_input: bool  # a memory-less model that still takes `reset`

    @classmethod
    def fetch(cls, client: Any, name: str, timeout_s: float) -> RemoteModel:
        try:
            cfg = client.get_model_config(name, as_json=True, client_timeout=timeout_s)["config"]
        except Exception as e:  # tritonclient raises InferenceServerException for everything
            raise RemoteError(f"cannot read the config of model '{name}': {_reason(e)}") from None
        params = {k: v.get("string_value", "") for k, v in cfg.get("parameters", {}).items()}
        if PARAM_SERVE not in params or C.META_MODEL not in params:
            raise UnsupportedError(f"model '{name}' was not written by `edgemem serve export` (no edgemem parameters)")
        serve = json.loads(params[PARAM_SERVE])
        card = C.parse_card(json.loads(params[C.META_MODEL]), params.get(C.META_CONTRACT, "1"))
        state = tuple(C.specs_from_json(params.get(C.META_STATE, "[]")))
        inputs = {i["name"]: i for i in cfg.get("input", [])}
        mbs = int(cfg.get("max_batch_size", 0))
        if serve["kind"] == PAIR:
            shape = card.clip.shape
        else:
            dims = [int(d) for d in inputs[C.FRAMES]["dims"]]
            shape = tuple(dims if mbs else dims[1:])
        return cls(name, serve["kind"], card, state, shape, mbs, C.RESET in inputs)  # type: ignore[arg-type]


class RemoteSession(Session):
    """One stream on a Triton model: ``step(frames [1,C,T,H,W], reset [1])`` -> logits ``[1, classes]``."""

    runtime = "triton"

    def __init__(self, url: str, model: str, *, timeout_s: float = 30.0) -> None:
        if not timeout_s > 0:
            raise InputError(f"the request timeout must be positive, got {timeout_s}")
        self.url, self.timeout_s = url, float(timeout_s)
        self._client = connect(url)
        try:
            self.remote = RemoteModel.fetch(self._client, model, self.timeout_s)
        except BaseException:
            self._client.close()
            raise
        if self.remote.kind == PAIR:
            self._client.close()
            raise UnsupportedError(f"model '{model}' is a half of the CM pair, not a streaming step graph")
        super().__init__(self.remote.state, self.remote.card, self.remote.input_shape, 1)
        self.sequence_id: int | None = None
        self.clip = 0  # steps sent in the current sequence
        self._last = False
        self._closed_why: str | None = None  # the sequence ended or was lost: only a reset may follow

    @property
    def stateful(self) -> bool:
        return self.remote.kind == STATEFUL

    def mark_last(self) -> None:
        """The next step ends the stream (END): the server frees its memory after it."""
        self._last = True

    def _run(self, frames: np.ndarray, reset: np.ndarray) -> np.ndarray:
        import tritonclient.grpc as gc

        inputs = [gc.InferInput(C.FRAMES, list(frames.shape), "FP32")]
        inputs[0].set_data_from_numpy(frames)
        if self.remote.reset_input:
            r = reset.reshape(1, 1) if self.remote.max_batch_size else reset.reshape(1)
            inputs.append(gc.InferInput(C.RESET, list(r.shape), "BOOL"))
            inputs[-1].set_data_from_numpy(r)
        seq: dict[str, Any] = {}
        if self.stateful:
            start = bool(reset[0]) or self.sequence_id is None
            if self._closed_why and not reset[0]:  # continuing would silently start from empty memory
                raise StateError(f"this stream's sequence {self._closed_why}; reset it to start a new one")
            if self.sequence_id is None or self._closed_why:
                self.sequence_id, self._closed_why = next_sequence_id(), None
            if start:
                self.clip = 0
            seq = {"sequence_id": self.sequence_id, "sequence_start": start, "sequence_end": self._last}
        try:
            res = self._client.infer(
                self.remote.name, inputs, outputs=[gc.InferRequestedOutput(C.LOGITS)],
                client_timeout=self.timeout_s, **seq,
            )  # fmt: skip
        except Exception as e:  # InferenceServerException, or grpc errors for a dead channel
            lost = f" at clip {self.clip} of the stream, memory lost" if self.stateful else ""
            self._closed_why = f"lost its memory at clip {self.clip}" if self.stateful else None
            raise RemoteError(f"Triton {self.url} model '{self.remote.name}'{lost}: {_reason(e)}") from None
        self.clip += 1
        if self._last:
            self._closed_why, self._last = "has ended (END sent)", False
        logits = res.as_numpy(C.LOGITS)
        return logits.reshape(1, -1)

    def _read_state(self) -> State:
        raise UnsupportedError("a Triton stream's memory lives in the server; it cannot be read back")

    def _write_state(self, state: State) -> None:
        if any(np.any(v) for v in state.values()):
            raise StateError("a Triton stream's memory lives in the server; only a reset (empty memory) is possible")
        self.sequence_id, self._closed_why = None, None  # the next step starts a new sequence (START)

    def get_state(self) -> State:
        return self._read_state()

    def _close(self) -> None:
        self._client.close()

"""The ``Session`` base class: one streaming graph, its state carried between ``step`` calls.

Adapters implement ``_run`` (one step with the state they hold), ``_read_state``, ``_write_state``
and ``_close``; this class validates inputs and states against the graph's contract and handles
resets, so that every runtime behaves the same way.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from types import TracebackType
from typing import TypeVar

import numpy as np

from edgemem.contract import ModelCard, TensorSpec, check_state
from edgemem.errors import InputError, StateError

State = dict[str, np.ndarray]
_SessionT = TypeVar("_SessionT", bound="Session")


class Session(ABC):
    """A streaming model on one runtime: ``step(frames, reset) -> logits``, state kept inside.

    ``frames`` is float32 ``[B, C, T, H, W]``; ``reset`` (bool ``[B]``) empties a slot's memory
    before its clip. ``reset(slots)`` empties memory between steps. ``get_state``/``set_state``
    move the memory between sessions, runtimes and processes (see ``state_io``).
    """

    runtime: str = ""

    def __init__(self, specs: Sequence[TensorSpec], card: ModelCard, input_shape: Sequence[int], batch: int) -> None:
        if batch < 1:
            raise InputError(f"batch must be >= 1, got {batch}")
        self.batch = int(batch)
        self._specs = [s.with_batch(self.batch) for s in specs]
        self._card = card
        self.input_shape = tuple(int(d) for d in input_shape)  # (C, T, H, W)
        self._pending = np.zeros(self.batch, dtype=bool)  # slots emptied since the last step
        self._closed = False

    # ---- public API -------------------------------------------------------------------------
    @property
    def state_spec(self) -> list[TensorSpec]:
        """The state tensors of this session (batch dimension fixed to ``self.batch``)."""
        return list(self._specs)

    @property
    def model_card(self) -> ModelCard:
        return self._card

    @property
    def num_classes(self) -> int:
        return self._card.num_classes

    def step(self, frames: np.ndarray, reset: np.ndarray | Sequence[bool] | None = None) -> np.ndarray:
        """Classify one clip per slot; returns float32 logits ``[B, classes]``."""
        self._check_open()
        frames = self._check_frames(frames)
        flags = self._pending.copy()
        if reset is not None:
            r = np.asarray(reset)
            if r.dtype != np.bool_ or r.shape != (self.batch,):
                raise InputError(f"reset must be a bool array of shape [{self.batch}], got {r.dtype} {list(r.shape)}")
            flags |= r
        logits = self._run(frames, flags)
        self._pending[:] = False
        return np.asarray(logits, dtype=np.float32)

    def nonfinite_outputs(self, logits: np.ndarray) -> dict[int, list[str]]:
        """After a step: ``{slot: names}`` of the outputs (``logits`` and the state tensors) holding NaN or
        inf in that slot; empty when all are finite. Cheap (no copy of the state on host runtimes): run
        it after every step, so that a NaN is never passed on as a score or carried in memory."""
        bad: dict[int, list[str]] = {}
        for name, value in {"logits": logits, **self._read_state()}.items():
            arr = np.asarray(value)
            if arr.dtype.kind != "f" or arr.ndim == 0 or np.isfinite(arr).all():
                continue
            for slot in np.flatnonzero(~np.isfinite(arr.reshape(arr.shape[0], -1)).all(axis=1)):
                bad.setdefault(int(slot), []).append(name)
        return bad

    def reset(self, slots: Sequence[int] | None = None) -> None:
        """Empty the memory of ``slots`` (all slots when None) before the next step."""
        self._check_open()
        if slots is None:
            self._pending[:] = False
            self._zero_state()
            return
        for s in slots:
            if not 0 <= int(s) < self.batch:
                raise InputError(f"slot {s} out of range for batch {self.batch}")
            self._pending[int(s)] = True

    def get_state(self) -> State:
        """A host copy of the memory, as the graph would receive it at the next step."""
        self._check_open()
        state = {k: np.array(v, copy=True) for k, v in self._read_state().items()}
        if self._pending.any():  # an emptied slot is all zeros by the contract
            for v in state.values():
                v[self._pending] = 0
        return state

    def set_state(self, state: State) -> None:
        """Replace the memory; raises StateError naming the first tensor that does not fit."""
        self._check_open()
        if not isinstance(state, dict):
            raise StateError(f"state must be a dict of arrays, got {type(state).__name__}")
        arrays = {k: np.asarray(v) for k, v in state.items()}
        check_state(arrays, self._specs, batch=self.batch)
        self._write_state({k: np.ascontiguousarray(v) for k, v in arrays.items()})
        self._pending[:] = False

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._close()

    def __enter__(self: _SessionT) -> _SessionT:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        name = self._card.display_name
        return f"{type(self).__name__}(runtime={self.runtime!r}, model={name!r}, batch={self.batch})"

    # ---- helpers for adapters ---------------------------------------------------------------
    def zeros_state(self) -> State:
        return {s.name: s.concrete().zeros() for s in self._specs}

    def _zero_state(self) -> None:
        self._write_state(self.zeros_state())

    def _check_frames(self, frames: np.ndarray) -> np.ndarray:
        want = (self.batch, *self.input_shape)
        if not isinstance(frames, np.ndarray):
            raise InputError(f"frames must be a numpy array, got {type(frames).__name__}")
        if tuple(frames.shape) != want:
            raise InputError(f"frames must have shape {list(want)}, got {list(frames.shape)}")
        if frames.dtype != np.float32:
            raise InputError(f"frames must be float32, got {frames.dtype}")
        return np.ascontiguousarray(frames)

    def _check_open(self) -> None:
        if self._closed:
            raise StateError(f"{self.runtime} session is closed")

    # ---- adapter interface --------------------------------------------------------------------
    @abstractmethod
    def _run(self, frames: np.ndarray, reset: np.ndarray) -> np.ndarray:
        """One step with the held state; update the held state; return logits."""

    @abstractmethod
    def _read_state(self) -> State:
        """The held state (host arrays; may alias internal buffers, the base class copies)."""

    @abstractmethod
    def _write_state(self, state: State) -> None:
        """Replace the held state with validated, contiguous host arrays."""

    @abstractmethod
    def _close(self) -> None:
        """Release runtime resources."""

"""Run the CM two-scan pair on a runtime: the paper's video-level inference outside PyTorch.

``CMVideoClassifier.open(stem, runtime)`` loads ``<stem>.encode.onnx`` and ``<stem>.classify.onnx`` on
ONNX Runtime (``ort-cpu``, ``ort-cuda``) or OpenVINO (``openvino``, f32 unless asked otherwise);
``predict(views)`` takes ``[S, N, 3, T, H, W]`` (or batched ``[B, S, N, ...]``) normalised frames:
every crop is encoded, the memory is the mean contribution of the N crops at spatial index ``centre``,
every crop is classified with that memory and the softmax scores of all S*N crops are averaged.

A runner is any callable ``feeds -> outputs`` (dicts of numpy arrays by graph I/O name), so another
runtime plugs in by wrapping its session in one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgemem.contract import CONTRACT_VERSION, META_CONTRACT, META_MODEL, ModelCard, parse_card
from edgemem.errors import InputError, StateError, UnsupportedError
from edgemem.hardware import resolve_threads
from edgemem.runtimes.ort import inference_session

# The pair's graph contract (written by ``edgemem.export.cm_pair``): role metadata and I/O names.
META_ROLE = "edgemem.role"
META_CM = "edgemem.cm"
ROLE_ENCODE = "cm.encode"
ROLE_CLASSIFY = "cm.classify"
FEATURES = "features"
CONTRIBUTION = "contribution"
MEMORY = "memory"
LOGITS = "logits"

Runner = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]
RUNTIMES = ("ort-cpu", "ort-cuda", "openvino")


def pair_paths(stem: str | os.PathLike[str]) -> tuple[Path, Path]:
    """``(<stem>.encode.onnx, <stem>.classify.onnx)``; a trailing ``.onnx`` in ``stem`` is dropped."""
    s = str(stem)
    s = s[: -len(".onnx")] if s.endswith(".onnx") else s
    return Path(f"{s}.encode.onnx"), Path(f"{s}.classify.onnx")


def _metadata(path: Path) -> dict[str, str]:
    import onnx

    if not path.is_file():
        raise InputError(f"graph not found: {path}")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # onnx raises DecodeError and friends for foreign files
        raise InputError(f"cannot read ONNX graph {path}: {str(e).splitlines()[0] if str(e) else e}") from None
    return {p.key: p.value for p in proto.metadata_props}


def _ort_runner(path: Path, device: str, threads: int | None) -> Runner:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.intra_op_num_threads = resolve_threads(threads)
    providers = ["CPUExecutionProvider"] if device == "cpu" else ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if providers[0] not in ort.get_available_providers():
        raise UnsupportedError(f"ONNX Runtime here has no {providers[0]}")
    sess = inference_session(ort, str(path), sess_options=opts, providers=providers)
    if providers[0] not in sess.get_providers():
        raise UnsupportedError(f"ONNX Runtime fell back to {sess.get_providers()} instead of {providers[0]}")
    names = [o.name for o in sess.get_outputs()]
    return lambda feeds: dict(zip(names, sess.run(names, feeds), strict=True))


def _openvino_runner(path: Path, precision: str, threads: int | None) -> Runner:
    from edgemem.runtimes.openvino import compile_model

    compiled = compile_model(str(path), "CPU", precision, threads)
    names = [o.get_any_name() for o in compiled.outputs]

    def run(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        res = compiled(feeds)
        return {n: np.asarray(res[compiled.output(n)]) for n in names}

    return run


class CMVideoClassifier:
    """Video-level CM inference with the encode/classify pair on any runner."""

    def __init__(self, encode: Runner, classify: Runner, info: dict[str, Any], card: ModelCard) -> None:
        self.encode, self.classify = encode, classify
        self.info, self.card = info, card
        self.clip_shape = card.clip.shape

    @classmethod
    def open(
        cls, stem: str | Path, runtime: str = "ort-cpu", *, threads: int | None = None, precision: str = "f32"
    ) -> CMVideoClassifier:
        """Load ``<stem>.encode.onnx`` / ``<stem>.classify.onnx`` (checked to be one model's pair)."""
        enc_path, cls_path = pair_paths(stem)
        metas = [_metadata(enc_path), _metadata(cls_path)]
        for meta, role, p in zip(metas, (ROLE_ENCODE, ROLE_CLASSIFY), (enc_path, cls_path), strict=True):
            if meta.get(META_ROLE) != role:
                raise StateError(f"{p.name} is not a CM {role} graph (role {meta.get(META_ROLE)!r})")
        if metas[0].get(META_MODEL) != metas[1].get(META_MODEL) or metas[0].get(META_CM) != metas[1].get(META_CM):
            raise StateError(f"{enc_path.name} and {cls_path.name} come from different models")
        if runtime == "openvino":
            make = lambda p: _openvino_runner(p, precision, threads)  # noqa: E731
        elif runtime in ("ort-cpu", "ort-cuda"):
            make = lambda p: _ort_runner(p, runtime.removeprefix("ort-"), threads)  # noqa: E731
        else:
            raise UnsupportedError(f"runtime '{runtime}' not in {list(RUNTIMES)}")
        info = json.loads(metas[0][META_CM])
        card = parse_card(json.loads(metas[0][META_MODEL]), metas[0].get(META_CONTRACT, CONTRACT_VERSION))
        return cls(make(enc_path), make(cls_path), info, card)

    def predict(self, views: np.ndarray, centre: int | None = None) -> np.ndarray:
        """Averaged softmax over all views, ``[classes]`` (or ``[B, classes]`` for batched views)."""
        views = np.asarray(views)
        batched = views.ndim == 7
        v = views if batched else views[None]
        if v.ndim != 7 or tuple(v.shape[3:]) != self.clip_shape:
            c, t, h, w = self.clip_shape
            raise InputError(
                f"views must have shape [S, N, {c}, {t}, {h}, {w}] (or [B, S, ...]), got {list(views.shape)}"
            )
        if v.dtype != np.float32:
            raise InputError(f"views must be float32, got {v.dtype}")
        b, s, n = v.shape[:3]
        if min(b, s, n) == 0:
            raise InputError(f"views has no clips: shape {list(views.shape)}")
        centre = s // 2 if centre is None else centre
        if not 0 <= centre < s:
            raise InputError(f"centre crop index {centre} out of range for {s} spatial crops")
        # Scan 1: every crop of every video in one batch (features are kept for scan 2).
        enc = self.encode({"frames": np.ascontiguousarray(v.reshape(b * s * n, *self.clip_shape))})
        feats = enc[FEATURES]
        contrib = enc[CONTRIBUTION].reshape(b, s, n, *enc[CONTRIBUTION].shape[1:])
        memory = contrib[:, centre].mean(axis=1)
        # Scan 2: each crop with its video's memory.
        mem = np.repeat(memory, s * n, axis=0).astype(np.float32)
        logits = self.classify({FEATURES: feats, MEMORY: mem})[LOGITS].reshape(b, s * n, -1)
        z = np.exp(logits - logits.max(axis=-1, keepdims=True))
        probs = (z / z.sum(axis=-1, keepdims=True)).mean(axis=1)
        return probs if batched else probs[0]

"""The CM two-scan pair as ONNX graphs: ``encode`` (frames -> features, contribution) and ``classify``.

The paper's inference (multi-iteration, 3 x 10 views, memory from the centre crops) needs every clip
of a video before any clip is classified, so it does not fit the single ``step`` graph of the streaming
contract; the online CM does (see ``CMModel.step``, exported by ``edgemem.export.to_onnx``). The pair:

- ``<stem>.encode.onnx``: ``frames [batch, 3, T, H, W]`` -> ``features`` (the backbone's last-stage
  map) and ``contribution [batch, *memory]`` (one clip's term of eq. 2);
- ``<stem>.classify.onnx``: ``features``, ``memory [batch, *memory]`` -> ``logits [batch, classes]``.

Both carry the contract metadata (model card, empty state) and ``edgemem.role`` = ``cm.encode`` /
``cm.classify``; the batch dimension is dynamic. ``edgemem.runtimes.cm_runtime`` runs them.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import onnx
import torch
from torch import Tensor, nn

from edgemem.atomic import atomic_path, check_writable
from edgemem.contract import BATCH_DIM, ModelCard, write_contract
from edgemem.errors import EdgememError, UnsupportedError
from edgemem.models.cm_model import CMModel
from edgemem.models.info import model_cost
from edgemem.runtimes.cm_runtime import (
    CONTRIBUTION,
    FEATURES,
    LOGITS,
    MEMORY,
    META_CM,
    META_ROLE,
    ROLE_CLASSIFY,
    ROLE_ENCODE,
    pair_paths,
)


class _Encode(nn.Module):
    def __init__(self, model: CMModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, frames: Tensor) -> tuple[Tensor, Tensor]:
        return self.model.encode(frames)


class _Classify(nn.Module):
    def __init__(self, model: CMModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, features: Tensor, memory: Tensor) -> Tensor:
        return self.model.classify(features, memory)


def _export(module: nn.Module, args: tuple[Tensor, ...], inputs: list[str], outputs: list[str], opset: int) -> Any:
    dim = torch.export.Dim(BATCH_DIM, min=1, max=4096)
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    try:
        with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                module, args, None, dynamo=True, opset_version=opset, input_names=inputs,
                output_names=outputs, dynamic_shapes=tuple({0: dim} for _ in args),
            )  # fmt: skip
    except Exception as e:  # the exporter raises many types; report the first line
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UnsupportedError(f"the ONNX exporter failed on the CM pair ({type(e).__name__}): {msg}") from None
    if program is None:  # dynamo=True with no file always returns the program
        raise UnsupportedError("the ONNX exporter returned no program for the CM pair")
    return program.model_proto


def _save(proto: onnx.ModelProto, card: ModelCard, role: str, info: dict[str, Any], path: Path) -> None:
    write_contract(proto, [], card, {"opset": proto.opset_import[0].version, "torch": torch.__version__})
    for key, value in ((META_ROLE, role), (META_CM, json.dumps(info))):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto, full_check=True)
    with atomic_path(path) as tmp:
        onnx.save_model(proto, str(tmp))


def export_cm_pair(model: CMModel, stem: str | os.PathLike[str], *, opset: int = 18) -> tuple[Path, Path]:
    """Write the encode/classify graphs of ``model`` (eval mode) next to ``stem``; returns their paths."""
    if not isinstance(model, CMModel):
        raise EdgememError(f"the two-scan pair needs a CM model, got {type(model).__name__}")
    enc_path, cls_path = pair_paths(stem)
    check_writable(enc_path)
    check_writable(cls_path)
    model.eval()
    frames = torch.zeros((2, *model.input_shape))
    with torch.no_grad():
        feat, contrib = model.encode(frames)
    card = model.model_card().with_(cost=model_cost(model))
    info = {
        "feature_shape": list(feat.shape[1:]),
        "memory_shape": list(contrib.shape[1:]),
        "default_views": {"spatial": 3, "temporal": 10, "centre": 1},
    }
    enc = _export(_Encode(model), (frames,), ["frames"], [FEATURES, CONTRIBUTION], opset)
    cls = _export(_Classify(model), (feat, contrib), [FEATURES, MEMORY], [LOGITS], opset)
    _save(enc, card, ROLE_ENCODE, info, enc_path)
    _save(cls, card, ROLE_CLASSIFY, info, cls_path)
    return enc_path, cls_path

"""Load official clip-backbone weights into a ResNet3D/X3D (or the backbone of a CM model).

Formats, detected from the file: Caffe2 ``.pkl`` (the PySlowFast Kinetics c2 files, read with a
restricted unpickler), PySlowFast ``.pyth`` (names as they are) and PyTorchVideo-named ``.pyth`` (hub
files, renamed). Loading is all-or-nothing: missing, unexpected or mis-shaped keys are listed; weights
holding NaN or inf are refused.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor, nn

from edgemem.finite import check_finite
from edgemem.models.checkpoint import load_state_strict, read_pyth


def _with_bn_counters(model: nn.Module, state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Caffe2 and some converted files carry no ``num_batches_tracked``: add zeros for those BNs."""
    out = dict(state)
    for name, mod in model.named_modules():
        key = f"{name}.num_batches_tracked"
        if isinstance(mod, nn.modules.batchnorm._BatchNorm) and key not in out and f"{name}.weight" in out:
            out[key] = torch.tensor(0)
    return out


def load_clip_checkpoint(model: nn.Module, path: str | os.PathLike[str]) -> str:
    """Load ``path`` into ``model`` (a CM model's checkpoint or, for a CM model, its backbone's);
    returns the format read: ``caffe2``, ``pyslowfast`` or ``pytorchvideo``."""
    from edgemem.models.cm_model import CMModel

    p = Path(path)
    if p.suffix.lower() == ".pkl":
        from edgemem.models.caffe2_import import caffe2_to_state, read_caffe2_pkl

        state, fmt = caffe2_to_state(read_caffe2_pkl(p)), "caffe2"
        check_finite(state, f"checkpoint {p}")
    else:
        from edgemem.models.pytorchvideo_names import fill_identity_bn, is_pytorchvideo, rename_pytorchvideo

        state = {k.removeprefix("module."): v for k, v in read_pyth(p)["model_state"].items()}
        fmt = "pyslowfast"
        if is_pytorchvideo(state):
            state, fmt = rename_pytorchvideo(state), "pytorchvideo"
    target = model
    if isinstance(model, CMModel) and not any(k.startswith("cm.") for k in state):
        target = model.backbone
    if fmt == "pytorchvideo":
        state = fill_identity_bn(target, state)
    load_state_strict(target, _with_bn_counters(target, state))
    return fmt

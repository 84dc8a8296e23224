"""Caffe2 ``.pkl`` checkpoints (the official PySlowFast Slow/SlowFast/I3D/C2D/X3D files) to PySlowFast names.

The files are (Python 2) pickles of ``{"blobs": {name: ndarray}, ...}``. They are read by an unpickler
that resolves only the numpy globals an array needs (``_reconstruct``, ``ndarray``, ``dtype``,
``scalar``, and latin-1 ``_codecs.encode`` for Python 3 protocol-2 files): any other global (``os.system``, ``builtins.eval``, ...) makes the file refused before
anything runs. Then every blob must be a numeric array, a number or a string.

Caffe2 blob names map to PySlowFast parameter names (``t_`` prefixes the SlowFast fast pathway):

==================================  ==============================================
``conv1_w`` / ``res_conv1_bn_s``    ``s1.pathway0_stem.conv.weight`` / ``...bn.weight``
``res3_2_branch2b_bn_riv``          ``s3.pathway0_res2.branch2.b_bn.running_var``
``res4_0_branch1_w``                ``s4.pathway0_res0.branch1.weight``
``nonlocal_conv4_3_theta_w``        ``s4.pathway0_nonlocal3.conv_theta.weight``
``t_pool1_subsample_w``             ``s1_fuse.conv_f2s.weight`` (SlowFast lateral)
``conv1_xy_w`` (X3D)                ``s1.pathway0_stem.conv_xy.weight``
``res2_0_branch2b_bn_fc1_w`` (X3D)  ``s2.pathway0_res0.branch2.se.fc1.weight``
``conv_5_w`` / ``lin_5_w`` (X3D)    ``head.conv_5.weight`` / ``head.lin_5.weight``
``pred_w``                          ``head.projection.weight``
==================================  ==============================================

Optimizer blobs (``*_momentum``, ``lr``, ``model_iter``) are skipped; a name that maps to nothing is an
error listing it. BN blobs ``_s``/``_b``/``_rm``/``_riv`` are scale, bias, running mean and running
variance.
"""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from edgemem.errors import CheckpointError

# The numpy callables an ndarray / numpy scalar pickle refers to, under their old and new module paths.
_RECONSTRUCT = np.zeros(1).__reduce__()[0]
_SCALAR = np.float32(0).__reduce__()[0]
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy.core.multiarray", "scalar"): _SCALAR,
    ("numpy._core.multiarray", "scalar"): _SCALAR,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


def _latin1_bytes(text: str, encoding: str) -> bytes:
    """What Python 3 protocol-2 pickles call (``_codecs.encode``) to rebuild the bytes of array data."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise pickle.UnpicklingError(f"refused _codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


_ALLOWED[("_codecs", "encode")] = _latin1_bytes
SKIPPED = re.compile(r"(_momentum$|^lr$|^model_iter$|^__)")


class _ArrayUnpickler(pickle.Unpickler):
    """An unpickler that can build numpy arrays and plain containers, and nothing else."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refused global '{module}.{name}': only numpy arrays are accepted") from None

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("refused persistent id: only numpy arrays are accepted")


def read_caffe2_pkl(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """The blobs of a Caffe2 ``.pkl`` (``{"blobs": {...}}`` or a flat dict), numeric arrays only."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"checkpoint not found: {p}")
    try:
        with p.open("rb") as f:
            obj = _ArrayUnpickler(f, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as e:
        raise CheckpointError(f"refused {p.name}: {e}") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{p.name} is not a Caffe2 checkpoint (a dict of blobs), got {type(obj).__name__}")
    blobs = obj.get("blobs", obj)
    if not isinstance(blobs, dict):
        raise CheckpointError(f"{p.name}: 'blobs' is not a dict")
    out: dict[str, np.ndarray] = {}
    for name, value in blobs.items():
        if not isinstance(name, str):
            raise CheckpointError(f"{p.name}: blob name {name!r} is not a string")
        arr = np.asarray(value) if isinstance(value, (np.ndarray, np.generic, int, float)) else None
        if arr is None or arr.dtype.kind not in "fiub":
            raise CheckpointError(f"{p.name}: blob '{name}' is not a numeric array ({type(value).__name__})")
        out[name] = arr
    return out


_BN_KIND = {"s": "weight", "b": "bias", "rm": "running_mean", "riv": "running_var"}
_MODULE_RULES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"^pool1_subsample_bn$"), "s1_fuse.bn"),
    (re.compile(r"^pool1_subsample$"), "s1_fuse.conv_f2s"),
    (re.compile(r"^res(\d+)_\d+_branch2c_bn_subsample_bn$"), r"s\1_fuse.bn"),
    (re.compile(r"^res(\d+)_\d+_branch2c_bn_subsample$"), r"s\1_fuse.conv_f2s"),
    (re.compile(r"^conv1_xy$"), "s1.pathway{p}_stem.conv_xy"),
    (re.compile(r"^conv1$"), "s1.pathway{p}_stem.conv"),
    (re.compile(r"^res_conv1_bn$"), "s1.pathway{p}_stem.bn"),
    (re.compile(r"^res(\d+)_(\d+)_branch1$"), r"s\1.pathway{p}_res\2.branch1"),
    (re.compile(r"^res(\d+)_(\d+)_branch1_bn$"), r"s\1.pathway{p}_res\2.branch1_bn"),
    (re.compile(r"^res(\d+)_(\d+)_branch2([a-c])$"), r"s\1.pathway{p}_res\2.branch2.\3"),
    (re.compile(r"^res(\d+)_(\d+)_branch2([a-c])_bn$"), r"s\1.pathway{p}_res\2.branch2.\3_bn"),
    (re.compile(r"^res(\d+)_(\d+)_branch2b_bn_fc(\d+)$"), r"s\1.pathway{p}_res\2.branch2.se.fc\3"),
    (re.compile(r"^(conv_5|conv_5_bn|lin_5|lin_5_bn)$"), r"head.\1"),
    (re.compile(r"^nonlocal_conv(\d+)_(\d+)_(theta|phi|g|out)$"), r"s\1.pathway{p}_nonlocal\2.conv_\3"),
    (re.compile(r"^nonlocal_conv(\d+)_(\d+)_bn$"), r"s\1.pathway{p}_nonlocal\2.bn"),
    (re.compile(r"^pred$"), "head.projection"),
]


def caffe2_name(blob: str) -> str | None:
    """PySlowFast parameter name of a Caffe2 blob; None for optimizer blobs; raises for unknown names."""
    if SKIPPED.search(blob):
        return None
    pathway = 1 if blob.startswith("t_") else 0
    base = blob[2:] if pathway else blob
    m = re.match(r"^(.*)_(w|b|s|rm|riv)$", base)
    if m:
        module, kind = m.groups()
        is_bn = module.endswith("_bn") or module.endswith("bn_subsample_bn")
        attr = _BN_KIND[kind] if is_bn else {"w": "weight", "b": "bias"}.get(kind)
        if attr is not None:
            for pattern, repl in _MODULE_RULES:
                if pattern.match(module):
                    return f"{pattern.sub(repl, module).replace('{p}', str(pathway))}.{attr}"
    raise CheckpointError(f"unknown Caffe2 blob '{blob}' (not a PySlowFast ResNet/SlowFast/X3D parameter)")


def caffe2_to_state(blobs: dict[str, np.ndarray]) -> dict[str, Tensor]:
    """PySlowFast-named float tensors from Caffe2 blobs (optimizer blobs dropped)."""
    state: dict[str, Tensor] = {}
    for blob, arr in blobs.items():
        name = caffe2_name(blob)
        if name is None:
            continue
        if name in state:
            raise CheckpointError(f"two Caffe2 blobs map to '{name}'")
        state[name] = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
    return state

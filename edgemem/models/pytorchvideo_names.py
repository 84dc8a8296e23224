"""PyTorchVideo-named checkpoints (``slow_r50``, ``i3d_r50``, ``c2d_r50``, ``x3d_xs/s/m`` hub files) to PySlowFast names.

PyTorchVideo's ``Net`` is a list ``blocks``: the stem, the residual stages (``res_blocks.<i>``; for C2D and
I3D a parameter-free pool sits after the first stage), the head. The stages are mapped in order to
``s2..s5`` whatever their index. Renames:

=================================================  ==========================================
``blocks.0.conv`` / ``blocks.0.norm``              ``s1.pathway0_stem.conv`` / ``...stem.bn``
``blocks.0.conv.conv_t`` (X3D: the *spatial* conv) ``s1.pathway0_stem.conv_xy``
``blocks.0.conv.conv_xy`` (X3D: the temporal conv) ``s1.pathway0_stem.conv``
``res_blocks.<i>.branch1_conv`` / ``_norm``        ``pathway0_res<i>.branch1`` / ``branch1_bn``
``res_blocks.<i>.branch2.conv_a`` / ``norm_a``     ``pathway0_res<i>.branch2.a`` / ``a_bn``
``branch2.norm_b.0`` / ``norm_b.1.block.0|2``      ``branch2.b_bn`` / ``branch2.se.fc1|fc2`` (X3D)
``<head>.pool.pre_conv|pre_norm|post_conv``        ``head.conv_5|conv_5_bn|lin_5`` (X3D)
``<head>.proj``                                    ``head.projection``
=================================================  ==========================================

PyTorchVideo's X3D has no BN after a stride-only shortcut conv (res2 block 0) where PySlowFast has
one; :func:`fill_identity_bn` adds an exact identity BN there.
"""

from __future__ import annotations

import re

import torch
from torch import Tensor, nn

from edgemem.errors import CheckpointError

_STEM = {
    "conv.conv_t": "conv_xy",
    "conv.conv_xy": "conv",
    "conv": "conv",
    "norm": "bn",
}
_BLOCK = [
    (re.compile(r"^branch1_conv$"), "branch1"),
    (re.compile(r"^branch1_norm$"), "branch1_bn"),
    (re.compile(r"^branch2\.conv_([abc])$"), r"branch2.\1"),
    (re.compile(r"^branch2\.norm_([abc])(\.0)?$"), r"branch2.\1_bn"),
    (re.compile(r"^branch2\.norm_b\.1\.block\.0$"), "branch2.se.fc1"),
    (re.compile(r"^branch2\.norm_b\.1\.block\.2$"), "branch2.se.fc2"),
]
_HEAD = {"proj": "projection", "pool.pre_conv": "conv_5", "pool.pre_norm": "conv_5_bn", "pool.post_conv": "lin_5"}
_PARAM = re.compile(r"^(.*)\.(weight|bias|running_mean|running_var|num_batches_tracked)$")


def is_pytorchvideo(state: dict[str, Tensor]) -> bool:
    return any(k.startswith("blocks.") for k in state)


def rename_pytorchvideo(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """PySlowFast-named copy of a PyTorchVideo state dict; raises CheckpointError naming unknown keys."""
    parsed: dict[str, tuple[int, str, str]] = {}
    for key in state:
        m = re.match(r"^blocks\.(\d+)\.(.*)$", key)
        p = _PARAM.match(m.group(2)) if m else None
        if not m or not p:
            raise CheckpointError(f"'{key}' is not a PyTorchVideo ResNet/X3D parameter")
        parsed[key] = (int(m.group(1)), p.group(1), p.group(2))
    stages = sorted({b for b, mod, _ in parsed.values() if mod.startswith("res_blocks.")})
    if len(stages) != 4:
        raise CheckpointError(f"expected 4 residual stages in the PyTorchVideo checkpoint, found {len(stages)}")
    stage_of = {b: i + 2 for i, b in enumerate(stages)}
    head_block = max(b for b, _, _ in parsed.values())
    out: dict[str, Tensor] = {}
    unknown: list[str] = []
    for key, (block, module, attr) in parsed.items():
        new = None
        if block == 0 and module in _STEM:
            new = f"s1.pathway0_stem.{_STEM[module]}"
        elif block in stage_of:
            m = re.match(r"^res_blocks\.(\d+)\.(.*)$", module)
            for pattern, repl in _BLOCK:
                if m is not None and pattern.match(m.group(2)):
                    new = f"s{stage_of[block]}.pathway0_res{m.group(1)}.{pattern.sub(repl, m.group(2))}"
                    break
        elif block == head_block and module in _HEAD:
            new = f"head.{_HEAD[module]}"
        if new is None:
            unknown.append(key)
        else:
            out[f"{new}.{attr}"] = state[key]
    if unknown:
        shown = ", ".join(unknown[:6]) + (f", ... ({len(unknown)} in all)" if len(unknown) > 6 else "")
        raise CheckpointError(f"unknown PyTorchVideo keys: {shown}")
    return out


def fill_identity_bn(model: nn.Module, state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Add identity batch norms (scale 1, shift 0, mean 0, variance 1 - eps) for BNs the checkpoint lacks
    entirely, when they sit right after a shortcut conv it has (``branch1_bn``)."""
    out = dict(state)
    for name, mod in model.named_modules():
        if not isinstance(mod, nn.BatchNorm3d) or not name.endswith("branch1_bn"):
            continue
        if f"{name}.weight" in state or f"{name[: -len('_bn')]}.weight" not in state:
            continue
        c = mod.num_features
        out[f"{name}.weight"] = torch.ones(c)
        out[f"{name}.bias"] = torch.zeros(c)
        out[f"{name}.running_mean"] = torch.zeros(c)
        out[f"{name}.running_var"] = torch.full((c,), 1.0 - mod.eps)
        out[f"{name}.num_batches_tracked"] = torch.tensor(0)
    return out

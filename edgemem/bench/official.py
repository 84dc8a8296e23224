"""The unmodified official MeMViT code (facebookresearch/MeMViT) as a timed contender, eager, on CPU.

Nothing of the official repository is in edgemem: the caller passes a checkout (``--official DIR``;
docs/BENCHMARKS.md says how to get and set it up). Its model is built from its own MeMViT-16 config
(``configs/AVA/MeMViT_16_K400.yaml``) with the detection head off, no GPU and edgemem's class count,
random weights, in eval mode; one step = one clip forward with the official online memory (the
same video name every step, so the memory fills and stays full). Two packages the classification
path never calls are replaced by empty modules when absent: ``detectron2.layers`` (ROIAlign, AVA
head) and ``pytorchvideo`` (the PTV model zoo, imported inside a try by the official code).
"""

from __future__ import annotations

import contextlib
import importlib
import io
import sys
import types
from collections.abc import Callable
from pathlib import Path

import numpy as np

from edgemem.errors import InputError

CONFIG = "configs/AVA/MeMViT_16_K400.yaml"


def _shim(name: str, **attrs: object) -> None:
    """An empty module ``name`` (and its parents) unless the real one imports."""
    try:
        importlib.import_module(name)
        return
    except ImportError:
        pass
    parts = name.split(".")
    for i in range(1, len(parts) + 1):
        mod = ".".join(parts[:i])
        sys.modules.setdefault(mod, types.ModuleType(mod))
    for k, v in attrs.items():
        setattr(sys.modules[name], k, v)


def official_step(checkout: str | Path, num_classes: int, threads: int | None = None) -> Callable[[np.ndarray], None]:
    """A ``step(frames [1, 3, 16, 224, 224])`` running the official MeMViT-16 forward with its memory."""
    import torch

    root = Path(checkout)
    if not (root / "memvit" / "models" / "video_model_builder.py").is_file():
        raise InputError(f"--official {root}: not a checkout of facebookresearch/MeMViT")
    if threads:
        torch.set_num_threads(threads)
    _shim("detectron2.layers", ROIAlign=None)
    sys.path.insert(0, str(root))
    try:  # the official package prints advice about PyTorchVideo on import: keep stdout for results
        with contextlib.redirect_stdout(io.StringIO()):
            from memvit.config.defaults import get_cfg
            from memvit.models.build import build_model
    except ImportError as e:
        raise InputError(f"--official {root}: cannot import the official code ({e}); see docs/BENCHMARKS.md") from None
    cfg = get_cfg()
    cfg.merge_from_file(str(root / CONFIG))
    cfg.DETECTION.ENABLE = False
    cfg.NUM_GPUS = 0
    cfg.MODEL.NUM_CLASSES = num_classes
    cfg.TRAIN.CHECKPOINT_FILE_PATH = ""
    torch.manual_seed(0)
    model = build_model(cfg).eval()

    @torch.no_grad()
    def step(frames: np.ndarray) -> None:
        model([torch.from_numpy(frames)], ["video0"])

    return step

"""Test-session settings (one intra-op thread, so tests stay fast when cores are shared), the vendored
official-code fixture's folder and the tiny long-range dataset the training tests share."""

import os
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

torch.set_num_threads(1)

import pytest  # noqa: E402

from edgemem.data.synth import generate  # noqa: E402

# Output of the unmodified official MeMViT code, vendored as data (see its README.md). Tests read it
# from here only; a missing file is a failure, never a skip.
OFFICIAL_TINY = Path(__file__).resolve().parent / "fixtures" / "memvit_official_tiny"

# One epoch of a tiny run: what the training tests pass to `edgemem train`.
TINY_TRAIN = ["--epochs", "1", "--batch-size", "2", "--threads", "1", "--eval-every", "1"]


@pytest.fixture(scope="session")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 training + 2 validation cue-match videos (read-only: copy it before changing anything)."""
    root = tmp_path_factory.mktemp("train") / "cue"
    generate("cue-match", root, videos=4, val=2, size=32, seed=3)
    return root

"""Saved reference results (Polygraphy's ``--save-outputs``/``--load-outputs``): the verification
stream and the PyTorch outputs of one graph in an ``.npz`` file, to check runtimes on a machine
that has no PyTorch model (a GPU box checking ort-cuda/tensorrt against CPU results).

The file holds ``frames`` [steps, B, C, T, H, W], ``reset`` [steps, B], one ``out.<output>`` array
[steps, ...] per graph output (``logits`` and every ``state_out.<name>``) and a JSON record: the
graph's sha256 (a reference is refused for any other graph), its name and precision, the stream
(clips, boundaries, seed), the edgemem and torch versions and the machine that made it.
"""

from __future__ import annotations

import hashlib
import json
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgemem.atomic import atomic_path
from edgemem.contract import LOGITS, GraphContract, state_out_name
from edgemem.errors import InputError
from edgemem.export.stream import Stream
from edgemem.finite import check_finite

FORMAT = "edgemem.reference"
FORMAT_VERSION = 1
_META = "__edgemem_reference__"
_PREFIX = "out."


@dataclass(frozen=True)
class SavedReference:
    """The stream, the reference outputs per step, and the record that ties them to one graph."""

    stream: Stream
    outputs: list[dict[str, np.ndarray]]
    meta: dict[str, Any]
    path: Path

    def describe(self) -> str:
        m = self.meta
        return f"reference {self.path.name} ({m['made_by']} on {m['machine']['arch']}, edgemem {m['edgemem']})"


def graph_sha256(path: str | Path) -> str:
    """sha256 of the graph file and its external data files (``<name>.data``), in name order."""
    path = Path(path)
    h = hashlib.sha256()
    for f in [path, *sorted(path.parent.glob(path.name + ".data"))]:
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def machine() -> dict[str, Any]:
    """Where a reference was made: architecture, OS and the x86 ISA extensions that change numerics."""
    from edgemem.hardware import isa

    return {"arch": platform.machine(), "system": platform.system(), "isa": [k for k, v in isa().items() if v]}


def save_reference(
    path: str | Path,
    graph: str | Path,
    contract: GraphContract,
    precision: str,
    stream: Stream,
    outputs: list[dict[str, np.ndarray]],
    *,
    seed: int,
    boundaries: int,
    made_by: str,
) -> Path:
    """Write the stream and ``outputs`` of ``graph`` to ``path`` (temp file + rename; nothing on error)."""
    import torch

    import edgemem

    path = Path(path)
    if path.suffix.lower() != ".npz":
        raise InputError(f"reference file must end in .npz, got '{path.name}'")
    names = contract.output_names
    for t, step in enumerate(outputs):
        check_finite({n: step[n] for n in names}, f"the reference's step {t} (not saved)")
    meta = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "graph": Path(graph).name,
        "graph_sha256": graph_sha256(graph),
        "model": contract.card.display_name,
        "precision": precision,
        "batch": stream.batch,
        "clips": stream.steps,
        "boundaries": boundaries,
        "boundary_steps": stream.boundaries,
        "seed": seed,
        "outputs": names,
        "made_by": made_by,
        "edgemem": edgemem.__version__,
        "torch": torch.__version__,
        "machine": machine(),
    }
    arrays = {"frames": np.stack(stream.frames), "reset": np.stack(stream.reset)}
    arrays.update({_PREFIX + n: np.stack([step[n] for step in outputs]) for n in names})
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays, **{_META: np.array(json.dumps(meta))})  # type: ignore[arg-type]
    return path


def load_reference(path: str | Path, graph: str | Path, contract: GraphContract) -> SavedReference:
    """Read a reference file and check it belongs to ``graph``; InputError (one line) otherwise."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"reference file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as e:  # zipfile.BadZipFile, ValueError, OSError, EOFError ...
        raise InputError(f"cannot read reference file {path.name}: {type(e).__name__}: {e}") from None
    try:
        meta = json.loads(str(arrays.pop(_META)))
    except (KeyError, ValueError):
        raise InputError(f"{path.name} is not an edgemem reference file (no {FORMAT} record)") from None
    if not isinstance(meta, dict):
        raise InputError(f"{path.name}: malformed {FORMAT} record")
    if meta.get("format") != FORMAT or meta.get("version") != FORMAT_VERSION:
        raise InputError(f"{path.name}: unsupported reference format {meta.get('format')} v{meta.get('version')}")
    digest = graph_sha256(graph)
    if meta.get("graph_sha256") != digest:
        raise InputError(
            f"{path.name} was made for graph {meta.get('graph')} (sha256 {str(meta.get('graph_sha256'))[:12]}), "
            f"not {Path(graph).name} (sha256 {digest[:12]})"
        )
    return SavedReference(_stream(arrays, path, contract), _outputs(arrays, path, contract), meta, path)


def _stream(arrays: dict[str, np.ndarray], path: Path, contract: GraphContract) -> Stream:
    frames, reset = arrays.get("frames"), arrays.get("reset")
    if frames is None or reset is None:
        raise InputError(f"{path.name} lacks the stream (frames, reset)")
    c_t_h_w = tuple(contract.frames.shape[1:])
    if frames.dtype != np.float32 or frames.ndim != 6 or tuple(frames.shape[2:]) != c_t_h_w:
        raise InputError(f"{path.name}: frames {frames.dtype} {list(frames.shape)} do not fit clips {list(c_t_h_w)}")
    steps, batch = frames.shape[:2]
    if reset.dtype != np.bool_ or reset.shape != (steps, batch):
        raise InputError(f"{path.name}: reset must be bool [{steps}, {batch}], got {reset.dtype} {list(reset.shape)}")
    if isinstance(contract.batch, int) and contract.batch != batch:
        raise InputError(f"{path.name} holds batch {batch}; the graph was exported for batch {contract.batch}")
    check_finite({"frames": frames}, path.name)
    bounds = [[t for t in range(1, steps) if reset[t, b]] for b in range(batch)]
    return Stream(list(frames), list(reset), bounds)


def _outputs(arrays: dict[str, np.ndarray], path: Path, contract: GraphContract) -> list[dict[str, np.ndarray]]:
    names = contract.output_names
    found = sorted(k[len(_PREFIX) :] for k in arrays if k.startswith(_PREFIX))
    if found != sorted(names):
        raise InputError(f"{path.name} holds outputs {found}; the graph has {sorted(names)}")
    steps, batch = arrays["frames"].shape[:2]
    specs = {LOGITS: contract.logits.shape, **{state_out_name(s.name): s.shape for s in contract.state}}
    for n in names:
        a, want = arrays[_PREFIX + n], [steps, batch, *specs[n][1:]]
        fits = a.ndim == len(want) and all(isinstance(w, str) or w == g for w, g in zip(want, a.shape, strict=True))
        if not fits:
            raise InputError(f"{path.name}: output {n} has shape {list(a.shape)}, the graph gives {want}")
        check_finite({n: a}, path.name)
    return [{n: arrays[_PREFIX + n][t] for n in names} for t in range(steps)]

"""``edgemem serve export``: a Triton model repository from edgemem graphs, written atomically.

Each graph becomes ``REPO/<name>/config.pbtxt`` and ``REPO/<name>/1/model.onnx``. The served graph
differs from the exported one only at its inputs, never inside:

- a dynamic-batch graph with state: Triton hands the START control over as ``[B, 1]``, so ``reset``
  becomes a ``[B, 1]`` input squeezed to the graph's ``[B]`` by one node in front;
- a graph without state whose ``reset`` no node reads (the contract says it is ignored): the input
  is dropped, so a client sends ``frames`` only.

Every model is built and validated in a staging folder beside the repository; only when all of
them succeeded are they moved into place (an existing model of the same name is replaced).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgemem import contract as C
from edgemem.errors import InputError, UnsupportedError
from edgemem.serve.config import ServeOptions, build_config, to_pbtxt
from edgemem.serve.graphs import CLIP, STATEFUL, ServedGraph, read_served_graph

RESET_FLAT = "edgemem.reset_flat"
SINGLE_FILE_LIMIT = 2**31 - 2**26  # protobuf's 2 GB limit, with room for the graph itself
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class ServedModel:
    name: str
    graph: ServedGraph
    path: Path  # REPO/<name>


def default_name(path: Path) -> str:
    """``memvit_tiny.onnx`` -> ``memvit_tiny``; ``cm.encode.onnx`` -> ``cm_encode``."""
    stem = path.name.removesuffix(".onnx")
    return re.sub(r"[^A-Za-z0-9_-]+", "_", stem).strip("_") or "model"


def served_proto(g: ServedGraph) -> Any:
    """The ONNX model Triton runs for ``g`` (see the module docstring for the two input changes)."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(g.path))  # with external data, if any
    graph = model.graph
    batched = g.batch is None
    if g.kind == STATEFUL and batched:
        reset = next(v for v in graph.input if v.name == C.RESET)
        batch_dim = reset.type.tensor_type.shape.dim[0].dim_param or C.BATCH_DIM
        for node in graph.node:
            node.input[:] = [RESET_FLAT if i == C.RESET else i for i in node.input]
        for out in graph.output:  # an output that is the reset input itself (no node in between)
            if out.name == C.RESET:
                raise UnsupportedError(f"{g.path.name}: 'reset' is also a graph output")
        new = helper.make_tensor_value_info(C.RESET, TensorProto.BOOL, [batch_dim, 1])
        reset.CopyFrom(new)
        opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
        if opset >= 13:
            axes = helper.make_tensor("edgemem.reset_axes", TensorProto.INT64, [1], [1])
            graph.initializer.append(axes)
            squeeze = helper.make_node("Squeeze", [C.RESET, axes.name], [RESET_FLAT], name="edgemem.reset_squeeze")
        else:
            squeeze = helper.make_node("Squeeze", [C.RESET], [RESET_FLAT], axes=[1], name="edgemem.reset_squeeze")
        graph.node.insert(0, squeeze)
    elif g.kind == CLIP and not g.reset_used:
        keep = [v for v in graph.input if v.name != C.RESET]
        del graph.input[:]
        graph.input.extend(keep)
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as e:
        raise UnsupportedError(f"{g.path.name}: the served graph does not check: {str(e).splitlines()[0]}") from None
    return model


def _save(model: Any, folder: Path) -> None:
    import onnx

    big = model.ByteSize() > SINGLE_FILE_LIMIT
    onnx.save_model(model, str(folder / "model.onnx"), save_as_external_data=big, location="model.onnx.data")


def plan(graphs: list[Path], names: list[str] | None, opts: ServeOptions) -> list[tuple[str, ServedGraph, Any]]:
    """``(name, graph, ModelConfig)`` for every graph, all validated before anything is written."""
    opts.check()
    if names is not None and len(names) != len(graphs):
        raise InputError(f"{len(names)} --name for {len(graphs)} graphs; give one name per graph or none")
    planned, seen = [], set()
    for i, path in enumerate(graphs):
        g = read_served_graph(path)
        name = names[i] if names else default_name(Path(path))
        if not _NAME.match(name):
            raise InputError(f"model name {name!r}: use letters, digits, '_', '-', '.'")
        if name in seen:
            raise InputError(f"two graphs would be served as model '{name}'; name them with --name")
        seen.add(name)
        cfg = build_config(g, name, opts)
        to_pbtxt(cfg)
        planned.append((name, g, cfg))
    return planned


def write_repository(
    graphs: list[str | Path], repo: str | Path, *, names: list[str] | None = None, opts: ServeOptions | None = None
) -> list[ServedModel]:
    """Write one Triton model per graph into ``repo`` (created if missing)."""
    repo = Path(repo)
    planned = plan([Path(p) for p in graphs], names, opts or ServeOptions())
    if repo.exists() and not repo.is_dir():
        raise InputError(f"--repo {repo} exists and is not a folder")
    try:
        repo.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot create {repo}: {e.strerror}") from None
    staging = Path(tempfile.mkdtemp(prefix=f".{repo.name}.staging.", dir=repo.parent))
    try:
        for name, g, cfg in planned:
            folder = staging / name
            (folder / "1").mkdir(parents=True)
            _save(served_proto(g), folder / "1")
            (folder / "config.pbtxt").write_text(to_pbtxt(cfg))
        served = []
        for name, g, _ in planned:
            target = repo / name
            old = None
            if target.exists():
                old = Path(tempfile.mkdtemp(prefix=f".{name}.old.", dir=repo.parent))
                os.replace(target, old / name)
            os.replace(staging / name, target)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
            served.append(ServedModel(name, g, target))
        return served
    finally:
        shutil.rmtree(staging, ignore_errors=True)

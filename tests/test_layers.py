"""Layers only look down: every ``import`` in edgemem (module level or inside a function, and
``importlib.import_module("edgemem...")``) stays within what its layer may use (docs/ARCHITECTURE.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import edgemem

ROOT = Path(edgemem.__file__).parent
BOTTOM = {"errors", "contract", "hardware", "optional", "finite", "atomic", "precision", "strict_yaml", "argtypes"}
# package (or top-level module) -> the edgemem packages it may import besides itself and the root.
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "contract": {"errors"},
    "optional": {"errors"},
    "finite": {"errors"},
    "atomic": {"errors"},
    "precision": {"errors"},
    "strict_yaml": set(),
    "argtypes": set(),
    "hardware": {"errors", "optional"},
    "runtimes": BOTTOM,
    "data": BOTTOM,
    "models": BOTTOM,
    "export": BOTTOM | {"runtimes", "models", "data"},
    "serve": BOTTOM | {"runtimes", "data", "export", "bench"},
    "bench": BOTTOM | {"runtimes", "data", "models", "export"},
    "train": BOTTOM | {"data", "models", "runtimes", "export"},
}
TOP = {"cli", "demo"}  # the commands on top may import everything


def edgemem_imports(path: Path) -> list[tuple[int, str]]:
    """``(line, first-level package)`` of every edgemem import in ``path``, nested ones included."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # a relative import: resolve against the file's package
                base = path.relative_to(ROOT.parent).with_suffix("").parts[: -node.level]
                names = [".".join((*base, node.module or ""))]
            elif node.module == "edgemem":
                names = [f"edgemem.{a.name}" for a in node.names]
            else:
                names = [node.module or ""]
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module":
            if node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                names = [node.args[0].value]
        for name in names:
            parts = name.split(".")
            if parts[0] == "edgemem" and len(parts) > 1:
                found.append((node.lineno, parts[1]))
    return found


def layer_of(path: Path) -> str:
    return path.relative_to(ROOT).parts[0].removesuffix(".py")


FILES = sorted(p for p in ROOT.rglob("*.py") if p != ROOT / "__init__.py" and layer_of(p) not in TOP)


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_only_look_down(path: Path) -> None:
    layer = layer_of(path)
    assert layer in ALLOWED, f"{layer} is in no layer of ALLOWED (add it and to docs/ARCHITECTURE.md)"
    bad = [f"line {n}: edgemem.{pkg}" for n, pkg in edgemem_imports(path) if pkg != layer and pkg not in ALLOWED[layer]]
    assert not bad, f"{path.relative_to(ROOT)} ({layer}) imports above its layer: {bad}"


def test_runtimes_are_graph_only() -> None:
    """The rule spelled out for the runtimes (and checked to see function-local imports)."""
    files = sorted((ROOT / "runtimes").glob("*.py"))
    assert len(files) > 5
    bad = [
        f"{p.name}:{n} edgemem.{pkg}"
        for p in files
        for n, pkg in edgemem_imports(p)
        if pkg in ("models", "export", "train", "serve", "bench", "data")
    ]
    assert not bad, f"runtimes/ imports above itself: {bad}"


def test_checker_sees_nested_and_dynamic_imports(tmp_path: Path) -> None:
    """The walker is not blind: a function-local, a from-edgemem and an import_module import are found."""
    text = (
        "import importlib\n"
        "def f():\n"
        "    from edgemem.models.registry import create_model\n"
        "    from edgemem import export\n"
        "    importlib.import_module('edgemem.train.loop')\n"
    )
    probe = tmp_path / "probe.py"
    probe.write_text(text)
    found = {pkg for _, pkg in edgemem_imports(probe)}
    assert found == {"models", "export", "train"}


def test_torch_runtime_comes_from_export() -> None:
    """``torch`` (it builds models) is registered by ``edgemem.export``; names are never overwritten."""
    import edgemem.export  # noqa: F401
    from edgemem.runtimes.availability import check
    from edgemem.runtimes.registry import RUNTIMES, register_runtime

    assert "torch" in RUNTIMES and check("torch").available
    with pytest.raises(ValueError, match="already registered"):
        register_runtime("torch", RUNTIMES["torch"].factory, "again", lambda: "x")

"""Optional dependencies: import one where it is used, or say in one line which extra installs it.

``require("matplotlib", extra="plots")`` returns the module, or raises ``MissingExtraError`` (an
``UnsupportedError``: the CLI prints it as one line and exits 2) naming the extra:
``pip install 'edgemem[plots]'``. The extras are those of ``pyproject.toml``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from edgemem.errors import UnsupportedError

# extra -> the packages it installs (as in pyproject.toml [project.optional-dependencies])
EXTRAS: dict[str, str] = {
    "plots": "matplotlib",
    "openvino": "openvino",
    "gpu": "onnxruntime-gpu",
    "tensorrt": "tensorrt, cuda-python",
    "int8": "nncf",
    "serve": "tritonclient[grpc]",
}


class MissingExtraError(UnsupportedError):
    """An optional dependency that is not installed; the message names the extra to install."""


def install_hint(extra: str) -> str:
    """``pip install 'edgemem[EXTRA]'`` for a known extra."""
    if extra not in EXTRAS:
        raise ValueError(f"unknown extra {extra!r}; known: {', '.join(EXTRAS)}")
    return f"pip install 'edgemem[{extra}]'"


def _is_missing(err: ImportError, module: str) -> bool:
    """Whether ``err`` says ``module`` itself (or a parent package) is absent, not a broken dependency of it."""
    name = err.name or ""
    return bool(name) and (module == name or module.startswith(name + ".") or name.startswith(module + "."))


def require(module: str, *, extra: str, purpose: str | None = None) -> ModuleType:
    """Import ``module``; if it is not installed, raise ``MissingExtraError`` naming ``extra``.

    ``purpose`` says what needs it (``"--plots"``, ``"runtime openvino"``). A module that is installed but
    fails to import (a broken dependency of it) is reported as such, with the import error.
    """
    hint = install_hint(extra)
    package = module.split(".")[0]
    need = f"{purpose} needs {package}, which" if purpose else package
    try:
        return importlib.import_module(module)
    except ImportError as e:
        if _is_missing(e, module):
            raise MissingExtraError(f"{need} is not installed: {hint}") from None
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise MissingExtraError(f"{need} is installed but cannot be imported ({first}); try {hint}") from None

"""The one way edgemem writes a file: a temp file beside the target, renamed over it when complete.

A reader never sees a half-written graph, state, result or video, and a failed write leaves nothing
(or the previous file) at the target. ``atomic_path`` is the context manager for writers that need a
path (ONNX, torch, PyAV, matplotlib); ``AtomicFile`` is the same for writers that stay open across
calls (a stream's JSONL, an annotated video); ``write_bytes``/``write_text``/``write_json`` cover the rest.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from edgemem.errors import EdgememError, InputError


class AtomicFile:
    """A temp file beside ``path`` (same folder, ``.<name>.<random>.tmp<suffix>``); ``commit()`` renames it over ``path``
    (mode 0644), ``discard()`` removes it and the folders made for it. A folder or temp file that cannot
    be made raises ``error``."""

    def __init__(self, path: str | os.PathLike[str], *, error: type[EdgememError] = InputError) -> None:
        self.path = Path(path)
        self.made = [d for d in self.path.parents if not d.exists()]  # innermost first
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(
                dir=self.path.parent, prefix=f".{self.path.name}.", suffix=f".tmp{self.path.suffix}"
            )
        except OSError as e:
            raise error(f"cannot write {self.path}: {e.strerror}") from None
        os.close(fd)
        self.tmp = Path(name)

    def commit(self) -> Path:
        os.chmod(self.tmp, 0o644)
        os.replace(self.tmp, self.path)
        return self.path

    def discard(self) -> None:
        self.tmp.unlink(missing_ok=True)
        for folder in self.made:  # nothing left behind by a write that did not complete
            try:
                folder.rmdir()
            except OSError:  # not empty: the committed file, or another writer's
                break


@contextmanager
def atomic_path(path: str | os.PathLike[str], *, error: type[EdgememError] = InputError) -> Iterator[Path]:
    """Yield a temp path to write; on a clean exit it replaces ``path``, on any error it is removed."""
    f = AtomicFile(path, error=error)
    try:
        yield f.tmp
        f.commit()
    finally:
        f.discard()


def check_writable(path: str | os.PathLike[str]) -> Path:
    """Refuse, before any slow work, an output path that cannot be written: a folder, or a path under a
    file or an unwritable folder. Missing folders are fine: the write creates them."""
    out = Path(path)
    if out.is_dir():
        raise InputError(f"output is a directory: {out}")
    base = out.parent
    while not base.exists() and base != base.parent:
        base = base.parent
    if not base.is_dir():
        raise InputError(f"cannot write {out}: {base} is not a directory")
    if not os.access(base, os.W_OK | os.X_OK):
        raise InputError(f"cannot write {out}: {base} is not writable")
    return out


def write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | os.PathLike[str], data: Any, *, indent: int = 2) -> Path:
    """JSON (NaN refused: it is not JSON) with a trailing newline."""
    return write_text(path, json.dumps(data, indent=indent, allow_nan=False) + "\n")

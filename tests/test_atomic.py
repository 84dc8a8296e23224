"""The one atomic-write helper: complete files or nothing, never a half-written target."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from edgemem.atomic import AtomicFile, atomic_path, check_writable, write_json, write_text
from edgemem.errors import InputError, StateError


def test_writes_and_leaves_no_temp(tmp_path: Path) -> None:
    out = write_json(tmp_path / "a" / "r.json", {"x": 1})
    assert json.loads(out.read_text()) == {"x": 1}
    assert oct(out.stat().st_mode & 0o777) == "0o644"
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["r.json"]


def test_failure_keeps_the_old_file(tmp_path: Path) -> None:
    target = write_text(tmp_path / "t.txt", "old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        assert tmp.parent == target.parent and tmp.suffix == ".txt" and ".tmp" in tmp.name
        raise RuntimeError("writer failed")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["t.txt"]


def test_nan_is_refused_and_nothing_written(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        write_json(tmp_path / "n.json", {"x": float("nan")})
    assert not list(tmp_path.iterdir())


def test_unwritable_folder_is_a_one_line_error(tmp_path: Path) -> None:
    blocker = write_text(tmp_path / "file", "x")
    with pytest.raises(InputError, match="cannot write"):
        write_text(blocker / "sub" / "t.txt", "y")
    with pytest.raises(StateError, match="cannot write"):
        AtomicFile(blocker / "s.npz", error=StateError)


def test_discard_removes_the_temp(tmp_path: Path) -> None:
    f = AtomicFile(tmp_path / "v.mp4")
    assert f.tmp.is_file() and f.tmp.name.endswith(".tmp.mp4")
    f.discard()
    assert not list(tmp_path.iterdir())


def test_check_writable_refuses_early_and_allows_missing_folders(tmp_path) -> None:
    assert check_writable(tmp_path / "new" / "deeper" / "g.onnx") == tmp_path / "new" / "deeper" / "g.onnx"
    assert not (tmp_path / "new").exists()  # nothing is made by the check itself
    with pytest.raises(InputError, match="output is a directory"):
        check_writable(tmp_path)
    (tmp_path / "f").write_text("x")
    with pytest.raises(InputError, match=r"f is not a directory$"):
        check_writable(tmp_path / "f" / "sub" / "g.onnx")
    if os.geteuid() != 0:  # root writes anywhere
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o555)
        with pytest.raises(InputError, match="ro is not writable"):
            check_writable(ro / "a" / "g.onnx")


def test_a_failed_write_leaves_no_folder_it_made(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "a" / "b" / "g.onnx") as tmp:
        tmp.write_text("half")
        raise RuntimeError("export failed")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "kept").mkdir()
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "kept" / "new" / "g.onnx"):
        raise RuntimeError("export failed")
    assert [p.name for p in tmp_path.rglob("*")] == ["kept"]  # only what it made is removed
    write_text(tmp_path / "c" / "d" / "r.txt", "done")
    assert (tmp_path / "c" / "d" / "r.txt").read_text() == "done"

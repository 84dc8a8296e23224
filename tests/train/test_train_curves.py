"""Learning-curve PNGs from run folders' metrics.jsonl."""

from __future__ import annotations

import json

import pytest

from edgemem.train.curves import main, val_curve

pytest.importorskip("matplotlib")


def _run(path, vals):
    path.mkdir()
    lines = [{"kind": "step", "step": 1, "loss": 1.0}]
    lines += [{"kind": "epoch", "epoch": e + 1, "val_top1": v} for e, v in enumerate(vals)]
    lines.append({"kind": "epoch", "epoch": len(vals) + 1})  # not evaluated: left out
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    return path


def test_curves_png(tmp_path):
    a, b, c = (_run(tmp_path / n, v) for n, v in (("a", [0.5, 0.9]), ("b", [0.4, 1.0]), ("c", [0.3, 0.6])))
    assert val_curve(a) == [(1, 0.5), (2, 0.9)]
    out = tmp_path / "docs" / "curves.png"
    assert main(["--out", str(out), "--chance", "0.5", f"mem={a},{b}", f"fs={c}"]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in out.parent.iterdir()] == ["curves.png"]


def test_curves_bad_input(tmp_path, capsys):
    assert main(["--out", str(tmp_path / "x.png"), f"mem={tmp_path / 'nope'}"]) == 2
    assert main(["--out", str(tmp_path / "x.png"), "no-label"]) == 2
    assert "error" in capsys.readouterr().err and not (tmp_path / "x.png").exists()

"""A missing optional dependency is one line naming the extra to install, exit status 2: each command
that needs one is run in a subprocess with the module hidden (``sys.modules[name] = None``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edgemem.optional import EXTRAS, MissingExtraError, install_hint, require

ROOT = Path(__file__).resolve().parents[1]


def run_hidden(hidden: list[str], argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """``edgemem ARGV`` in a fresh process where importing any of ``hidden`` fails as if not installed."""
    code = (
        "import sys\n"
        f"for name in {hidden!r}:\n"
        "    sys.modules[name] = None\n"
        "from edgemem.cli import main\n"
        f"sys.exit(main({argv!r}))\n"
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=cwd)


def assert_names_extra(p: subprocess.CompletedProcess[str], command: str, extra: str) -> None:
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert lines[0].startswith(f"edgemem {command}: error:") and f"pip install 'edgemem[{extra}]'" in lines[0]


@pytest.fixture()
def results_dir(tmp_path: Path) -> Path:
    from edgemem.bench.schema import Cell, empty_result, write_result

    out = tmp_path / "results"
    write_result(out, empty_result(Cell("memvit_tiny", "ort-cpu"), {"device": "cpu-test"}, "failed", "x"))
    return out


def test_report_plots_without_matplotlib(results_dir: Path, tmp_path: Path) -> None:
    md, plots = tmp_path / "r.md", tmp_path / "plots"
    p = run_hidden(["matplotlib"], ["report", str(results_dir), "--md", str(md), "--plots", str(plots)], tmp_path)
    assert_names_extra(p, "report", "plots")
    assert "--plots" in p.stderr and not md.exists() and not plots.exists()


def test_report_without_plots_needs_no_matplotlib(results_dir: Path, tmp_path: Path) -> None:
    p = run_hidden(["matplotlib"], ["report", str(results_dir), "--md", str(tmp_path / "r.md")], tmp_path)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "r.md").is_file()


def test_openvino_runtime_without_openvino(tmp_path: Path) -> None:
    p = run_hidden(["openvino"], ["stream", "v.mp4", "--model", "m.onnx", "--runtime", "openvino"], tmp_path)
    assert_names_extra(p, "stream", "openvino")


def test_runtimes_names_the_extras(tmp_path: Path) -> None:
    p = run_hidden(["openvino", "tensorrt"], ["runtimes", "--json"], tmp_path)
    assert p.returncode == 0, p.stderr
    rows = {r["runtime"]: r for r in json.loads(p.stdout)["runtimes"]}
    assert not rows["openvino"]["available"] and "pip install 'edgemem[openvino]'" in rows["openvino"]["detail"]
    assert "pip install 'edgemem[tensorrt]'" in rows["tensorrt"]["detail"]
    if not rows["ort-cuda"]["available"]:
        assert "edgemem[gpu]" in rows["ort-cuda"]["detail"] or "fell back" in rows["ort-cuda"]["detail"]


def test_require_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "nncf", None)
    with pytest.raises(
        MissingExtraError, match=r"int8 export needs nncf, which is not installed: pip install 'edgemem\[int8\]'"
    ):
        require("nncf", extra="int8", purpose="int8 export")
    for name in ("tritonclient", "tritonclient.grpc"):  # earlier tests may have imported the real one
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(MissingExtraError, match=r"edgemem\[serve\]"):
        require("tritonclient.grpc", extra="serve")
    assert require("json", extra="plots") is json


def test_a_broken_install_is_not_called_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "brokenpkg_em").mkdir()
    (tmp_path / "brokenpkg_em" / "__init__.py").write_text("import a_dependency_that_is_gone_em\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(MissingExtraError, match="installed but cannot be imported.*a_dependency_that_is_gone_em"):
        require("brokenpkg_em", extra="plots")


def test_extras_are_those_of_pyproject() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert set(EXTRAS) <= set(extras)
    assert extras["int8"] == ["nncf>=3.4"]
    assert extras["serve"] == ["tritonclient[grpc]>=2.51"]
    with pytest.raises(ValueError, match="unknown extra"):
        install_hint("nope")

"""Saved reference results: `edgemem verify --save-reference` then `--reference` on other runtimes,
with no PyTorch model; tampered, foreign and broken reference files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from export_toys import make_toy

import edgemem.export.reference
from edgemem.cli import main
from edgemem.contract import read_contract
from edgemem.errors import NonFiniteError
from edgemem.export.onnx import to_onnx
from edgemem.export.saved_reference import load_reference, save_reference
from edgemem.export.stream import make_stream
from edgemem.runtimes.availability import check


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("ref")
    graph, other, ref = d / "toy.onnx", d / "other.onnx", d / "ref.npz"
    to_onnx(make_toy(), graph, batch=2, verify=False)
    to_onnx(make_toy(seed=1), other, batch=2, verify=False)
    assert main(["verify", str(graph), "--save-reference", str(ref), "--clips", "12", "--boundaries", "3"]) == 0
    return {"graph": graph, "other": other, "ref": ref, "dir": d}


@pytest.fixture
def no_torch_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """Checking against a saved reference must not rebuild the PyTorch model."""

    def refuse(*args: object, **kw: object) -> None:
        raise AssertionError("reference_model called")

    monkeypatch.setattr(edgemem.export.reference, "reference_model", refuse)


def rewrite(src: Path, dst: Path, **changes: np.ndarray) -> Path:
    with np.load(src) as z:
        arrays = {k: z[k] for k in z.files}
    arrays.update(changes)
    np.savez(dst, **arrays)
    return dst


def test_saved_file_holds_stream_outputs_and_record(saved: dict[str, Path]) -> None:
    assert [p.name for p in saved["dir"].iterdir() if p.name.startswith(".")] == []  # no temp file left
    contract = read_contract(saved["graph"])
    ref = load_reference(saved["ref"], saved["graph"], contract)
    again = make_stream((3, 4, 16, 16), batch=2, clips=12, boundaries=3, seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(ref.stream.frames, again.frames, strict=True))
    assert ref.stream.boundaries == again.boundaries and ref.stream.steps == 12
    assert set(ref.outputs[0]) == {"logits", "state_out.mem", "state_out.valid"}
    assert ref.outputs[0]["logits"].shape == (2, 5)
    m = ref.meta
    assert m["clips"] == 12 and m["boundaries"] == 3 and m["seed"] == 0 and m["precision"] == "f32"
    assert len(m["graph_sha256"]) == 64 and m["machine"]["arch"] and "edgemem" in m and "torch" in m


def test_round_trip_passes_on_other_runtimes_without_pytorch(
    saved: dict[str, Path], no_torch_model: None, capsys: pytest.CaptureFixture[str]
) -> None:
    runtimes = ["ort-cpu", "openvino"] if check("openvino").available else ["ort-cpu"]  # GPU machines: no openvino
    argv = ["verify", str(saved["graph"]), "--reference", str(saved["ref"]), "--runtimes", ",".join(runtimes)]
    assert main([*argv, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["passed"] and report["steps"] == 12 and report["batch"] == 2
    assert report["reference"].startswith("reference ref.npz (torch on")
    assert [r["runtime"] for r in report["runtimes"]] == runtimes
    assert all(o["max_abs"] < 1e-5 for r in report["runtimes"] for o in r["outputs"])
    assert main(argv) == 0
    assert f"Comparing {runtimes[-1]} vs reference ref.npz" in capsys.readouterr().out


def test_tampered_logits_fail(saved: dict[str, Path], no_torch_model: None, capsys: pytest.CaptureFixture[str]) -> None:
    with np.load(saved["ref"]) as z:
        logits = z["out.logits"].copy()
    logits[7, 1, 2] += 1e-3
    bad = rewrite(saved["ref"], saved["dir"] / "tampered.npz", **{"out.logits": logits})
    assert main(["verify", str(saved["graph"]), "--reference", str(bad), "--json"]) == 1
    out = {o["name"]: o for o in json.loads(capsys.readouterr().out)["runtimes"][0]["outputs"]}
    assert not out["logits"]["passed"] and out["logits"]["violations"] == 1 and out["logits"]["worst_step"] == 7
    assert out["state_out.mem"]["passed"]


def test_reference_of_another_graph_is_refused(saved: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify", str(saved["other"]), "--reference", str(saved["ref"])]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "was made for graph toy.onnx" in err and "not other.onnx" in err


def test_bad_reference_files_and_options(saved: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    d, graph, ref = saved["dir"], str(saved["graph"]), str(saved["ref"])
    garbage = d / "garbage.npz"
    garbage.write_bytes(b"not a zip")
    plain, listed = d / "plain.npz", d / "listed.npz"
    np.savez(plain, frames=np.zeros(3))
    np.savez(listed, __edgemem_reference__=np.array("[1, 2]"))
    with np.load(ref) as z:
        nan_state, short = z["out.state_out.mem"].copy(), z["out.logits"][:, :, :3].copy()
    nan_state[3] = np.nan
    cases = {
        "not found": ["--reference", str(d / "missing.npz")],
        "cannot read": ["--reference", str(garbage)],
        "not an edgemem reference": ["--reference", str(plain)],
        "malformed edgemem.reference record": ["--reference", str(listed)],
        "NaN or infinite values in 'state_out.mem'": [
            "--reference",
            str(rewrite(saved["ref"], d / "nan.npz", **{"out.state_out.mem": nan_state})),
        ],
        "the graph gives": ["--reference", str(rewrite(saved["ref"], d / "short.npz", **{"out.logits": short}))],
        "--clips 16 differs": ["--reference", ref, "--clips", "16"],
        "--checkpoint cannot": ["--reference", ref, "--checkpoint", "x.pyth"],
        "--save-reference cannot": ["--reference", ref, "--save-reference", str(d / "x.npz")],
        "must end in .npz": ["--save-reference", str(d / "ref.txt")],
    }
    for needle, extra in cases.items():
        assert main(["verify", graph, *extra]) == 2, needle
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and needle in err, (needle, err)
    assert not (d / "ref.txt").exists() and not (d / "x.npz").exists()


def test_non_finite_reference_is_not_saved(saved: dict[str, Path], tmp_path: Path) -> None:
    contract = read_contract(saved["graph"])
    stream = make_stream((3, 4, 16, 16), batch=2, clips=3, boundaries=1)
    steps = [{n: np.zeros((2, 5) if n == "logits" else (2, 3, 8), np.float32) for n in contract.output_names}] * 3
    steps = [dict(s) for s in steps]
    steps[1]["logits"] = np.full((2, 5), np.inf, np.float32)
    with pytest.raises(NonFiniteError, match=r"step 1 \(not saved\): NaN or infinite values in 'logits'"):
        save_reference(tmp_path / "r.npz", saved["graph"], contract, "f32", stream, steps, seed=0, boundaries=1,
                       made_by="torch")  # fmt: skip
    assert list(tmp_path.iterdir()) == []


def test_dynamic_batch_graph_takes_the_reference_batch(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    graph, ref = tmp_path / "dyn.onnx", tmp_path / "dyn.npz"
    to_onnx(make_toy(), graph, batch=None, verify=False)
    assert main(["verify", str(graph), "--batch", "3", "--clips", "6", "--save-reference", str(ref)]) == 0
    capsys.readouterr()
    assert main(["verify", str(graph), "--reference", str(ref), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["passed"] and report["batch"] == 3 and report["steps"] == 6
    assert main(["verify", str(graph), "--reference", str(ref), "--batch", "2"]) == 2
    assert "--batch 2 differs from the reference's 3" in capsys.readouterr().err

"""Verification: the test stream, the comparator, and `edgemem verify` on exported graphs."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from export_toys import ToyMemory, make_toy

from edgemem.cli import main
from edgemem.errors import InputError
from edgemem.export.calibration import synthetic_calibration
from edgemem.export.onnx import to_onnx
from edgemem.export.reference import reference_model
from edgemem.export.stream import boundary_steps, make_stream
from edgemem.export.verify import TOLERANCES, compare, verify_graph
from edgemem.precision import Precision


def test_stream_has_boundaries_at_different_steps_per_slot() -> None:
    s = make_stream((3, 4, 16, 16), batch=2, clips=16, boundaries=2, seed=1)
    assert s.steps == 16 and s.batch == 2
    assert s.boundaries == [[5, 11], [6, 12]]
    for b in range(2):
        assert [t for t in range(16) if s.reset[t][b]] == [0, *s.boundaries[b]]
    assert s.frames[0].dtype == np.float32 and s.reset[0].dtype == bool
    # Clips of one video are correlated, clips of different videos are not.
    same = np.corrcoef(s.frames[1][0].ravel(), s.frames[2][0].ravel())[0, 1]
    other = np.corrcoef(s.frames[4][0].ravel(), s.frames[5][0].ravel())[0, 1]
    assert same > 0.5 and abs(other) < 0.1
    again = make_stream((3, 4, 16, 16), batch=2, clips=16, boundaries=2, seed=1)
    assert all(np.array_equal(a, b) for a, b in zip(s.frames, again.frames, strict=True))
    with pytest.raises(InputError):
        boundary_steps(2, 2, 0)


def test_compare_locates_drift() -> None:
    rng = np.random.default_rng(0)
    ref = [{"logits": rng.standard_normal((1, 5)), "state_out.m": rng.standard_normal((1, 4))} for _ in range(6)]
    got = [{k: v.copy() for k, v in step.items()} for step in ref]
    for t in range(3, 6):  # an error that appears at step 3 and grows
        got[t]["state_out.m"] += 1e-3 * (t - 2)
    res = {o.name: o for o in compare(ref, got, TOLERANCES[Precision.F32])}
    assert res["logits"].passed and res["logits"].max_abs == 0
    m = res["state_out.m"]
    assert not m.passed and m.worst_step == 5 and m.violations == 12
    assert m.per_step_max[:3] == [0, 0, 0] and m.per_step_max[5] == pytest.approx(3e-3)
    got[0]["logits"][0, 0] = np.nan
    assert not next(o for o in compare(ref, got, TOLERANCES[Precision.F32]) if o.name == "logits").passed
    got[0]["logits"][0, 0] = ref[0]["logits"][0, 0]
    ref[1]["logits"][0, 1] = np.nan  # a NaN in the reference (a saved one, or the model's) fails too
    assert not next(o for o in compare(ref, got, TOLERANCES[Precision.F32]) if o.name == "logits").passed


def test_int8_tolerance_allows_a_share_of_outliers_and_says_so() -> None:
    """int8: up to 0.1% of an output's elements (over all steps) may exceed the bound; f32: none; NaN: never."""
    rng = np.random.default_rng(1)
    ref = [{"logits": rng.standard_normal((1, 5)), "state_out.m": rng.standard_normal((1, 1000))} for _ in range(4)]
    got = [{k: v.copy() for k, v in step.items()} for step in ref]
    got[3]["state_out.m"][0, :4] += 2.0  # 4 of 4000 elements far off
    int8, f32 = TOLERANCES[Precision.INT8], TOLERANCES[Precision.F32]
    m = next(o for o in compare(ref, got, int8) if o.name == "state_out.m")
    assert m.passed and (m.violations, m.elements, m.allowed) == (4, 4000, 4)
    assert m.verdict() == "PASS (4 of 4000 elements beyond, 4 allowed)"
    got[2]["state_out.m"][0, 0] += 2.0  # a fifth
    m = next(o for o in compare(ref, got, int8) if o.name == "state_out.m")
    assert not m.passed and m.verdict() == "FAIL (5 elements, 4 allowed, worst at step 3)"
    assert not next(o for o in compare(ref, got, f32) if o.name == "state_out.m").passed
    got[2]["state_out.m"][0, 0] = np.nan  # one NaN fails however many outliers are allowed
    assert not next(o for o in compare(ref, got, replace(int8, outliers=0.5)) if o.name == "state_out.m").passed
    logits = next(o for o in compare(ref, got, int8) if o.name == "logits")
    assert logits.allowed == 0  # 20 elements: 0.1% rounds down to none


@pytest.fixture(scope="module")
def graphs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("verify")
    out = {}
    cal = synthetic_calibration(make_toy().input_shape)
    for key, kw in {"f32": {}, "fp16": {}, "int8": {"calibration": cal}}.items():
        out[key] = str(d / f"toy_{key}.onnx")
        to_onnx(make_toy(), out[key], verify=False, precision=key, **kw)
    return out


@pytest.mark.parametrize("key", ["f32", "fp16", "int8"])
def test_reference_weights_come_from_the_graph(graphs: dict[str, str], key: str) -> None:
    original = make_toy().state_dict()
    rebuilt = reference_model(graphs[key]).state_dict()
    assert sorted(rebuilt) == sorted(original)
    worst = max(float((rebuilt[k] - original[k]).abs().max()) for k in original)
    assert worst == 0 if key == "f32" else 0 < worst < (1e-2 if key == "fp16" else 5e-2)


def test_cli_verify_report_and_exit_codes(graphs: dict[str, str], capsys) -> None:
    assert main(["verify", graphs["f32"], "--runtimes", "ort-cpu,openvino"]) == 0
    text = capsys.readouterr().out
    assert "PASSED" in text and "drift logits" in text and text.count(": PASS") == 3  # checker + 2 runtimes
    assert main(["verify", graphs["f32"], "--json", "--clips", "20", "--boundaries", "3"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["passed"] and report["steps"] == 20 and len(report["boundaries"][0]) == 3
    outputs = {o["name"]: o for o in report["runtimes"][0]["outputs"]}
    assert set(outputs) == {"logits", "state_out.mem", "state_out.valid"}
    assert {"max_abs", "mean_abs", "p99_abs", "per_step_max"} <= set(outputs["logits"])
    # A tolerance nothing can meet fails, with exit code 1.
    assert main(["verify", graphs["f32"], "--atol", "0", "--state-atol", "0"]) == 1
    assert "FAILED" in capsys.readouterr().out


def test_cli_verify_parses_the_graph_once(
    graphs: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """One ``edgemem verify`` on two runtimes: edgemem parses the file once (contract, reference
    weights, checker and sessions share the parsed graph); each runtime's own load is its own."""
    import onnx

    real, loads = onnx.load, []
    monkeypatch.setattr(onnx, "load", lambda *a, **k: loads.append(a[0]) or real(*a, **k))
    assert main(["verify", graphs["f32"], "--runtimes", "ort-cpu,openvino", "--clips", "3"]) == 0
    assert "PASSED" in capsys.readouterr().out
    assert loads == [graphs["f32"]]


def test_cli_verify_reduced_precision_uses_its_tolerance(graphs: dict[str, str], capsys) -> None:
    for key in ("fp16", "int8"):
        assert main(["verify", graphs[key], "--json"]) == 0
        report = json.loads(capsys.readouterr().out)
        assert report["precision"] == key and report["passed"]


def test_cli_verify_bad_inputs(graphs: dict[str, str], tmp_path, capsys) -> None:
    bad = tmp_path / "x.onnx"
    bad.write_bytes(b"garbage")
    for argv in (
        ["verify", str(bad)],
        ["verify", str(tmp_path / "none.onnx")],
        ["verify", graphs["f32"], "--atol", "nan"],  # would pass everything
        ["verify", graphs["f32"], "--state-atol", "-0.5"],
        ["verify", graphs["f32"], "--outliers", "1"],  # a share of the elements
        ["verify", graphs["f32"], "--outliers", "nan"],
        ["verify", graphs["f32"], "--data", str(tmp_path), "--data-videos", "0"],  # not the default 16
    ):
        assert main(argv) == 2, argv
        assert len(capsys.readouterr().err.strip().splitlines()) == 1, argv


class IgnoresReset(ToyMemory):
    """A broken export candidate: forgets to empty the memory at a video boundary."""

    def step(self, frames, state, reset=None):
        return super().step(frames, state, None)


def test_verification_catches_a_graph_that_ignores_reset(tmp_path) -> None:
    broken = IgnoresReset().eval()
    broken.load_state_dict(make_toy().state_dict())
    path = tmp_path / "broken.onnx"
    to_onnx(broken, path, verify=False)
    report = verify_graph(path, make_toy())
    assert not report.passed
    logits = report.runtimes[0].outputs[0]
    # Identical until the first video boundary (step 5), wrong from there on.
    assert max(logits.per_step_max[:5]) < 1e-5 and logits.per_step_max[5] > 1e-4
    # The export's one-line error names what failed, per runtime, with the worst error.
    line = report.failures()
    assert line.startswith(f"{report.runtimes[0].runtime}: logits {logits.violations} elements, max |Δ| ")
    assert "\n" not in line and all(o.name in line for o in report.runtimes[0].outputs if not o.passed)

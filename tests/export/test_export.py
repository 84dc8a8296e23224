"""to_onnx / `edgemem export` on small streaming models defined in the tests (no model internals)."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from conftest import OFFICIAL_TINY
from export_toys import ToyMemory, make_toy

from edgemem.cli import main
from edgemem.contract import read_contract
from edgemem.errors import InputError, UnsupportedError
from edgemem.export.calibration import synthetic_calibration
from edgemem.export.onnx import VerificationError, to_onnx
from edgemem.export.stream import make_stream
from edgemem.export.verify import Tolerance


def _session(path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def test_export_verifies_and_leaves_only_the_graph(tmp_path) -> None:
    result = to_onnx(make_toy(), tmp_path / "graphs" / "toy.onnx")  # a missing folder is made
    assert result.report is not None and result.report.passed
    assert result.report.steps >= 16 and all(len(b) >= 2 for b in result.report.boundaries)
    ort_result = result.report.runtimes[0]
    assert [o.name for o in ort_result.outputs] == ["logits", "state_out.mem", "state_out.valid"]
    assert max(o.max_abs for o in ort_result.outputs) < 1e-5
    assert sorted(p.name for p in (tmp_path / "graphs").iterdir()) == ["toy.onnx"]
    assert result.stats.nodes < 60 and "If" not in result.stats.ops and "Loop" not in result.stats.ops


def test_per_slot_reset_batch_of_two(tmp_path) -> None:
    """Two streams in one batch, boundaries at different steps: each slot equals its own batch-1 run."""
    model = make_toy()
    path = tmp_path / "b2.onnx"
    to_onnx(model, path, batch=2, verify=False)
    contract = read_contract(path)
    sess = _session(path)
    stream = make_stream(model.input_shape, batch=2, clips=16, boundaries=2, seed=3)
    assert stream.boundaries[0] != stream.boundaries[1]
    state = contract.zero_state()
    got = []
    for frames, reset in zip(stream.frames, stream.reset, strict=True):
        feeds = contract.feeds(frames, reset, state)
        outs = dict(zip(contract.output_names, sess.run(contract.output_names, feeds), strict=True))
        logits, state = contract.split_outputs(outs)
        got.append(logits)
    for slot in range(2):
        s = model.init_state(1)
        for t, (frames, reset) in enumerate(zip(stream.frames, stream.reset, strict=True)):
            with torch.no_grad():
                ref, s = model.step(
                    torch.from_numpy(frames[slot : slot + 1]), s, torch.from_numpy(reset[slot : slot + 1])
                )
            np.testing.assert_allclose(got[t][slot], ref[0].numpy(), atol=1e-5, err_msg=f"slot {slot} step {t}")


def test_dynamic_batch(tmp_path) -> None:
    path = tmp_path / "dyn.onnx"
    result = to_onnx(make_toy(), path, batch=None)
    assert result.report.batch == 2 and result.report.passed
    c = read_contract(path)
    assert isinstance(c.batch, str) and all(isinstance(s.shape[0], str) for s in c.state)
    outs = _session(path).run(None, c.feeds(np.zeros((3, 3, 4, 16, 16), np.float32), np.ones(3, bool), c.zero_state(3)))
    assert outs[0].shape == (3, 5)


def test_dynamic_batch_without_state(tmp_path) -> None:
    path = tmp_path / "clip.onnx"  # a memory-less model has no state vararg to give a dynamic shape
    assert to_onnx(make_toy(memory=False), path, batch=None).report.passed
    c = read_contract(path)
    assert isinstance(c.batch, str) and not c.state
    feeds = c.feeds(np.zeros((3, 3, 4, 16, 16), np.float32), np.ones(3, bool), {})
    assert _session(path).run(None, feeds)[0].shape == (3, 5)


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_reduced_precision_keeps_contract_dtypes(tmp_path, precision) -> None:
    path = tmp_path / "low.onnx"
    kw: dict = {}
    if precision == "int8":
        pytest.importorskip("nncf", reason="int8 export needs nncf: pip install 'edgemem[int8]'")
        kw = {"calibration": synthetic_calibration(make_toy().input_shape), "runtimes": ("ort-cpu",)}
    result = to_onnx(make_toy(), path, precision=precision, **kw)
    assert result.report.passed and result.report.precision == precision
    assert read_contract(path).export["precision"] == precision and "quantize" not in read_contract(path).export
    logits = result.report.runtimes[0].outputs[0]
    # Not bit-exact, but within the verifier's own bound for this precision (not a number from one CPU).
    assert 0 < logits.max_abs <= logits.atol + logits.rtol * logits.max_ref
    c = read_contract(path)
    assert c.frames.dtype == "float32" and all(s.dtype == "float32" for s in c.state)
    ops = result.stats.ops
    assert "QuantizeLinear" in ops if precision == "int8" else "Cast" in ops


def test_failed_verification_leaves_no_file(tmp_path) -> None:
    path = tmp_path / "strict.onnx"
    with pytest.raises(VerificationError) as info:
        to_onnx(make_toy(), path, tolerance=Tolerance(0.0, 0.0, 0.0, 0.0))
    assert not info.value.report.passed and "FAIL" in info.value.report.format()
    assert str(info.value).startswith(f"verification failed ({info.value.report.failures()}); nothing written\n")
    assert list(tmp_path.iterdir()) == []


class DataDependent(ToyMemory):
    """A step with Python control flow on tensor values: not exportable as one static graph."""

    def step(self, frames, state, reset=None):
        if frames.sum() > 0:
            return super().step(frames, state, reset)
        return super().step(-frames, state, reset)


def test_exporter_failure_is_one_error_and_no_file(tmp_path) -> None:
    with pytest.raises(UnsupportedError, match="exporter failed"):
        to_onnx(DataDependent().eval(), tmp_path / "dd.onnx")
    assert list(tmp_path.iterdir()) == []


def test_bad_arguments(tmp_path) -> None:
    with pytest.raises(UnsupportedError, match="opset 12"):
        to_onnx(make_toy(), tmp_path / "x.onnx", opset=12)
    (tmp_path / "f").write_text("")
    with pytest.raises(InputError, match="f is not a directory"):
        to_onnx(make_toy(), tmp_path / "f" / "sub" / "x.onnx")
    (tmp_path / "f").unlink()
    (tmp_path / "d.onnx").mkdir()
    with pytest.raises(InputError, match="output is a directory"):
        to_onnx(make_toy(), tmp_path / "d.onnx")
    (tmp_path / "d.onnx").rmdir()
    with pytest.raises(InputError, match=".onnx"):
        to_onnx(make_toy(), tmp_path / "x.txt")
    with pytest.raises(UnsupportedError, match="cannot be exported in 'bf16'; choose from f32, fp16, int8"):
        to_onnx(make_toy(), tmp_path / "x.onnx", precision="bf16")
    with pytest.raises(InputError, match="StreamingModel"):
        to_onnx(torch.nn.Linear(2, 2), tmp_path / "x.onnx")
    cal = synthetic_calibration(make_toy().input_shape)
    with pytest.raises(InputError, match="calibration data applies to int8 only, not to a fp16 graph"):
        to_onnx(make_toy(), tmp_path / "x.onnx", precision="fp16", calibration=cal)  # not silently unquantized
    assert list(tmp_path.iterdir()) == []


def _cli(argv: list[str], capsys) -> tuple[int, str]:
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    return rc, err


def test_cli_bad_inputs_one_line_errors(tmp_path, capsys) -> None:
    out = str(tmp_path / "x.onnx")
    (tmp_path / "file.txt").write_text("")
    cases = [
        (["export", "no_such_model", "--out", out], "unknown model"),
        (["export", "mvit_tiny", "--out", str(tmp_path / "file.txt" / "x.onnx")], "file.txt is not a directory"),
        (["export", "mvit_tiny", "--out", "/proc/x.onnx"], "cannot write"),
        (["export", "mvit_tiny", "--out", out, "--opset", "9"], "opset 9"),
        (["export", "mvit_tiny", "--out", out, "--batch", "zero"], "--batch"),
        # a NaN tolerance would pass every comparison: refused with the negative ones
        (["export", "memvit_tiny", "--out", out, "--atol", "nan"], "--atol must be a finite number >= 0, got nan"),
        (["export", "memvit_tiny", "--out", out, "--state-atol", "-1"], "--state-atol must be a finite number >= 0"),
        (["export", "memvit_tiny", "--out", out, "--clips", "0"], "--clips must be >= 1, got 0"),
        (["export", "memvit_tiny", "--out", out, "--boundaries", "-1"], "--boundaries must be >= 0, got -1"),
    ]
    for argv, msg in cases:
        rc, err = _cli(argv, capsys)
        assert rc == 2 and msg in err and len(err.splitlines()) == 1, (argv, err)
    (tmp_path / "file.txt").unlink()
    yaml = tmp_path / "slowfast.yaml"
    yaml.write_text("MODEL:\n  ARCH: slowfast\n  MODEL_NAME: SlowFast\n  NUM_CLASSES: 400\n")
    rc, err = _cli(["export", str(yaml), "--out", out], capsys)
    assert rc == 2 and "not supported" in err and len(err.splitlines()) == 1
    assert list(tmp_path.iterdir()) == [yaml]


def test_cli_preset_exports_its_shipped_weights_and_never_silently_random(tmp_path, capsys) -> None:
    """A preset exports its shipped default weights; without shipped weights it takes --random-weights."""
    from edgemem.models import create_model

    out = tmp_path / "tiny.onnx"
    rc, err = _cli(["export", "memvit_tiny", "--out", str(out), "--no-verify"], capsys)
    assert rc == 0 and "the shipped weights memvit_tiny_cuematch" in err
    card = read_contract(out).card
    shipped = create_model("memvit_tiny_cuematch")
    assert card.num_classes == shipped.num_classes == 2 and card.class_names == tuple(shipped.class_names)
    frames = torch.rand(1, *shipped.input_shape)
    ref, _ = shipped.eval().step(frames, shipped.init_state(1), reset=torch.ones(1, dtype=torch.bool))
    feeds = {"frames": frames.numpy(), "reset": np.ones(1, dtype=bool)}
    feeds |= {f"state_in.{k}": v.numpy() for k, v in shipped.init_state(1).items()}
    got = _session(out).run(["logits"], feeds)[0]
    np.testing.assert_allclose(got, ref.detach().numpy(), atol=1e-4)

    # A checkpoint edgemem wrote, given as MODEL: its card builds the model (the same graph as by name).
    from edgemem.models.pretrained import zoo_cards

    by_file = tmp_path / "by_file.onnx"
    rc, err = _cli(
        ["export", zoo_cards()["memvit_tiny_cuematch"]["path"], "--out", str(by_file), "--no-verify"], capsys
    )
    by_file_card = read_contract(by_file).card
    assert rc == 0 and (by_file_card.name, by_file_card.class_names) == (card.name, card.class_names)
    feeds_got = _session(by_file).run(["logits"], feeds)[0]
    np.testing.assert_allclose(feeds_got, got, atol=1e-6)
    # Shipped weights by name as --checkpoint (as `verify --checkpoint` takes them): the same graph.
    by_name = tmp_path / "by_name.onnx"
    rc, err = _cli(["export", "memvit_tiny", "--checkpoint", "memvit_tiny_cuematch", "--out", str(by_name),
                    "--no-verify"], capsys)  # fmt: skip
    assert rc == 0
    np.testing.assert_allclose(_session(by_name).run(["logits"], feeds)[0], got, atol=1e-6)

    nothing = tmp_path / "none"
    nothing.mkdir()
    cases = [
        (["export", str(OFFICIAL_TINY / "tiny_memvit.pyth"), "--out", str(nothing / "x.onnx")], "no edgemem model card"),
        (["export", str(by_file.with_suffix(".pyth")), "--out", str(nothing / "x.onnx")], "not found"),
        (["export", "cm_mvit_tiny", "--out", str(nothing / "x.onnx")], "no shipped weights"),
        (["export", str(OFFICIAL_TINY / "tiny_config_sampler_all.yaml"), "--out", str(nothing / "x.onnx")],
         "--random-weights"),
        (["export", "memvit_tiny_cuematch", "--random-weights", "--out", str(nothing / "x.onnx")], "names shipped"),
        (["export", "mvit_tiny", "--checkpoint", "memvit_tiny_cuematch", "--out", str(nothing / "x.onnx")],
         "shipped weights of memvit_tiny, not of mvit_tiny"),
        (["export", "cm_mvit_tiny", "--random-weights", "--checkpoint", "x.pyth", "--out", str(nothing / "x.onnx")],
         "exclude each other"),
    ]  # fmt: skip
    for argv, msg in cases:
        rc, err = _cli(argv, capsys)
        assert rc == 2 and msg in err and len(err.splitlines()) == 1, (argv, err)
    assert list(nothing.iterdir()) == []
    rc, err = _cli(["export", "cm_mvit_tiny", "--random-weights", "--no-verify", "--out", str(nothing / "x.onnx")],
                   capsys)  # fmt: skip
    assert rc == 0 and "RANDOM weights" in err and (nothing / "x.onnx").is_file()


def test_cli_checkpoint_not_matching_config(tmp_path, capsys) -> None:
    from edgemem.models.checkpoint import save_pyth

    ckpt = tmp_path / "other.pyth"
    save_pyth(ckpt, make_toy().state_dict())
    rc, err = _cli(["export", str(OFFICIAL_TINY / "tiny_config_sampler_all.yaml"), "--checkpoint", str(ckpt),
                    "--out", str(tmp_path / "x.onnx")], capsys)  # fmt: skip
    assert rc == 2 and "missing" in err and len(err.splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.pyth"]

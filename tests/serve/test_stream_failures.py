"""``edgemem stream`` never gives a silent wrong answer: NaN in a state file or a step's outputs, no
clip classified and a failed run are errors (exit 2, one line, no output file left); a source
truncated mid-stream is counted and makes the exit status ``EXIT_INCOMPLETE``; a video shorter than
one clip is one padded clip."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from runtime_models import TinyMem, export, make_model
from video_maker import make_video, truncate

from edgemem.cli import main
from edgemem.errors import NonFiniteError
from edgemem.serve.stream import EXIT_INCOMPLETE, ClipRecord, JsonlWriter

torch.set_num_threads(1)


class NaNFromClip(TinyMem):
    """TinyMem whose logits and memory turn NaN from its third clip on (the clip counter reaches 2)."""

    def step(self, frames, state, reset=None):  # type: ignore[no-untyped-def]
        logits, new = super().step(frames, state, reset)
        poison = torch.where(new["count"] > 2, torch.tensor(float("nan")), torch.tensor(0.0))
        return logits + poison, {"mem": new["mem"] + poison[:, :, None], "count": new["count"]}


@pytest.fixture(scope="module")
def graph(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export(make_model(seed=0), tmp_path_factory.mktemp("graph") / "tiny.onnx")


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_video(tmp_path_factory.mktemp("v") / "walk.mp4", "mpeg4", frames=60, fps=30)  # 8 clips


def stream(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    rc = main(["stream", *args, "--quiet"])
    return rc, capsys.readouterr().err


def assert_one_line_error(rc: int, err: str, *needles: str) -> None:
    assert rc == 2, err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith("edgemem stream: error:")]
    assert len(lines) == 1, err
    for n in needles:
        assert n in lines[0], lines[0]


def assert_nothing_written(folder: Path) -> None:
    assert sorted(p.name for p in folder.iterdir()) == [], "an output or temp file was left"


def saved_state(graph: Path, video: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, np.ndarray]:
    """The arrays of a state file the stream really wrote (to alter and write back)."""
    good = tmp_path / "good.npz"
    assert stream([str(video), "--model", str(graph), "--save-state", str(good)], capsys)[0] == 0
    with np.load(good) as z:
        return {k: z[k] for k in z.files}


def write_state(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    return path


def test_nan_state_file_is_refused(
    graph: Path, video: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    arrays = saved_state(graph, video, tmp_path, capsys)
    arrays["mem"] = arrays["mem"].copy()
    arrays["mem"][0, 1, 3] = np.nan
    bad = write_state(tmp_path / "bad.npz", arrays)
    out = tmp_path / "out"
    out.mkdir()
    args = [str(video), "--model", str(graph), "--resume", str(bad), "--jsonl", str(out / "c.jsonl")]
    assert_one_line_error(*stream([*args, "--out", str(out / "a.mp4")], capsys), "bad.npz", "NaN", "'mem'")
    assert_nothing_written(out)


def test_nan_state_is_never_saved(tmp_path: Path) -> None:
    from edgemem.runtimes.state_io import save_state

    model = make_model()
    state = {k: v.numpy() for k, v in model.init_state(1).items()}
    state["count"][0, 0] = np.inf
    with pytest.raises(NonFiniteError, match="'count'"):
        save_state(tmp_path / "s.safetensors", state, model.state_specs(1))
    assert not list(tmp_path.iterdir())


def test_nan_safetensors_state_file_is_refused(tmp_path: Path) -> None:
    from safetensors.numpy import save_file

    from edgemem import contract as C
    from edgemem.runtimes.state_io import load_state

    model = make_model()
    state = {k: v.numpy() for k, v in model.init_state(1).items()}
    state["mem"][0, 0, 0] = np.nan
    path = tmp_path / "s.safetensors"
    save_file(state, str(path), metadata={C.META_STATE: C.specs_to_json(model.state_specs(1)), C.META_MODEL: ""})
    with pytest.raises(NonFiniteError, match="s.safetensors.*'mem'"):
        load_state(path)


def test_nan_step_output_names_the_clip(video: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    torch.manual_seed(0)
    graph = export(NaNFromClip().eval(), tmp_path / "nan.onnx")
    out = tmp_path / "out"
    out.mkdir()
    args = [str(video), "--model", str(graph), "--jsonl", str(out / "c.jsonl"), "--out", str(out / "a.mp4")]
    rc, err = stream(args, capsys)  # clips 0 and 1 were written before clip 2 failed: all removed
    assert_one_line_error(rc, err, f"clip 2 of {video}", "logits", "mem", "runtime ort-cpu")
    assert_nothing_written(out)


def test_jsonl_refuses_nan(tmp_path: Path) -> None:
    w = JsonlWriter(tmp_path / "c.jsonl")
    rec = ClipRecord(0, "v.mp4", 0.0, 0.5, [{"label": "a", "index": 0, "score": float("nan")}], 1.0)
    with pytest.raises(NonFiniteError, match="clip 0 of v.mp4"):
        w(rec)
    w.close(keep=False)
    assert_nothing_written(tmp_path)


def test_video_shorter_than_one_clip_is_one_padded_clip(
    graph: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    short = make_video(tmp_path / "short.mp4", "mpeg4", frames=5, fps=30)  # a clip spans 8 frames at 30 fps
    out = tmp_path / "out"
    out.mkdir()
    args = [str(short), "--model", str(graph), "--jsonl", str(out / "c.jsonl"), "--out", str(out / "a.mkv")]
    rc, err = stream(args, capsys)
    assert rc == 0, err
    (rec,) = [json.loads(line) for line in (out / "c.jsonl").read_text().splitlines()]
    assert rec["t_start"] == 0 and rec["t_end"] == pytest.approx(3 / 15)  # its 3 samples at 15 fps, of 4
    assert (out / "a.mkv").stat().st_size > 0


def test_no_clip_classified_fails(graph: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00garbage" * 64)
    out = tmp_path / "out"
    out.mkdir()
    args = [str(junk), "--model", str(graph), "--jsonl", str(out / "c.jsonl"), "--out", str(out / "a.mkv")]
    rc, err = stream(args, capsys)
    assert_one_line_error(rc, err, "no clip was classified", str(junk))
    assert_nothing_written(out)


def test_truncated_mid_stream_is_counted_and_incomplete(
    graph: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A Matroska file cut short opens and decodes part of its frames: the clips before the cut are
    kept, the cut is reported with the clip index where it stopped, the exit status is 3."""
    full = make_video(tmp_path / "full.mkv", "libx264", frames=60, fps=30)
    cut = truncate(full, 0.6)
    jsonl = tmp_path / "c.jsonl"
    rc, err = stream([str(cut), str(full), "--model", str(graph), "--jsonl", str(jsonl)], capsys)
    assert rc == EXIT_INCOMPLETE == 3, err
    recs = [json.loads(line) for line in jsonl.read_text().splitlines()]
    from_cut = [r for r in recs if r["source"] == str(cut)]
    assert 0 < len(from_cut) < 7 and len(recs) - len(from_cut) == 8
    assert "truncated or corrupt" in err and f"stopped at clip {len(from_cut)}" in err
    assert "1 of 2 sources incomplete" in err and "Traceback" not in err


def test_cli_process_exit_status_and_no_traceback(graph: Path, tmp_path: Path) -> None:
    junk = tmp_path / "junk.mkv"
    junk.write_bytes(b"\x1a\x45\xdf\xa3" + b"\x00" * 200)  # a Matroska signature and nothing behind it
    p = subprocess.run(
        [sys.executable, "-m", "edgemem.cli", "stream", str(junk), "--model", str(graph), "--quiet",
         "--jsonl", str(tmp_path / "c.jsonl")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and "no clip was classified" in p.stderr
    assert not (tmp_path / "c.jsonl").exists()


def test_state_of_another_model_is_refused(
    graph: Path, video: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A state saved by a model with another head (same state spec) is refused, not resumed into."""
    arrays = saved_state(graph, video, tmp_path, capsys)
    card = json.loads(str(arrays["__edgemem_model_card__"]))
    n = card["num_classes"] + 3
    other_card = {**card, "num_classes": n, "class_names": [f"c{i}" for i in range(n)] if card["class_names"] else None}
    arrays["__edgemem_model_card__"] = np.array(json.dumps(other_card))
    other = write_state(tmp_path / "other.npz", arrays)
    out = tmp_path / "out"
    out.mkdir()
    args = [str(video), "--model", str(graph), "--resume", str(other), "--jsonl", str(out / "c.jsonl")]
    assert_one_line_error(*stream(args, capsys), "other.npz", "num_classes")
    assert_nothing_written(out)
    assert (
        stream([str(video), "--model", str(graph), "--resume", str(tmp_path / "good.npz")], capsys)[0] == 0
    )  # its own: resumed


def test_a_precision_the_graph_would_not_honour_is_refused(
    video: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An fp16 graph computes in fp16 whatever ``--precision`` says: asking f32 of it is an error."""
    from edgemem.export.onnx import to_onnx

    fp16 = tmp_path / "tiny_fp16.onnx"
    to_onnx(make_model(seed=0), fp16, precision="fp16", verify=False)
    out = tmp_path / "out"
    out.mkdir()
    args = [str(video), "--model", str(fp16), "--precision", "f32", "--jsonl", str(out / "c.jsonl")]
    assert_one_line_error(*stream(args, capsys), "fp16 graph", "--precision f32")
    assert_nothing_written(out)
    assert stream([str(video), "--model", str(fp16), "--precision", "fp16"], capsys)[0] == 0  # what the graph computes
    assert stream([str(video), "--model", str(fp16)], capsys)[0] == 0

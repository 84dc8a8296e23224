"""``edgemem eval`` scoring schemes against a manual computation, the zoo loader, schedules."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from edgemem.data.datasets import ClipDataset, StreamingDataset, VideoDir
from edgemem.data.synth import generate
from edgemem.errors import CheckpointError, EdgememError, InputError
from edgemem.models import pretrained
from edgemem.models.registry import create_model
from edgemem.train import checkpoints as ckpts
from edgemem.train.evaluate import eval_clip_model, eval_streaming, evaluate_model
from edgemem.train.optim import CosineSchedule, build_optimizer, param_groups, set_lr


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("eval") / "cue"
    generate("cue-sum", root, videos=1, val=3, size=32, seed=1)
    return root


def _model(name: str, **kw) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model(name, num_classes=4, **kw).eval()


def test_streaming_eval_classifies_by_the_last_clip(data: Path) -> None:
    torch.set_num_threads(1)
    model = _model("memvit_tiny")
    records = VideoDir(data).split("val")
    geo = model.model_card().clip
    m = eval_streaming(model, records, geo, batch_size=2)
    ds = StreamingDataset(records, geo, train=False)
    hits, pos_hits = 0, [0] * 4
    with torch.no_grad():
        for v, rec in enumerate(records):
            state = model.init_state(1)
            for c in range(ds.clips_per_video[v]):
                item = ds[ds_index(v, c, ds.clips_per_video[v])]
                logits, state = model.step(item["frames"][None], state, torch.tensor([c == 0]))
                pos_hits[c] += int(logits.argmax()) == rec.label
            hits += int(logits.argmax()) == rec.label
    assert m["videos"] == 3 and math.isclose(m["top1"], hits / 3)
    assert m["clip_top1_by_position"] == [round(h / 3, 4) for h in pos_hits]
    assert m["top5"] == 1.0  # 4 classes: top-5 is every class


def ds_index(video: int, clip: int, n: int):
    from edgemem.data.samplers import StreamIndex

    return StreamIndex(video, clip, clip == 0, clip == n - 1)


def test_clip_eval_averages_view_softmax(data: Path) -> None:
    torch.set_num_threads(1)
    model = _model("mvit_tiny", frame_scale=2)
    records = VideoDir(data).split("val")
    geo = model.model_card().clip
    m = eval_clip_model(model, records, geo, views=3, batch_size=4)
    ds = ClipDataset(records, geo, train=False, temporal_views=3)
    with torch.no_grad():
        probs = torch.stack([model(ds[i]["frames"][None])[0].softmax(-1) for i in range(len(ds))])
    pred = probs.reshape(3, 3, -1).mean(1).argmax(-1)
    want = sum(int(p) == r.label for p, r in zip(pred, records, strict=True)) / 3
    assert math.isclose(m["top1"], want) and len(m["clip_top1_by_position"]) == 3


def test_cm_eval_runs_two_scans(data: Path) -> None:
    torch.set_num_threads(1)
    model = _model("cm_slow_tiny", clips=3)
    m = evaluate_model(model, "cm", VideoDir(data).split("val"), batch_size=2)
    assert m["videos"] == 3 and len(m["clip_top1_by_position"]) == 3 and "two-scan" in m["scheme"]


def test_options_that_do_not_apply_are_refused(data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--views`` on a streaming MeMViT and ``--view`` without ``--config`` would be ignored: refused."""
    from edgemem.cli import main

    with pytest.raises(InputError, match="--views applies to clip models and CM"):
        evaluate_model(_model("memvit_tiny"), "memvit", VideoDir(data).split("val"), views=3)
    zoo = Path(pretrained.__file__).resolve().parents[1] / "zoo" / "memvit_tiny_cuematch.pyth"
    assert main(["eval", str(zoo), "--data", str(data), "--view", "train"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--view applies with --config" in err


def test_zoo_entry_loads_and_checks_sha(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    model = create_model("mvit_tiny", num_classes=4)
    card = model.model_card().with_(class_names=["a", "b", "c", "d"])
    ckpts.save_epoch(tmp_path, ckpts.make_payload(model, None, 1, card, {}), best=True)
    (tmp_path / "toy.pyth").write_bytes((tmp_path / "checkpoints" / "last.pyth").read_bytes())
    sha = pretrained.sha256_of(tmp_path / "toy.pyth")
    (tmp_path / "toy.yaml").write_text(f"preset: mvit_tiny\nfile: toy.pyth\nsha256: {sha}\ndefault: true\n")
    (tmp_path / "k400.yaml").write_text("preset: slow_r50_8x8\nurl: https://example.invalid/x.pyth\n")
    monkeypatch.setattr(pretrained, "zoo_dir", lambda: tmp_path)
    assert list(pretrained.zoo_cards()) == ["toy"]  # entries without a shipped file are not loadable
    for loaded in (create_model("toy"), create_model("mvit_tiny", pretrained=True)):
        for k, v in model.state_dict().items():
            torch.testing.assert_close(loaded.state_dict()[k], v)
    with pytest.raises(EdgememError, match="no shipped weights"):
        create_model("slow_tiny", pretrained=True)
    (tmp_path / "toy.pyth").write_bytes(b"tampered")
    with pytest.raises(CheckpointError, match="sha256"):
        create_model("toy")


def test_cosine_schedule_and_no_decay_groups() -> None:
    s = CosineSchedule(base_lr=1.0, total_epochs=10, warmup_epochs=2, warmup_start=0.1, final_ratio=0.0)
    assert math.isclose(s.lr_at(0), 0.1)
    assert s.lr_at(1) < s.lr_at(2)
    assert math.isclose(s.lr_at(5), 0.5) and math.isclose(s.lr_at(10), 0.0, abs_tol=1e-12)
    held = CosineSchedule(base_lr=1.0, total_epochs=10, warmup_epochs=2, final_ratio=0.0, hold_epochs=4)
    assert held.lr_at(2) == held.lr_at(3.5) == held.lr_at(4) == 1.0  # the peak until the hold ends
    assert math.isclose(held.lr_at(7), 0.5) and math.isclose(held.lr_at(10), 0.0, abs_tol=1e-12)
    assert held.lr_at(1) < 1.0  # the warm-up is unchanged
    memvit = create_model("memvit_tiny")
    memory = memvit.memory_parameters()  # compression convolutions and norms, memory position tables
    assert len(memory) == 36 and {id(p) for p in memory} == {
        id(p) for n, p in memvit.named_parameters() if "compress" in n or "rel_pos_mem" in n
    }
    opt = build_optimizer(memvit, "adamw", 1e-3, 0.05, memory=memory, memory_lr_scale=10)
    set_lr(opt, 2e-3)
    lr_of = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    assert all(lr_of[id(p)] == 2e-2 for p in memory) and sorted(set(lr_of.values())) == [2e-3, 2e-2]
    assert len(opt.param_groups) == 4 and len(build_optimizer(memvit, "adamw", 1e-3, 0.05).param_groups) == 2
    groups = param_groups(create_model("mvit_tiny"), 0.05)
    no_decay = {id(p) for p in groups[1]["params"]}
    named = dict(create_model("mvit_tiny").named_parameters())
    assert groups[1]["weight_decay"] == 0.0 and all(p.ndim > 1 for p in groups[0]["params"])
    assert len(no_decay) == sum(
        1 for n, p in named.items() if p.ndim <= 1 or "rel_pos" in n or "cls_token" in n or "pos_" in n
    )


def test_compute_cost_per_clip_and_video() -> None:
    from edgemem.train.results import compute_cost

    base = compute_cost(create_model("mvit_tiny", num_classes=2).model_card(), clips_per_video=4)
    scaled = compute_cost(create_model("mvit_tiny", num_classes=2, frame_scale=4).model_card(), 4)
    mem = compute_cost(create_model("memvit_tiny", num_classes=2).model_card(), 4)
    assert base["clips_per_video"] == 4 and scaled["clips_per_video"] == 1
    assert math.isclose(base["gflops_per_video"], 4 * base["gflops_per_clip"])
    assert scaled["gflops_per_clip"] > 4 * base["gflops_per_clip"]  # attention grows faster than frames
    # memory at full resolution over the 4 clips before: 2.4x one clip, a third of the frame-scaled clip
    assert 2 * base["gflops_per_clip"] < mem["gflops_per_clip"] < 0.35 * scaled["gflops_per_clip"]


def test_ship_writes_only_into_the_zoo_it_is_given(tmp_path: Path, data: Path, capsys) -> None:
    from edgemem.train.results import main as results

    shipped = sorted(p.name for p in pretrained.zoo_dir().iterdir())
    model = _model("mvit_tiny")
    run = tmp_path / "run"
    options = {"data": str(data), "out": str(run), "init": None, "threads": 1}
    ckpts.save_epoch(run, ckpts.make_payload(model, None, 1, model.model_card(), {"options": options}), best=True)
    (run / "metrics.jsonl").write_text('{"kind": "epoch", "epoch": 1, "epoch_time_s": 2.5}\n')
    args = ["ship", str(run), "toy", "--data", str(data), "--command", "edgemem train mvit_tiny"]
    with pytest.raises(SystemExit):  # no --zoo: nothing is written anywhere
        results(args)
    assert results([*args, "--zoo", str(tmp_path / "zoo")]) == 0
    assert sorted(p.name for p in (tmp_path / "zoo").iterdir()) == ["toy.pyth", "toy.yaml"]
    card = pretrained.zoo_cards(tmp_path / "zoo")["toy"]
    assert card["training"]["train_time_s"] == 2.5 and card["sha256"] == pretrained.sha256_of(card["path"])
    for k, v in pretrained.load_zoo(card).state_dict().items():
        torch.testing.assert_close(v, model.state_dict()[k])
    assert sorted(p.name for p in pretrained.zoo_dir().iterdir()) == shipped
    # shipped bytes carry no machine's folders, and shipping the same run twice gives the same file
    raw = (tmp_path / "zoo" / "toy.pyth").read_bytes()
    assert str(tmp_path).encode() not in raw and str(data).encode() not in raw
    shipped_options = ckpts.train_state_of(torch.load(card["path"], weights_only=False))["options"]
    assert shipped_options == {"data": data.name, "out": "run", "init": None, "threads": 1}
    assert results([*args, "--zoo", str(tmp_path / "zoo2")]) == 0
    assert (tmp_path / "zoo2" / "toy.pyth").read_bytes() == raw
    capsys.readouterr()
    assert results(["table", "toy", "--zoo", str(tmp_path / "zoo")]) == 0
    assert "| `toy` | mvit_tiny |" in capsys.readouterr().out
    assert results(["table", "nope"]) == 2 and "no zoo card" in capsys.readouterr().err


def test_every_shipped_card_loads_its_weights() -> None:
    cards = pretrained.zoo_cards()
    assert any(c["preset"] == "memvit_tiny" and c.get("default") for c in cards.values())
    for name, card in cards.items():
        assert pretrained.zoo_dir() / card["file"] == Path(card["path"]), name
        assert not create_model(name).training, name  # loaded with its sha256 checked, in eval mode


def test_per_class_top1_confusions_and_predictions(data: Path) -> None:
    """Per-class top-1 and the confusions are the video-level top-1 tallied by label; the predictions
    list one row per video in dataset order."""
    torch.set_num_threads(1)
    model = _model("mvit_tiny")
    records = VideoDir(data).split("val")
    m = eval_clip_model(model, records, model.model_card().clip, views=2, batch_size=4, predictions=True)
    rows = m["predictions"]
    assert [r["path"] for r in rows] == [r.path for r in records]
    assert m["top1"] == sum(r["label"] == r["predicted"] for r in rows) / len(rows)
    for c in range(4):
        mine = [r for r in rows if r["label"] == c]
        assert m["per_class_videos"][c] == len(mine)
        want = sum(r["predicted"] == c for r in mine) / len(mine) if mine else None
        assert m["per_class_top1"][c] == (None if want is None else round(want, 4))
    pairs = [(r["label"], r["predicted"]) for r in rows if r["label"] != r["predicted"]]
    assert sorted((t, q) for t, q, _ in m["confusions"]) == sorted(set(pairs))
    assert all(n == pairs.count((t, q)) for t, q, n in m["confusions"])


def test_eval_cli_writes_predictions_csv(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--predictions CSV``: one row per video with names from classes.txt; a path that cannot be
    written fails in one line before scoring, and leaves nothing."""
    import csv
    import json

    from edgemem.cli import main

    torch.manual_seed(0)
    model = create_model("memvit_tiny", num_classes=4)
    ckpts.save_epoch(tmp_path / "run", ckpts.make_payload(model, None, 1, model.model_card(), {}), best=True)
    out = tmp_path / "preds" / "val.csv"
    assert main(["eval", str(tmp_path / "run"), "--data", str(data), "--predictions", str(out), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert "predictions" not in metrics and metrics["predictions_file"] == str(out)
    rows = list(csv.DictReader(out.open()))
    names = VideoDir(data).class_names
    assert len(rows) == metrics["videos"] == 3 and names
    assert [r["path"] for r in rows] == [r.path for r in VideoDir(data).split("val")]
    assert all(r["label_name"] == names[int(r["label"])] for r in rows)
    cues = dict(line.split(",") for line in (data / "cues.csv").read_text().splitlines()[1:])
    assert [r["cues"] for r in rows] == [cues[str(Path(r["path"]).relative_to(data))] for r in rows]
    assert sum(int(r["correct"]) for r in rows) / 3 == metrics["top1"]
    assert main(["eval", str(tmp_path / "run"), "--data", str(data)]) == 0
    report = capsys.readouterr().out
    assert "per-class top-1 (videos): " in report and "most confused (label -> top-1: videos): " in report
    blocked = tmp_path / "file"
    blocked.write_text("")
    assert main(["eval", str(tmp_path / "run"), "--data", str(data), "--predictions", str(blocked / "p.csv")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cannot write" in err
    assert sorted(p.name for p in (tmp_path / "preds").iterdir()) == ["val.csv"]  # no temp file left


def test_report_lists_the_lowest_classes_when_there_are_many() -> None:
    from edgemem.train.evaluate import format_report

    per_class = [None, *[i / 20 for i in range(19)]]
    m = {
        "split": "val", "videos": 57, "skipped": 0, "scheme": "s", "top1": 0.5, "top5": 0.9,
        "clip_top1_by_position": [0.5], "per_class_top1": per_class, "per_class_videos": [0] + [3] * 19,
        "confusions": [[3, 4, 2]], "class_names": [f"c{i}" for i in range(20)],
    }  # fmt: skip
    report = format_report(m)
    assert "lowest per-class top-1 (videos), 5 of the 19 classes with videos: c1 0.000 (3)  c2 0.050 (3)" in report
    assert "c6 " not in report and "c3 -> c4: 2" in report

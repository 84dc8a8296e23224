"""The harness on a tiny model: planning, one fresh process per cell, failed cells recorded while the
rest go on, interleaved repeats, and the ``edgemem bench`` command. Timings are not asserted."""

from __future__ import annotations

import json
import sys

import pytest

from edgemem.bench.harness import BenchConfig, interleaved_order, plan_cells, run_bench, run_cell_process, run_watched
from edgemem.bench.schema import Cell, machine_info, read_results
from edgemem.cli import main
from edgemem.contract import read_contract
from edgemem.errors import EdgememError

TINY = "memvit_tiny"


def test_plan_skips_frame_scaled_memory_models():
    config = BenchConfig(["mem", "base"], ["ort-cpu", "openvino"], ["f32", "bf16"], [1, 2])
    planned = plan_cells(config, lambda m: m == "mem")
    assert len(planned) == 16
    skipped = [p.cell for p in planned if p.skip]
    assert {(c.model, c.frame_scale) for c in skipped} == {("mem", 2)} and len(skipped) == 4
    assert all("memory model" in p.skip for p in planned if p.skip)


def test_interleaved_rounds_rotate_over_all_cells():
    rounds = [interleaved_order(4, r) for r in range(3)]
    assert rounds == [[0, 1, 2, 3], [1, 2, 3, 0], [2, 3, 0, 1]]
    assert all(sorted(r) == [0, 1, 2, 3] for r in rounds)


def test_bad_requests_are_user_errors():
    with pytest.raises(EdgememError, match="precision"):
        BenchConfig(["m"], ["ort-cpu"], ["fp64"])
    with pytest.raises(EdgememError, match="frame scales"):
        BenchConfig(["m"], ["ort-cpu"], frame_scales=[0])
    with pytest.raises(EdgememError, match="unknown runtime"):
        BenchConfig(["m"], ["ortcpu"])
    with pytest.raises(EdgememError, match="repeats"):
        BenchConfig(["m"], ["ort-cpu"], repeats=0)
    # Accuracy of a preset's random initialisation would be a number that means nothing.
    with pytest.raises(EdgememError, match="would run untrained"):
        BenchConfig(["memvit_tiny_cuematch", "memvit_tiny"], ["ort-cpu"], data="d")
    BenchConfig(["memvit_tiny_cuematch", "memvit_tiny"], ["ort-cpu"], data="d", checkpoints={"memvit_tiny": "w.pyth"})
    BenchConfig(["memvit_tiny"], ["ort-cpu"])  # timing only: random weights are fine
    for limit, data in ((0, "d"), (-1, "d"), (4, None)):  # an empty or all-but-last slice; ignored without --data
        with pytest.raises(EdgememError, match="--data-limit must be >= 1 and needs --data"):
            BenchConfig(["memvit_tiny_cuematch"], ["ort-cpu"], data=data, data_limit=limit)
    for timeout in (float("nan"), 0.0):
        with pytest.raises(EdgememError, match="--timeout must be a finite number > 0"):
            BenchConfig(["memvit_tiny"], ["ort-cpu"], timeout_s=timeout)


def test_watchdog_kills_on_memory_and_reports_exit_codes():
    hog = run_watched([sys.executable, "-c", "b = bytearray(400 << 20); import time; time.sleep(30)"], 60, 100)
    assert hog.killed and "memory limit" in hog.killed and hog.seconds < 30
    slow = run_watched([sys.executable, "-c", "import time; time.sleep(30)"], 0.5, None)
    assert slow.killed and "timed out" in slow.killed
    err = run_watched([sys.executable, "-c", "raise SystemExit('bad things')"], 60, None)
    assert err.returncode == 1 and "bad things" in err.stderr_tail and err.killed is None


def test_a_killed_cell_process_is_a_failed_result(tmp_path):
    config = BenchConfig([TINY], ["ort-cpu"], out=tmp_path, max_memory_mb=1.0)
    info = {"frames": 8, "frame_scale": 1}
    r = run_cell_process(config, Cell(TINY, "ort-cpu"), tmp_path / "none.onnx", info, machine_info())
    assert r["status"] == "failed" and "memory limit" in r["error"]


@pytest.fixture(scope="module")
def bench_dir(tmp_path_factory):
    """One small run: the tiny memory model on ORT (two interleaved repeats), an unknown model that
    fails, and a frame-scaled memory model that is skipped."""
    out = tmp_path_factory.mktemp("bench")
    config = BenchConfig([TINY, "no_such_model"], ["ort-cpu"], ["f32", "bf16"], [1, 2], clips=3, warmup=1,
                         repeats=2, out=out)  # fmt: skip
    results = run_bench(config)
    return out, results


def test_cells_ok_failed_and_skipped_each_get_a_file(bench_dir):
    out, results = bench_dir
    by = {(r["model"], r["frame_scale"], r["precision"]): r for r in results}
    assert len(results) == 8 and len(list(out.glob("*.json"))) == 8 + 1  # + bench_config.json
    ok = by[(TINY, 1, "f32")]
    assert ok["status"] == "ok", ok["error"]
    assert by[(TINY, 1, "bf16")]["status"] == "skipped" and "bf16" in by[(TINY, 1, "bf16")]["error"]
    assert by[(TINY, 2, "f32")]["status"] == "skipped" and "memory model" in by[(TINY, 2, "f32")]["error"]
    bad = by[("no_such_model", 1, "f32")]
    assert bad["status"] == "failed" and "unknown model" in bad["error"]
    assert {r["status"] for r in read_results([out])} == {"ok", "failed", "skipped"}


def test_an_ok_cell_has_every_metric(bench_dir):
    out, results = bench_dir
    (r,) = [r for r in results if r["status"] == "ok"]
    lat = r["latency_ms"]
    assert lat["steps"] == 2 * (3 + 3)  # two repeats of 3 steady steps + 3 after the reset steps
    assert all(lat[k] > 0 for k in ("first", "reset", "p50", "p90", "p99", "mean", "min"))
    assert lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"]
    assert r["repeats"]["runs"] == 2 and len(r["repeats"]["p50_ms"]) == 2
    assert r["peak_rss_mb"] > r["base_rss_mb"] > 0
    assert r["peak_rss_mb"] < 2000  # the cell's own process, not the parent's
    assert r["gflops_step"] > 0 and r["state_bytes"] > 0 and r["handoff_ms"] >= 0
    assert r["temporal_support"]["seconds"] > r["clip_seconds"] > 0
    assert r["temporal_support"]["frames"] == r["temporal_support"]["clips"] * r["input"]["frames"]
    assert r["real_time_factor"] == pytest.approx(r["clip_seconds"] * 1e3 / lat["p50"], rel=1e-2)
    assert r["machine"]["cpu"] and r["device"].startswith("cpu-")
    assert (out / "graphs").is_dir() and len(list((out / "graphs").glob("*.onnx"))) == 1  # exported once
    (graph,) = (out / "graphs").glob("*.onnx")
    cost = read_contract(graph).card.cost  # the facts come from the graph's card, measured at export
    assert cost is not None and r["backbone"] == "mvit_tiny"
    assert (r["gflops_step"], r["params"], r["state_bytes"]) == (cost.gflops_step, cost.params, cost.state_bytes)


def test_bench_command_exit_code_and_report(tmp_path, bench_dir, capsys):
    assert main(["bench", "--models", TINY, "--runtimes", "ort-cpu", "--precision", "fp64"]) == 2
    assert "precision" in capsys.readouterr().err
    out, _ = bench_dir
    assert main(["report", str(out), "--md", str(tmp_path / "r.md"), "--plots", str(tmp_path / "p")]) == 0
    md = (tmp_path / "r.md").read_text()
    assert f"| {TINY} | 1 | ort-cpu | f32 |" in md and "unknown model" in md
    assert list((tmp_path / "p").glob("support-*.png"))
    cfg = json.loads((out / "bench_config.json").read_text())
    assert cfg["bench_config"]["repeats"] == 2


def test_accuracy_through_sessions_agrees_across_runtimes(tmp_path):
    """Top-1 on real encoded videos, streamed through a torch and an ORT session of the same weights."""
    import torch

    from edgemem.bench.accuracy import session_accuracy
    from edgemem.export.onnx import to_onnx
    from edgemem.models import create_model
    from edgemem.runtimes import open_session

    assert main(["data", "synth", "--task", "cue-match", "--out", str(tmp_path / "d"), "--videos", "2",
                 "--val", "3"]) == 0  # fmt: skip
    torch.manual_seed(0)
    model = create_model(TINY, num_classes=2).eval()
    to_onnx(model, tmp_path / "m.onnx", verify=False)
    accs = []
    for target, runtime in ((model, "torch"), (tmp_path / "m.onnx", "ort-cpu")):
        with open_session(target, runtime) as s:
            accs.append(session_accuracy(s, str(tmp_path / "d")))
    assert accs[0]["videos"] == 3 and accs[0]["skipped"] == 0
    assert 0.0 <= accs[0]["top1"] <= 1.0
    assert accs[0]["top1"] == accs[1]["top1"]


def test_paired_timing_of_two_graphs(bench_dir, capsys):
    """``bench.pair`` alternates steps of two graphs in one process; the schema, not the speed."""
    from edgemem.bench.pair import main as pair_main

    out, _ = bench_dir
    graph = next((out / "graphs").glob("memvit_tiny-b1-*-fs1-*.onnx"))
    assert pair_main([str(graph), str(graph), "--runtime", "ort-cpu", "--steps", "3", "--warmup", "1"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["steps"] == 3 and len(r["wall_ms_p50"]) == len(r["cpu_ms_p50"]) == 2
    assert r["wall_ratio_p50"] > 0 and r["cpu_ratio_p50"] >= 0
    assert pair_main([str(graph), str(graph), "--runtime", "ort-cpu", "--precision", "bf16"]) == 2
    assert "bf16" in capsys.readouterr().err
    assert pair_main([str(graph), str(graph), "--steps", "0"]) == 2


@pytest.mark.parametrize("runtime", ["ort-cpu", "openvino"])
def test_per_op_profile(bench_dir, capsys, runtime):
    """``bench.profile`` sums node time by op type; shares add up to one."""
    from edgemem.bench.profile import main as profile_main

    out, _ = bench_dir
    graph = next((out / "graphs").glob("memvit_tiny-b1-*-fs1-*.onnx"))
    assert profile_main([str(graph), "--runtime", runtime, "--steps", "2", "--top", "100"]) == 0
    prof = json.loads(capsys.readouterr().out)
    assert prof["node_ms_per_step"] > 0 and prof["ops"]
    assert abs(sum(o["share"] for o in prof["ops"]) - 1.0) < 0.01
    assert prof["precision"] == "f32" if runtime == "openvino" else "precision" not in prof
    # a precision the graph cannot run is refused on either runtime, never ignored
    assert profile_main([str(graph), "--runtime", runtime, "--precision", "int8"]) == 2
    assert "needs a graph exported in int8, this one is f32" in capsys.readouterr().err
    if runtime == "openvino":
        with pytest.raises(SystemExit) as e:  # one spelling: argparse refuses anything else
            profile_main([str(graph), "--runtime", runtime, "--precision", "fp64"])
        assert e.value.code == 2 and "invalid choice" in capsys.readouterr().err

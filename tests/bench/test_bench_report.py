"""Merging results from several machines into tables, ratios and plots (``edgemem report``)."""

from __future__ import annotations

import csv

import pytest

from edgemem.bench.report import backbone_of, build_markdown, csv_text, dedupe, flat_row, pair_ratios, table_groups
from edgemem.bench.schema import Cell, empty_result, write_result
from edgemem.bench.stats import derive_rates, latency_summary
from edgemem.cli import main

CPU = {"cpu": "AMD EPYC", "cores": 2, "cores_usable": 2, "gpus": [], "hostname": "cpu-box", "date": "2026-01-01"}
GPU = {**CPU, "gpus": [{"name": "NVIDIA H100", "memory_mb": 8e4, "driver": "1"}], "hostname": "gpu-box"}


def result(model: str, fs: int, runtime: str, p50: float, rss: float, gflops: float, support: float, **kw) -> dict:
    machine = kw.pop("machine", CPU)
    r = empty_result(Cell(model, runtime, kw.pop("precision", "f32"), fs), machine, status="ok")
    r["latency_ms"] = {**latency_summary([p50]), "first": p50, "reset": None}
    r.update(clip_seconds=2.133 * fs, gflops_step=gflops, peak_rss_mb=rss, state_bytes=kw.pop("state", 0))
    r["temporal_support"] = {"clips": round(support / 2.133), "frames": None, "seconds": support}
    r.update(kw)
    derive_rates(r)
    return r


def sweep(machine: dict = CPU, runtime: str = "ort-cpu") -> list[dict]:
    """A memory model and its backbone frame-scaled 1..4; memory support = 4 clips."""
    rows = [result("memvit_x", 1, runtime, 105.0, 300.0, 10.5, 8.532, state=4096, machine=machine, backbone="mvit_x")]
    for k, (lat, rss) in {1: (100.0, 280.0), 2: (230.0, 500.0), 4: (600.0, 1500.0)}.items():
        rows.append(result("mvit_x", k, runtime, lat, rss, 10.0 * k * 1.2 ** (k - 1), 2.133 * k, machine=machine))
    return rows


def test_backbone_pairing_comes_from_the_card():
    """The backbone a result's graph card declares; ``--pair`` overrides it; no name guessing."""
    mem, plain = sweep()[0], sweep()[1]
    assert backbone_of(mem, {}) == "mvit_x"
    assert backbone_of(plain, {}) is None
    assert backbone_of({**mem, "model": "memvit16_16x4", "backbone": None}, {}) is None
    assert backbone_of(mem, {"memvit_x": "theirs"}) == "theirs"


def test_ratios_of_memory_against_frame_scaling():
    (row,) = pair_ratios(sweep())
    assert row["model"] == "memvit_x" and row["backbone"] == "mvit_x"
    assert row["gflops_x"] == 1.05 and row["latency_x"] == 1.05
    assert row["scaled"][4]["latency_x"] == pytest.approx(600 / 105, abs=1e-3)
    assert row["scaled"][4]["rss_x"] == 5.0
    assert row["match_fs"] == 4  # backbone at fs4 sees the memory model's 8.5 s


def test_merge_two_machines_and_newest_wins():
    old = result("mvit_x", 1, "ort-cpu", 999.0, 1.0, 1.0, 2.133, machine={**CPU, "date": "2025-01-01"})
    merged = dedupe([old, *sweep(), *sweep(GPU, "ort-cuda")])
    assert len(merged) == 8
    assert [r["latency_ms"]["p50"] for r in merged if r["model"] == "mvit_x" and r["frame_scale"] == 1][0] == 100.0
    groups = table_groups(merged)
    assert set(groups) == {"bench-ort-cpu-f32-cpu-amd-epyc-2c", "bench-ort-cuda-f32-nvidia-h100"}
    md = build_markdown(merged)
    assert "## cpu-amd-epyc-2c" in md and "## nvidia-h100" in md and "cpu-box" not in md.split("## Machines")[0]
    assert md.count("| memvit_x | mvit_x |") == 2  # the ratios table, one row per device
    rows = list(csv.DictReader(csv_text([flat_row(r) for r in merged]).splitlines()))
    assert len(rows) == 8 and {r["device"] for r in rows} == {"cpu-amd-epyc-2c", "nvidia-h100"}


def test_failed_and_skipped_rows_keep_their_reason():
    failed = empty_result(Cell("mvit_x", "ort-cpu", "f32", 16), CPU, "failed", "exceeded the memory limit")
    skipped = empty_result(Cell("memvit_x", "ort-cpu", "f32", 2), CPU, "skipped", "memory model")
    md = build_markdown(dedupe([*sweep(), failed, skipped]))
    assert "| failed |" in md and "exceeded the memory limit" in md and "| skipped |" in md


def test_report_command_writes_markdown_csv_tables_and_plots(tmp_path, capsys):
    for r in sweep():
        write_result(tmp_path / "cpu", r)
    for r in sweep(GPU, "ort-cuda"):
        write_result(tmp_path / "gpu", r)
    acc = result("mvit_x", 1, "openvino", 90.0, 250.0, 10.0, 2.133, accuracy={"top1": 0.5, "videos": 8})
    write_result(tmp_path / "cpu", acc)
    out = tmp_path / "report"
    rc = main(["report", str(tmp_path / "cpu"), str(tmp_path / "gpu"), "--md", str(out / "R.md"),
                "--csv", str(out / "all.csv"), "--tables", str(out / "t"), "--plots", str(out / "img")])  # fmt: skip
    assert rc == 0
    md = (out / "R.md").read_text()
    pngs = sorted(p.name for p in (out / "img").glob("*.png"))
    assert "fig3-memvit_x-cpu-amd-epyc-2c.png" in pngs and "fig3-memvit_x-nvidia-h100.png" in pngs
    assert "accuracy-cpu-amd-epyc-2c.png" in pngs and "support-nvidia-h100.png" in pngs
    assert all((out / "img" / p).read_bytes()[:4] == b"\x89PNG" for p in pngs)
    assert "](img/fig3-memvit_x-cpu-amd-epyc-2c.png)" in md  # links relative to the Markdown file
    assert (out / "t" / "bench-ort-cuda-f32-nvidia-h100.csv").is_file()
    assert len((out / "all.csv").read_text().splitlines()) == 1 + 9


def test_report_of_nothing_is_a_one_line_error(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "no results files" in capsys.readouterr().err


def test_machines_section_shows_each_cpus_isa():
    """Rows from an AVX2-only CPU and an AVX-512/BF16 one are told apart in the report, not only in the JSON."""
    isa = dict.fromkeys(("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx"), False)
    avx2 = {**CPU, "hostname": "avx2-box", "isa": {**isa, "avx2": True}}
    bf16 = {**CPU, "hostname": "bf16-box", "isa": {**isa, "avx2": True, "avx512f": True, "avx512_bf16": True}}
    md = build_markdown([*sweep(avx2), *sweep(bf16)]).split("## Machines")[1]
    lines = [line for line in md.split("##")[0].splitlines() if line.startswith("- **")]
    assert len(lines) == 2 and any("ISA avx2;" in line for line in lines)
    assert any("ISA avx2 avx512f avx512_bf16;" in line for line in lines)
    assert "ISA" not in build_markdown(sweep()).split("## Machines")[1].split("##")[0]  # older results: no isa

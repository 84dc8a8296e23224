"""``python -m edgemem.train.grad_reach``: the gradient share at each age follows the memory layout."""

from __future__ import annotations

import json

from edgemem.train.grad_reach import gradient_shares, main


def test_shares_follow_the_layout():
    """The earlier preset's layout attends 12 back directly and 13 only through memory of memory; the
    preset (windows in block 0) attends both; memvit_tiny_pooled reaches nothing 7 back (support 6): exactly 0."""
    gap = gradient_shares("memvit_tiny_long", clips=16, ages=[12, 13], seeds=1, sampler="gap4", blocks=["2:4:all"])
    win = gradient_shares("memvit_tiny_long", clips=16, ages=[12, 13], seeds=1)
    assert gap[12] > 5 * gap[13] > 0
    assert win[13] > 3 * gap[13]
    assert gradient_shares("memvit_tiny_pooled", clips=8, ages=[3, 7], seeds=1)[7] == 0.0
    # memory of the clip before in all 4 blocks (two of them without memory in the preset), uncompressed:
    # 4 clips back is reached through 4 memory hops, 5 is not
    every = [f"{b}:2:all" for b in range(4)]
    hops = gradient_shares("memvit_tiny", clips=6, ages=[4, 5], seeds=1, blocks=every, compression="1x1x1/1x1x1")
    assert hops[4] > 0 and hops[5] == 0.0


def test_cli_errors_and_json(capsys):
    assert main(["mvit_tiny", "--clips", "4", "--ages", "1"]) == 2
    assert "not a MeMViT" in capsys.readouterr().err
    assert main(["memvit_tiny", "--clips", "4", "--ages", "4"]) == 2
    assert main(["memvit_tiny", "--clips", "4", "--ages", "x"]) == 2
    assert main(["memvit_tiny", "--clips", "4", "--ages", "1", "--memory-block", "2:x"]) == 2
    assert "BLOCK:ATTN_MAX_LEN:SAMPLER" in capsys.readouterr().err
    assert main(["memvit_tiny", "--clips", "4", "--ages", "1", "--memory-compression", "2x2"]) == 2
    assert "KTxKHxKW/STxSHxSW" in capsys.readouterr().err
    assert main(["memvit_tiny", "--clips", "4", "--ages", "1,3", "--seeds", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"1", "3"} and all(v > 0 for v in out.values())

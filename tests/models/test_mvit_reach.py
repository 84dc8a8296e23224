"""Which past clips reach a MeMViT step's output: ``edgemem info``'s temporal support, checked by
perturbing one past clip of a real stream, and the per-block memory layout (``MemoryConfig.per_block``)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from edgemem.errors import UnsupportedError
from edgemem.models import create_model, from_card
from edgemem.models.info import model_info
from edgemem.models.mvit import MViT
from edgemem.models.mvit_config import MemoryConfig, memory_reach

GAP4 = MemoryConfig(  # both memory blocks attend 4, 8, 12, 16 back
    attn_max_len=5, sampler="gap4", exclude_layers=(1, 3), compress_kernel=(5, 3, 3), compress_stride=(4, 2, 2)
)
# the memvit_tiny_long of before: block 2 attends the 3 previous clips
GAP4_ALL = dataclasses.replace(GAP4, per_block=((2, 4, "all"),))
# block 0 attends the means of the clips 1-4, 5-8, 9-12 and 13-16 back, block 2 the 3 previous clips
WIN4 = dataclasses.replace(GAP4_ALL, sampler="win4")


def _moved(model: MViT, clips: int, distances: range) -> dict[int, float]:
    """How much the last clip's logits move when clip ``last - d`` alone is replaced, for each ``d``."""
    torch.manual_seed(0)
    frames = torch.rand(clips, 1, *model.input_shape)

    def last_logits(stream: torch.Tensor) -> torch.Tensor:
        state = model.init_state(1)
        with torch.no_grad():
            for x in stream:
                logits, state = model.step(x, state)
        return logits

    base = last_logits(frames)
    moved = {}
    for d in distances:
        other = frames.clone()
        other[clips - 1 - d] = torch.rand_like(other[0])
        moved[d] = float((last_logits(other) - base).abs().max())
    return moved


def _reached(model: MViT, clips: int, distances: range) -> set[int]:
    return {d for d, delta in _moved(model, clips, distances).items() if delta > 1e-6}


def test_memvit_tiny_long_reaches_every_clip_up_to_its_support():
    """Each of the 32 clips before the last changes its output, and none farther back; ``info`` says so."""
    torch.manual_seed(1)
    model = create_model("memvit_tiny_long").eval()
    support = model_info(model)["temporal_support"]
    assert support["clips"] == support["contiguous_clips"] == 32
    assert support["direct_clips"] == 16  # block 0's windows reach 16 back; 17-32 through memory of memory
    assert _reached(model, 36, range(1, 36)) == set(range(1, 33))


def test_earlier_preset_layout_reaches_19_clips():
    """Block 0 at 4, 8, 12, 16 back and block 2 at 1, 2, 3: 13 back only through memory of memory."""
    torch.manual_seed(1)
    model = create_model("memvit_tiny_long", memory=GAP4_ALL).eval()
    assert _reached(model, 22, range(1, 22)) == set(range(1, 20))


def test_gap4_layout_misses_the_ages_between():
    """The earlier preset's layout: only multiples of 4 reach (a cue 13 clips back is invisible)."""
    torch.manual_seed(1)
    model = create_model("memvit_tiny_long", memory=GAP4).eval()
    reached = _reached(model, 18, range(1, 18))
    assert reached == {4, 8, 12, 16}
    assert 13 not in reached
    support = model_info(model)["temporal_support"]
    assert (support["clips"], support["contiguous_clips"]) == (32, 0)
    assert model.memory_spec().details["unreachable_clips"] == [d for d in range(1, 32) if d % 4]


def test_window_layout_attends_every_age_in_one_block():
    assert WIN4.windows(0) == ((1, 2, 3, 4), (5, 6, 7, 8), (9, 10, 11, 12), (13, 14, 15, 16))
    assert WIN4.ages(0) == tuple(range(1, 17)) and WIN4.block_slots(0) == 16
    assert WIN4.windows(2) == ((1,), (2,), (3,)) and GAP4.windows(0) == ((4,), (8,), (12,), (16,))
    model = create_model("memvit_tiny_long", memory=WIN4).eval()
    assert model._attention(0).mem_clips == 4
    assert _reached(model, 22, range(1, 22)) == set(range(1, 20))
    support = model_info(model)["temporal_support"]
    assert (support["clips"], support["contiguous_clips"], support["direct_clips"]) == (19, 19, 16)
    for bad in ("win0", "gap10", "win", "ring4"):  # gap10: the official code would read a gap of 0
        with pytest.raises(UnsupportedError, match="sampler"):
            dataclasses.replace(WIN4, sampler=bad)


def test_window_memory_is_the_mean_of_its_valid_clips():
    """6 valid slots of 16: window 1-4 is the mean of 4 clips, 5-8 of 2, the older two are masked."""
    from edgemem.models.mvit import _attended

    torch.manual_seed(3)
    k, v = torch.randn(2, 16, 5, 8), torch.randn(2, 16, 5, 8)
    valid = torch.zeros(2, 16)
    valid[:, :6] = 1.0
    mk, mv, ok = _attended(k, v, valid, WIN4.windows(0))
    assert mk.shape == (2, 4, 5, 8) and ok.tolist() == [[False, False, True, True]] * 2  # oldest first
    assert torch.allclose(mk[:, 3], k[:, :4].mean(1)) and torch.allclose(mv[:, 2], v[:, 4:6].mean(1))
    assert torch.equal(mk[:, :2], torch.zeros_like(mk[:, :2]))
    gk, _, gok = _attended(k, v, valid, GAP4.windows(0))
    assert torch.equal(gk, k[:, [15, 11, 7, 3]]) and gok.tolist() == [[False, False, False, True]] * 2


def test_reach_rule():
    assert memory_reach([(1, 2, 3), (1, 2, 3)]) == set(range(1, 7))  # memvit_tiny: 2 layers x 3
    assert memory_reach([(4, 8, 12, 16), (1, 2, 3)]) == set(range(1, 20))  # memvit_tiny_long of before
    assert memory_reach([tuple(range(1, 17)), (4, 8, 12, 16)]) == set(range(1, 33))  # memvit_tiny_long
    assert memory_reach([(1, 2, 3), (4, 8, 12, 16)]) == set(range(1, 20))
    assert memory_reach([(2, 4)] * 8) == set(range(2, 33, 2))  # MeMViT-16's gap2


def test_per_block_state_shapes_and_card_round_trip():
    model = create_model("memvit_tiny_long")
    shapes = {s.name: s.shape for s in model.state_specs(2)}
    assert shapes["mem.0.k"][:2] == (2, 16) and shapes["mem.2.k"][:2] == (2, 16) and shapes["mem.valid"] == (2, 16)
    rebuilt = from_card(model.model_card())
    assert rebuilt.cfg == model.cfg and rebuilt.cfg.memory.per_block == ((2, 5, "gap4"),)
    assert rebuilt.cfg.memory.sampler == "win4"
    assert rebuilt._attention(0).mem_clips == 4 and rebuilt._attention(2).mem_clips == 4


def test_uniform_per_block_entry_changes_nothing():
    """A ``per_block`` entry equal to the default layout gives the same model, number for number."""
    torch.manual_seed(2)
    plain = create_model("memvit_tiny").eval()
    mem = dataclasses.replace(plain.cfg.memory, per_block=((2, 5, "all"),))
    same = create_model("memvit_tiny", memory=mem).eval()
    same.load_state_dict(plain.state_dict())
    x = torch.rand(5, 2, *plain.input_shape)
    sa, sb = plain.init_state(2), same.init_state(2)
    for clip in x:
        la, sa = plain.step(clip, sa)
        lb, sb = same.step(clip, sb)
        assert torch.equal(la, lb)


@pytest.mark.parametrize(
    "per_block, what",
    [
        (((0, 4, "all"), (0, 3, "all")), "twice"),
        (((1, 4, "all"),), "not memory blocks"),
        (((9, 4, "all"),), "depth"),
        (((0, 1, "all"),), "ATTN"),
    ],
)
def test_bad_per_block_is_refused(per_block, what):
    with pytest.raises(UnsupportedError, match=what):
        create_model("memvit_tiny", memory=dataclasses.replace(GAP4, per_block=per_block))


@pytest.mark.parametrize("memory, slots2", [(GAP4_ALL, 3), (WIN4, 3), (None, 16)], ids=["gap4", "win4", "preset"])
def test_per_block_layout_exports_and_ort_equals_pytorch_over_the_whole_memory(tmp_path, memory, slots2):
    """18 clips with a reset fill block 0's 16 slots (block 2 keeps 3 or 16): the graph matches PyTorch."""
    from edgemem.contract import LOGITS, read_contract
    from edgemem.export.onnx import to_onnx

    torch.manual_seed(0)
    model = create_model("memvit_tiny_long", **({} if memory is None else {"memory": memory})).eval()
    res = to_onnx(model, tmp_path / "long.onnx", batch=2, clips=18, boundaries=1)
    assert res.report is not None and res.report.passed and res.report.steps == 18
    logits = next(o for o in res.report.runtimes[0].outputs if o.name == LOGITS)
    assert logits.max_abs <= 1e-4 + 1e-4 * logits.max_ref
    shapes = {s.name: s.shape for s in read_contract(res.path).state}
    assert shapes["mem.0.k"][1] == 16 and shapes["mem.2.k"][1] == slots2 and shapes["mem.valid"][1] == 16


@pytest.mark.parametrize(
    "name, text",
    [
        (
            "memvit_tiny",
            "16 clips, 8.533 s (every clip in between; 4 attended directly, older ones through memory of memory)",
        ),
        (
            "memvit_tiny_pooled",
            "6 clips, 3.2 s (every clip in between; 3 attended directly, older ones through memory of memory)",
        ),
        ("mvit_tiny", "1 clip, 0.533 s (every clip in between)"),
        ("memvit16_16x4", "32 clips, 68.267 s (with gaps from 1 clip back; 4 attended directly"),
    ],
)
def test_info_table_says_how_far_memory_reaches_directly(name: str, text: str, capsys) -> None:
    """``edgemem info``'s table: the support, whether every clip in it reaches, and how much of it the
    memory blocks attend themselves."""
    from edgemem.cli import main

    assert main(["info", name]) == 0
    assert text in " ".join(capsys.readouterr().out.replace("│", " ").split())

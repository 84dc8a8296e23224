"""The command-line memory layout (``--memory-block``, ``--memory-compression``) applied to a preset's."""

from dataclasses import replace

import pytest

from edgemem.errors import EdgememError
from edgemem.models import create_model
from edgemem.train.memory_layout import memory_layout


def test_memory_block_off_takes_a_block_memory_away_and_another_gets_it():
    """``0:off`` removes block 0's memory (and its own layout); ``3:5:all`` gives block 3 memory: the
    layout the docs call "block 3 alone" plus the preset's block 2."""
    base = create_model("memvit_tiny_pooled").cfg.memory
    base = replace(base, per_block=((0, 3, "win2"),))
    mem = memory_layout(base, None, ["0:off", "3:5:all"])
    assert mem.exclude_layers == (0, 1) and mem.per_block == ((3, 5, "all"),)
    assert create_model("memvit_tiny_pooled", memory=mem).memory_blocks == (2, 3)
    # a later entry for the same block wins, as for the other layouts
    assert memory_layout(base, None, ["3:off", "3:5:all"]).exclude_layers == (1,)


@pytest.mark.parametrize("entry", ["0:of", "x:off", "0:off:all", "off"])
def test_malformed_off_entry_is_refused(entry):
    with pytest.raises(EdgememError, match="BLOCK:off"):
        memory_layout(create_model("memvit_tiny_pooled").cfg.memory, None, [entry])


def test_no_memory_block_left_is_refused():
    mem = memory_layout(create_model("memvit_tiny_pooled").cfg.memory, None, ["0:off", "2:off"])
    with pytest.raises(EdgememError, match="every block"):
        create_model("memvit_tiny_pooled", memory=mem)


def test_raw_memory_on_the_clip_tables():
    """``none`` drops the compression and its norm; ``clip`` puts memory keys on the clip's tables; with
    spatial tables ``none`` needs ``clip``, ``clip`` needs memory on the clip's grid (no compression, or
    one of stride 1) and the ``all`` sampler."""
    base = create_model("memvit_tiny").cfg.memory
    mem = memory_layout(base, None, None, "none", "clip")
    assert not mem.compress and mem.positions == "clip"
    model = create_model("memvit_tiny", memory=mem)
    assert model.memory_parameters() == []
    assert all(model.memory_shape(i) == model.raw_memory_shape(i) for i in model.memory_blocks)
    with pytest.raises(EdgememError, match="memory positions 'clip'"):
        create_model("memvit_tiny", memory=memory_layout(base, None, None, "none"))
    with pytest.raises(EdgememError, match="strided compression"):
        memory_layout(base, None, None, "5x3x3/4x2x2", "clip")
    # a compression of stride 1 keeps every key on the clip's grid: the tables go, the scale and norm stay
    tied = create_model("memvit_tiny", memory=memory_layout(base, None, None, None, "clip"))
    assert {n.split(".")[-2] for n, _ in tied.named_parameters() if "compress" in n} == {
        "compress_k",
        "compress_v",
        "norm_compress_k",
        "norm_compress_v",
    }
    assert len(tied.memory_parameters()) == 6 * len(tied.memory_blocks)
    assert not any("rel_pos_mem" in n for n, _ in tied.named_parameters())
    with pytest.raises(EdgememError, match="sampler win2"):
        memory_layout(base, None, ["1:3:win2"], "none", "clip")
    with pytest.raises(EdgememError, match="positions 'near'"):
        memory_layout(base, None, None, "none", "near")

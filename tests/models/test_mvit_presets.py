"""MViT/MeMViT presets: registry, state contract, full-size shapes (on meta), cards, bad input, training."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from conftest import OFFICIAL_TINY as FIX

from edgemem.contract import ModelCard
from edgemem.errors import InputError, StateError, UnsupportedError
from edgemem.models import create_model, from_card, list_models
from edgemem.models.mvit import MViT

PRESETS = ["memvit16_16x4", "mvit16_16x4", "memvit24_32x3", "mvit24_32x3", "memvit_tiny", "mvit_tiny"]
TINY = ["memvit_tiny", "mvit_tiny"]


def _meta(name: str, **kw) -> MViT:
    with torch.device("meta"):
        return create_model(name, **kw)


def test_presets_registered():
    assert set(PRESETS) <= set(list_models())


@pytest.mark.parametrize("name", PRESETS)
def test_state_specs_and_meta_step(name):
    m = _meta(name).eval()
    specs = m.state_specs(3)
    mem = m.memory
    if mem is None:
        assert specs == []
    else:
        names = [s.name for s in specs]
        assert names[-1] == "mem.valid" and specs[-1].shape == (3, mem.slots)
        assert names[:-1] == [f"mem.{i}.{kv}" for i in m.memory_blocks for kv in "kv"]
    state = m.init_state(2)
    frames = torch.zeros((2, *m.input_shape), device="meta")
    logits, new = m.step(frames, state)
    assert logits.shape == (2, m.num_classes)
    assert {k: tuple(v.shape) for k, v in new.items()} == {k: tuple(v.shape) for k, v in state.items()}


@pytest.mark.parametrize("name", TINY)
def test_tiny_forward_step(name):
    torch.manual_seed(0)
    m = create_model(name, num_classes=7).eval()
    x = torch.randn(2, *m.input_shape)
    state = m.init_state(2)
    with torch.no_grad():
        first, state = m.step(x, state)
        plain = m(x)
        tokens = m.forward_features(x)
    assert first.shape == (2, 7)
    torch.testing.assert_close(first, plain, atol=1e-5, rtol=0)  # empty memory == no memory
    torch.testing.assert_close(m.forward_head(tokens), plain, atol=1e-6, rtol=0)
    assert tokens.shape[0] == 2 and tokens.shape[2] == m.specs[-1].dim_out
    if m.memory is not None:
        first_only = torch.zeros_like(state["mem.valid"])
        first_only[:, 0] = 1.0
        assert torch.equal(state["mem.valid"], first_only)
        with torch.no_grad():
            second, state = m.step(x, state, torch.tensor([True, False]))
        torch.testing.assert_close(second[0], plain[0], atol=1e-5, rtol=0)  # reset slot: no memory
        assert not torch.allclose(second[1], plain[1], atol=1e-4)  # memory changes the output
        first_only[1, 1] = 1.0  # slot 0 was reset (one clip in memory), slot 1 holds two
        assert torch.equal(state["mem.valid"], first_only)


def test_full_size_keys_and_params_equal_official():
    ref = {}
    for line in (FIX / "MeMViT16_AVA_state_dict_keys.txt").read_text().splitlines():
        key, _, shape = line.partition(" ")
        if shape.startswith("(") and not key.startswith(("box_blocks.", "head.")):
            ref[key] = tuple(json.loads("[" + shape.strip("()").rstrip(",") + "]"))
    m = _meta("memvit16_16x4")
    mine = {k: tuple(v.shape) for k, v in m.state_dict().items() if not k.startswith("head.")}
    assert mine == ref
    assert m.head.projection.weight.shape == (400, 768)
    summary = json.loads((FIX / "MeMViT16_224_memory_shapes_run.json").read_text())
    assert sum(p.numel() for p in m.parameters()) == summary["params_backbone_plus_400cls_head"]


@pytest.mark.parametrize("name,run", [("memvit16_16x4", "MeMViT16"), ("memvit24_32x3", "MeMViT24")])
def test_memory_shapes_equal_recorded_run(name, run):
    rec = json.loads((FIX / f"{run}_224_memory_shapes_run.json").read_text())
    m = _meta(name)
    assert list(rec["input"][1:]) == list(m.input_shape)
    specs = {s.name: s.shape for s in m.state_specs(1)}
    last = rec["per_clip"][-1]
    for i in m.memory_blocks:
        cached = last["cached"][str(i)]
        # All entries but the newest are compressed; the newest is the raw K-bar.
        assert specs[f"mem.{i}.k"][2:] == tuple(cached[0][1:])
        assert m.raw_memory_shape(i) == tuple(cached[-1][1:])
    # The official list keeps the last M*N clips (N = gap), the number of edgemem's state slots.
    assert len(last["cached"]["0"]) == min(len(rec["per_clip"]), m.memory.slots)
    # Attended keys per block at the last recorded clip: current + the valid sampled memory clips.
    clips_seen = len(rec["per_clip"]) - 1
    n_att = min(clips_seen // m.memory.gap, m.memory.num_attended)
    for i in range(len(m.specs)):
        n_kv = m.raw_memory_shape(i)[0]
        extra = n_att * m.memory_shape(i)[0] if i in m.memory_blocks else 0
        assert last["k_in_len"][str(i)][1] == n_kv + extra


def test_frame_scale_baseline():
    base, scaled = _meta("mvit_tiny"), _meta("mvit_tiny", frame_scale=4)
    assert scaled.input_shape == (3, 32, 32, 32)
    assert scaled.model_card().frame_scale == 4 and scaled.model_card().clip.frames == 32
    a, b = base.state_dict(), scaled.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        if k.endswith("rel_pos_t"):
            assert b[k].shape[0] == 2 * 16 - 1
        else:
            assert a[k].shape == b[k].shape, k
    with pytest.raises(UnsupportedError, match="not supported"):
        create_model("memvit_tiny", frame_scale=2)


@pytest.mark.parametrize("name", PRESETS)
def test_card_roundtrip(name):
    m = _meta(name, num_classes=5)
    card = ModelCard.from_json(json.loads(json.dumps(m.model_card().to_json())))
    assert card.family == "mvit" and card.name == name and card.num_classes == 5
    with torch.device("meta"):
        again = from_card(card)
    assert again.cfg == m.cfg
    assert {k: v.shape for k, v in again.state_dict().items()} == {k: v.shape for k, v in m.state_dict().items()}
    if m.memory is not None:
        assert card.memory is not None and card.memory.kind == "memvit"
        mem = card.memory.details
        assert mem["layers"] == list(m.memory_blocks) and card.backbone == name.replace("memvit", "mvit")
        assert mem["slots"] == m.memory.num_attended and mem["sampler"] == m.memory.sampler
        assert set(mem["compression"]) >= {"kernel", "stride"}


def test_bad_inputs():
    m = create_model("memvit_tiny").eval()
    state = m.init_state(2)
    with pytest.raises(InputError, match=r"\[B, 3, 8, 32, 32\]"):
        m.step(torch.zeros(2, 3, 8, 16, 16), state)
    with pytest.raises(InputError, match="float32"):
        m.step(torch.zeros(2, 3, 8, 32, 32, dtype=torch.float64), state)
    with pytest.raises(InputError, match=r"\[B, 3, 8, 32, 32\]"):
        m(torch.zeros(3, 8, 32, 32))
    with pytest.raises(StateError, match="mem.0.k"):
        m.step(torch.zeros(1, 3, 8, 32, 32), state)  # state for batch 2
    other = create_model("memvit_tiny", embed_dim=8, num_heads=1).init_state(2)
    with pytest.raises(StateError, match="mem.0.k"):
        m.step(torch.zeros(2, 3, 8, 32, 32), other)
    with pytest.raises(StateError, match="unexpected"):
        m.step(torch.zeros(2, 3, 8, 32, 32), {**state, "mem.9.k": state["mem.0.k"]})
    with pytest.raises(InputError, match="reset"):
        m.step(torch.zeros(2, 3, 8, 32, 32), state, torch.zeros(2))
    with pytest.raises(UnsupportedError):
        create_model("mvit_tiny", no_such_option=1)


def test_train_step_pipelined_gradients():
    torch.manual_seed(0)
    m = create_model("memvit_tiny").train()
    state = m.init_train_state(2)
    x = torch.randn(2, *m.input_shape)
    for _ in range(2):
        m.zero_grad()
        logits, state = m.train_step(x, state)
        logits.sum().backward()
    blk = m.blocks[m.memory_blocks[0]].attn
    assert blk.compress_k.weight.grad is not None and blk.compress_k.weight.grad.abs().sum() > 0
    assert all(not v.requires_grad for v in state.values())
    assert set(state) == {s.name for s in m.train_state_specs(2)}
    # Eval step from a training state's inference part gives the same values as train_step.
    m.eval()
    inf = {s.name: state[s.name] for s in m.state_specs(2)}
    with torch.no_grad():
        a, _ = m.step(x, inf)
        b, _ = m.train_step(x, state)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_train_step_gap_sampler_leaves_compression_untrained():
    from edgemem.models.mvit_config import MemoryConfig

    m = create_model("memvit_tiny", memory=MemoryConfig(attn_max_len=3, sampler="gap2", exclude_layers=(1, 3)))
    m.train()
    state = m.init_train_state(1)
    x = torch.randn(1, *m.input_shape)
    for _ in range(4):
        m.zero_grad()
        logits, state = m.train_step(x, state)
        logits.sum().backward()
    w = m.blocks[0].attn.compress_k.weight
    assert w.grad is None or w.grad.abs().sum() == 0


def test_init_std_official_or_width_scaled():
    """Full-size presets keep the official trunc-normal(0.02); tiny ones scale to the layer width
    (Xavier), without which a 16-channel MViT starts near-degenerate and training plateaus."""
    assert _meta("memvit16_16x4").cfg.init_std == 0.02
    torch.manual_seed(0)
    tiny = create_model("mvit_tiny")
    assert tiny.cfg.init_std is None
    fc1 = tiny.blocks[0].mlp.fc1.weight  # 16 -> 64: Xavier std = sqrt(2 / 80) = 0.158
    assert 0.12 < float(fc1.std()) < 0.2
    official = MViT(tiny.cfg.replace(init_std=0.02))
    assert 0.015 < float(official.blocks[0].mlp.fc1.weight.std()) < 0.025
    assert from_card(tiny.model_card()).cfg.init_std is None


@pytest.mark.parametrize("name", [*TINY, "memvit_tiny:clip"])
def test_fused_attention_equals_reference_formulation(name):
    """Bias and memory mask folded into the q.k GEMM give the official formulation's outputs (also with
    raw memory on the clip's position tables, ``:clip``)."""
    torch.manual_seed(0)
    if name.endswith(":clip"):
        mem = replace(create_model("memvit_tiny").cfg.memory, compress=False, positions="clip")
        m = create_model("memvit_tiny", memory=mem).eval()
    else:
        m = create_model(name).eval()
    x = torch.randn(3, 2, *m.input_shape)
    resets = [torch.tensor([True, True]), torch.tensor([False, True]), torch.tensor([False, False])]
    outs = {}
    for fused in (True, False):
        for mod in m.modules():
            if hasattr(mod, "fused"):
                mod.fused = fused
        state, logits = m.init_state(2), []
        with torch.no_grad():
            for clip, reset in zip(x, resets, strict=True):
                out, state = m.step(clip, state, reset)
                logits.append(out)
        outs[fused] = torch.stack(logits)
    torch.testing.assert_close(outs[True], outs[False], atol=1e-5, rtol=1e-5)


def test_train_step_bptt_reaches_the_oldest_memory_clip():
    """BPTT: the last clip's loss reaches the first clip's input through 3 clips of memory; the
    pipelined step stops at the previous clip's compression."""
    torch.manual_seed(0)
    m = create_model("memvit_tiny").train()
    for bptt, reaches in ((True, True), (False, False)):
        state = m.init_train_state(1)
        first = torch.randn(1, *m.input_shape, requires_grad=True)
        for i in range(4):
            x = first if i == 0 else torch.randn(1, *m.input_shape)
            logits, state = m.train_step(x, state, bptt=bptt)
        logits.sum().backward()
        got = first.grad is not None and float(first.grad.abs().sum()) > 0
        assert got == reaches
    assert all(s.name in state for s in m.train_state_specs(1))


def test_memvit_tiny_long_support_and_cost():
    """>= 16 clips of temporal support, every one of them reachable, at <= 1.1x the short clip's GFLOPs
    (``edgemem info``; the reach itself is checked by perturbation in test_mvit_reach.py)."""
    from edgemem.models.info import model_info

    long, short = model_info(create_model("memvit_tiny_long")), model_info(create_model("mvit_tiny"))
    support = long["temporal_support"]
    assert support["clips"] >= 16 and support["contiguous_clips"] == support["clips"]
    assert long["gflops_step"] / short["gflops_step"] <= 1.1
    assert long["memory"]["attended_ages"] == {"0": list(range(1, 17)), "2": [4, 8, 12, 16]}


def test_memvit_tiny_keeps_every_token_of_the_4_clips_before():
    """Every block attends the 4 clips before, uncompressed; the 1x1x1 compression starts as the identity
    (its output is the normed raw keys), not as a random per-channel sign and scale."""
    from edgemem.models.info import model_info

    m = create_model("memvit_tiny")
    info, short = model_info(m), model_info(create_model("mvit_tiny"))
    assert info["memory"]["attended_ages"] == {str(b): [1, 2, 3, 4] for b in range(4)}
    assert info["memory"]["compression"]["stride"] == [1, 1, 1]
    assert 2.3 < info["gflops_step"] / short["gflops_step"] < 2.5
    for block in range(4):
        attn = m._attention(block)
        t, h, w = attn.spec.kv_thw
        raw = torch.randn(2, t * h * w + 1, attn.compress_v.weight.shape[0])
        with torch.no_grad():
            torch.testing.assert_close(attn.compress(raw, "v"), attn.norm_compress_v(raw))

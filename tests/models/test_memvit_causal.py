"""MeMViT's memory is exact: with memory in every block, no compression, and nothing that crosses a clip
boundary (no cls token, no relative positions, temporal kernels within a clip), a stream of M + 1
clips gives the logits and the gradients of the memory-less model frame-scaled x(M + 1) with
block-causal attention (each clip attends only itself and earlier clips), read on its last clip.

So streaming with back-propagation through time (``train_step(..., bptt=True)``) trains the same
function with the same gradients as one graph over the whole window (docs/TRAINING.md, twenty-second
session), and the memory's order, validity and reset are checked against a model without memory."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor

from edgemem.models import create_model
from edgemem.models.mvit import MViT
from edgemem.models.mvit_attention import MultiScaleAttention
from edgemem.models.mvit_config import MemoryConfig

PAST = 3  # memory clips: a window of PAST + 1 clips
WITHIN_CLIP: dict[str, Any] = dict(
    num_classes=3,
    cls_embed=False,
    rel_pos_spatial=False,
    rel_pos_temporal=False,
    patch_kernel=(2, 7, 7),  # temporal stride 2: no patch spans two clips
    patch_padding=(0, 3, 3),
    pool_kvq_kernel=(1, 3, 3),
)


def _pair() -> tuple[MViT, MViT]:
    torch.manual_seed(0)
    memory = MemoryConfig(attn_max_len=PAST + 1, sampler="all", exclude_layers=(), compress=False)
    streamed = create_model("memvit_tiny", memory=memory, **WITHIN_CLIP)
    window = create_model("mvit_tiny", frame_scale=PAST + 1, **WITHIN_CLIP)
    assert isinstance(streamed, MViT) and isinstance(window, MViT)
    window.load_state_dict(streamed.state_dict(), strict=True)  # the same parameters, by name
    return streamed, window


def _causal_window_logits(model: MViT, frames: Tensor, monkeypatch: pytest.MonkeyPatch) -> Tensor:
    """The frame-scaled model with block-causal attention over its PAST + 1 clips, read (token mean) on
    the last clip's tokens, as the streamed model reads its current clip."""
    plain = MultiScaleAttention._logits
    chunks = PAST + 1

    def causal(self: MultiScaleAttention, q: Tensor, k: Tensor, mem_ok: Tensor | None, n_kv: int) -> Tensor:
        logits = plain(self, q, k, mem_ok, n_kv)
        (qt, qh, qw), (kt, kh, kw) = self.spec.q_thw, self.spec.kv_thw
        q_clip = (torch.arange(qt) // (qt // chunks)).repeat_interleave(qh * qw)
        k_clip = (torch.arange(kt) // (kt // chunks)).repeat_interleave(kh * kw)
        return logits.masked_fill(k_clip[None, :] > q_clip[:, None], float("-inf"))

    with monkeypatch.context() as m:
        m.setattr(MultiScaleAttention, "_logits", causal)
        tokens = model.norm(model._backbone(frames, None)[0])
    return model.head(tokens[:, -tokens.shape[1] // chunks :].mean(1))


def _clips(frames: Tensor, n: int) -> list[Tensor]:
    return list(frames.chunk(n, dim=2))


def test_streamed_memory_is_the_block_causal_window(monkeypatch: pytest.MonkeyPatch) -> None:
    streamed, window = _pair()
    frames = torch.randn(2, 3, 8 * (PAST + 1), 32, 32)
    state = streamed.init_train_state(2)
    for clip in _clips(frames, PAST + 1):
        logits, state = streamed.train_step(clip, state, bptt=True)
    reference = _causal_window_logits(window, frames, monkeypatch)
    torch.testing.assert_close(logits, reference, atol=1e-5, rtol=1e-4)
    # inference (eager compression) streams the same function
    state = streamed.init_state(2)
    with torch.no_grad():
        for clip in _clips(frames, PAST + 1):
            eager, state = streamed.step(clip, state)
    torch.testing.assert_close(eager, reference.detach(), atol=1e-5, rtol=1e-4)
    # back-propagation through time gives every parameter the gradient of the one graph
    target = torch.tensor([0, 2])
    torch.nn.functional.cross_entropy(logits, target).backward()
    torch.nn.functional.cross_entropy(reference, target).backward()
    grads = dict(streamed.named_parameters())
    for name, p in window.named_parameters():
        assert p.grad is not None and grads[name].grad is not None, name
        torch.testing.assert_close(grads[name].grad, p.grad, atol=1e-6, rtol=1e-3, msg=name)


def test_reset_forgets_what_came_before_in_one_slot_only(monkeypatch: pytest.MonkeyPatch) -> None:
    streamed, window = _pair()
    torch.manual_seed(1)
    before = torch.randn(2, 3, 16, 32, 32)
    frames = torch.randn(2, 3, 8 * (PAST + 1), 32, 32)
    reset = torch.tensor([True, False])
    state = streamed.init_state(2)
    with torch.no_grad():
        for clip in _clips(before, 2):
            _, state = streamed.step(clip, state)
        for i, clip in enumerate(_clips(frames, PAST + 1)):
            logits, state = streamed.step(clip, state, reset if i == 0 else None)
        reference = _causal_window_logits(window, frames, monkeypatch)
    torch.testing.assert_close(logits[0], reference[0], atol=1e-5, rtol=1e-4)
    # the slot that was not reset still remembers the clips before the window (memory of memory)
    assert float((logits[1] - reference[1]).abs().max()) > 1e-3


def test_memory_on_the_clip_tables_sits_at_its_true_distance(monkeypatch: pytest.MonkeyPatch) -> None:
    """Memory positions ``"clip"``: with relative positions on, uncompressed memory on the clip's own
    tables is the block-causal window whose tables hold the same rows at the same distances, so every
    memory key is biased as the window biases the key that many frames before the query."""
    positioned = dict(WITHIN_CLIP, rel_pos_spatial=True, rel_pos_temporal=True)
    torch.manual_seed(0)
    memory = MemoryConfig(attn_max_len=PAST + 1, sampler="all", compress=False, positions="clip")
    streamed = create_model("memvit_tiny", memory=memory, **positioned)
    window = create_model("mvit_tiny", frame_scale=PAST + 1, **positioned)
    assert isinstance(streamed, MViT) and isinstance(window, MViT)
    assert streamed.memory_parameters() == []
    weights = streamed.state_dict()
    for i, (s_blk, w_blk) in enumerate(zip(streamed.blocks, window.blocks, strict=True)):
        # row r of a temporal table holds distance q - k = r - (key frames - 1) in both models
        s_kt, w_kt = s_blk.attn.spec.kv_thw[0], w_blk.attn.spec.kv_thw[0]
        own, table = weights[f"blocks.{i}.attn.rel_pos_t"], torch.randn_like(w_blk.attn.rel_pos_t)
        assert own.shape[0] == (PAST + 2) * s_kt - 1  # back to the oldest memory frame
        table[w_kt - s_kt : w_kt - s_kt + own.shape[0]] = own
        weights[f"blocks.{i}.attn.rel_pos_t"] = table
    window.load_state_dict(weights, strict=True)
    frames = torch.randn(2, 3, 8 * (PAST + 1), 32, 32)
    state = streamed.init_state(2)
    with torch.no_grad():
        for clip in _clips(frames, PAST + 1):
            logits, state = streamed.step(clip, state)
        reference = _causal_window_logits(window, frames, monkeypatch)
    torch.testing.assert_close(logits, reference, atol=1e-5, rtol=1e-4)

"""The CM video model: paths agree, batch reduction, video loss, multi-view inference, online state."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from edgemem.errors import InputError, StateError, UnsupportedError
from edgemem.models import create_model, from_card
from edgemem.models.cm_model import CMModel

torch.set_num_threads(1)


def _model(name: str = "cm_slow_tiny", **kw: object) -> CMModel:
    torch.manual_seed(0)
    m = create_model(name, **kw)
    with torch.no_grad():  # non-zero residual branches and a spread head: outputs that differ between clips
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm3d):
                mod.weight.uniform_(0.5, 1.5)
        m.backbone.head.projection.weight.normal_(std=0.5)
    return m.eval()


def _clips(b: int, n: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, n, 3, 8, 32, 32, generator=g)


@pytest.mark.parametrize("name", ["cm_slow_tiny", "cm_mvit_tiny"])
def test_paths_agree_in_eval(name: str) -> None:
    m = _model(name)
    x = _clips(2, 3)
    with torch.no_grad():
        full = m(x)
        assert full.shape == (2, 3, 10)
        torch.testing.assert_close(m.two_scan(x), full, rtol=1e-5, atol=1e-5)
        # one clip per video is the N = 1 case
        torch.testing.assert_close(m(x[:, 0]), m(x[:, :1])[:, 0])
        # the memory is video-level: other clips change a clip's output
        other = x.clone()
        other[:, 2] = _clips(2, 1, seed=7)[:, 0]
        assert not torch.allclose(m(other)[:, 0], full[:, 0])


@pytest.mark.parametrize("name", ["cm_slow_tiny", "cm_mvit_tiny"])
def test_online_step_over_a_stream_equals_the_causal_forward(name: str) -> None:
    m = _model(name)
    x = _clips(2, 5)
    with torch.no_grad():
        causal = m.forward_causal(x)
        state, outs = m.init_state(2), []
        for t in range(5):
            logits, state = m.step(x[:, t], state)
            outs.append(logits)
        torch.testing.assert_close(torch.stack(outs, 1), causal, rtol=1e-5, atol=1e-5)
        assert state["cm.count"].flatten().tolist() == [5.0, 5.0]
        # the last step reads the memory of all clips: the paper's forward for that clip
        torch.testing.assert_close(outs[-1], m(x)[:, -1], rtol=1e-5, atol=1e-5)
        # per-slot reset: slot 1 starts a new video at t = 2, slot 0 goes on
        state, outs = m.init_state(2), []
        for t in range(5):
            reset = torch.tensor([False, t == 2])
            logits, state = m.step(x[:, t], state, reset)
            outs.append(logits)
        got = torch.stack(outs, 1)
        torch.testing.assert_close(got[0], causal[0], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(got[1, 2:], m.forward_causal(x[1:, 2:])[0], rtol=1e-5, atol=1e-5)
        assert state["cm.count"].flatten().tolist() == [5.0, 3.0]


def test_state_from_another_model_is_refused() -> None:
    m = _model()
    frames = _clips(1, 1)[:, 0]
    with pytest.raises(StateError, match="cm.sum"):
        m.step(frames, create_model("cm_slow_tiny", reduction=2).init_state(1))
    with pytest.raises(StateError, match="does not belong"):
        m.step(frames, {"mem.layer0": torch.zeros(1, 4)})


def test_wrong_clip_layouts_are_clear_errors() -> None:
    m = _model()
    with pytest.raises(InputError, match=r"\[B, N, 3, 8, 32, 32\]"):
        m(torch.randn(1, 2, 8, 3, 32, 32))
    with pytest.raises(InputError, match="no clips"):
        m(torch.randn(1, 0, 3, 8, 32, 32))
    with pytest.raises(InputError, match="views"):
        m.predict_views(torch.randn(1, 3, 3, 8, 32, 32))
    with pytest.raises(InputError, match="centre"):
        m.predict_views(torch.randn(1, 3, 2, 3, 8, 32, 32), centre=3)
    with pytest.raises(UnsupportedError, match="frame_scale"):
        create_model("cm_slow_tiny", frame_scale=2)


def _tagged(b: int, n: int) -> torch.Tensor:
    """``[b, n, 3, 8, 32, 32]`` clips whose every value is the tag ``100 * video + clip``."""
    x = torch.zeros(b, n, 3, 8, 32, 32)
    for v in range(b):
        for c in range(n):
            x[v, c] = 100 * v + c
    return x


def test_batch_reduction_bn_batches_hold_clips_of_different_videos() -> None:
    m = _model().train()
    b, n = 3, 4
    x = _tagged(b, n)
    seen: list[list[tuple[int, int]]] = []

    def record(_mod: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        tags = args[0][:, 0, 0, 0, 0].round().long().tolist()
        seen.append([(t // 100, t % 100) for t in tags])

    bn = m.backbone.s1.pathway0_stem.bn
    handle = m.backbone.s1.register_forward_pre_hook(record)
    mean_before = bn.running_mean.clone()
    m(x)
    handle.remove()
    assert len(seen) == n
    for batch in seen:
        assert sorted(v for v, _ in batch) == list(range(b))  # one clip of every video
    for v in range(b):  # every clip of every video exactly once over the calls
        assert sorted(c for batch in seen for w, c in batch if w == v) == list(range(n))
    # running stats were updated from each of those sub-batches, not from one batch of all B*N clips
    stem = m.backbone.s1.pathway0_stem.conv
    with torch.no_grad():
        expect = mean_before.clone()
        for batch in seen:
            sub = torch.stack([x[v, c] for v, c in batch])
            expect = 0.9 * expect + 0.1 * stem(sub).mean(dim=(0, 2, 3, 4))
    torch.testing.assert_close(bn.running_mean, expect, rtol=1e-4, atol=1e-5)
    # without batch reduction: a single BN batch of all clips
    seen.clear()
    m2 = _model(batch_reduction=False).train()
    handle = m2.backbone.s1.register_forward_pre_hook(record)
    m2(x)
    handle.remove()
    assert len(seen) == 1 and len(seen[0]) == b * n


def test_batch_reduction_mixes_clip_positions_and_keeps_clip_order() -> None:
    """Each BN batch mixes clip positions (a position-dependent content is normalised as at inference)."""
    m = _model().train()
    b, n = 8, 4
    x = _tagged(b, n)
    seen: list[list[int]] = []
    handle = m.backbone.s1.register_forward_pre_hook(
        lambda _mod, args: seen.append((args[0][:, 0, 0, 0, 0].round().long() % 100).tolist())
    )
    torch.manual_seed(3)
    for _ in range(4):
        m(x)
    handle.remove()
    assert len(seen) == 4 * n
    # without the per-video shuffle every call would hold a single clip position
    assert sum(len(set(calls)) > 1 for calls in seen) >= 3 * n
    # features come back in each video's clip order: with BN frozen, batch reduction = one batch of all clips
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm3d):
            mod.eval()
    x = _clips(3, 4)
    with torch.no_grad():
        reduced = m(x)
        m.batch_reduction = False
        torch.testing.assert_close(reduced, m(x), rtol=1e-5, atol=1e-5)
        m.batch_reduction = True
        # eval mode is untouched: no shuffle, the same output twice
        m.eval()
        torch.testing.assert_close(m(x), m(x))
        torch.testing.assert_close(m(x), m.two_scan(x), rtol=1e-5, atol=1e-5)


def test_video_loss_ce_and_multilabel_bce() -> None:
    m = _model()
    logits = torch.randn(2, 3, 10)
    target = torch.tensor([4, 7])
    want = sum(F.cross_entropy(logits[:, i], target) for i in range(3)) / 3 + 0.5 * F.cross_entropy(
        logits.mean(1), target
    )
    torch.testing.assert_close(m.video_loss(logits, target, alpha=0.5), want)
    multi = (torch.rand(2, 10) > 0.5).float()
    want = sum(F.binary_cross_entropy_with_logits(logits[:, i], multi) for i in range(3)) / 3
    want = want + 2.0 * F.binary_cross_entropy_with_logits(logits.mean(1), multi)
    torch.testing.assert_close(m.video_loss(logits, multi, alpha=2.0), want)
    with pytest.raises(InputError, match="target"):
        m.video_loss(logits, torch.tensor([1.0, 2.0]))


def test_multi_iteration_gradient_equals_the_two_scan_graph_with_constant_memory() -> None:
    m = _model()  # eval: deterministic BN and dropout; gradients still flow
    x, target = _clips(2, 3), torch.tensor([1, 5])
    loss = m.multi_iteration_backward(x, target)
    got = {k: p.grad.clone() for k, p in m.named_parameters() if p.grad is not None}
    assert set(got) == {k for k, _ in m.named_parameters() if not k.startswith(("cm.k.", "cm.v."))}
    m.zero_grad()
    encoded = [m.encode(x[:, i]) for i in range(3)]
    memory = torch.stack([c for _, c in encoded], 1).mean(1).detach()
    ref = m.video_loss(torch.stack([m.classify(f, memory) for f, _ in encoded], 1), target)
    ref.backward()
    torch.testing.assert_close(loss, ref.detach())
    for k, p in m.named_parameters():
        if k.startswith(("cm.k.", "cm.v.")):
            continue  # these only shape the memory, a constant in both
        torch.testing.assert_close(got[k], p.grad, rtol=1e-4, atol=1e-6, msg=k)


def test_multi_view_inference_memory_from_centre_crops() -> None:
    m = _model()
    views = torch.randn(1, 3, 4, 3, 8, 32, 32)
    with torch.no_grad():
        probs = m.predict_views(views)
        assert probs.shape == (1, 10)
        torch.testing.assert_close(probs.sum(), torch.tensor(1.0))
        memory = torch.stack([m.encode(views[:, 1, j])[1] for j in range(4)], 1).mean(1)
        want = torch.stack(
            [torch.softmax(m.classify(m.encode(views[:, i, j])[0], memory), -1) for i in range(3) for j in range(4)], 1
        ).mean(1)
        torch.testing.assert_close(probs, want)
        # spatial crops other than the centre do not shape the memory
        moved = views.clone()
        moved[:, 0] = torch.randn_like(moved[:, 0])
        want = torch.stack(
            [torch.softmax(m.classify(m.encode(moved[:, i, j])[0], memory), -1) for i in range(3) for j in range(4)], 1
        ).mean(1)
        torch.testing.assert_close(m.predict_views(moved), want)
        assert not torch.allclose(m.predict_views(views, centre=0), probs)


def test_card_round_trip_and_overhead() -> None:
    m = _model()
    card = m.model_card()
    assert card.family == "cm" and card.memory is not None and card.memory.kind == "cm"
    assert card.memory.temporal_support_clips is None and card.backbone == "slow_tiny"
    again = from_card(card)
    again.load_state_dict(m.state_dict())
    x = _clips(1, 2)
    with torch.no_grad():
        torch.testing.assert_close(again.eval()(x), m(x))
    with torch.device("meta"):
        big = create_model("cm_slow_r50_8x8")
    o = big.overhead()
    assert round(o["backbone_params"] / 1e6, 1) == 32.5 and round(o["params"] / 1e6, 1) == 36.7  # Table 2c
    assert 1.01 <= o["gflops_ratio"] <= 1.04  # paper: +1-3 % FLOPs

"""CollaborativeMemory against an independent numpy implementation of eqs. 2-4 and its variants."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgemem.errors import InputError, UnsupportedError
from edgemem.models.cm import CollaborativeMemory


def _w(layer: torch.nn.Linear) -> np.ndarray:
    """W of the paper (``x @ W``) from an nn.Linear: its weight transposed, in float64."""
    return layer.weight.detach().double().numpy().T


def _b(layer: torch.nn.Linear) -> np.ndarray:
    return layer.bias.detach().double().numpy()


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def reference(cm: CollaborativeMemory, x: np.ndarray) -> np.ndarray:
    """Eqs. 2-4 (or the variants) written out clip by clip with numpy loops."""
    b, n, k, d = x.shape
    out = np.empty_like(x)
    for vid in range(b):
        clips = [x[vid, i] for i in range(n)]
        if cm.interaction == "associative":
            wq, wk, wv = _w(cm.q), _w(cm.k), _w(cm.v)
            memory = sum((c @ wk).T @ (c @ wv) for c in clips) / n  # eq. 2
            clip_mem = [(c @ wq) @ memory for c in clips]  # eq. 3
        else:
            memory = np.mean([c @ _w(cm.proj) for c in clips], axis=(0, 1))  # mean over clips and tokens
            clip_mem = [memory[None, :] for _ in clips]
        for i, c in enumerate(clips):
            if cm.infusion == "gating":
                gap = clip_mem[i].mean(axis=0)  # GAP over the tokens
                out[vid, i] = (1.0 + _sigmoid(gap @ _w(cm.o) + _b(cm.o)))[None, :] * c  # eq. 4
            else:
                out[vid, i] = clip_mem[i] @ _w(cm.o) + _b(cm.o) + c
    return out


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.mark.parametrize("interaction", ["associative", "avgpool"])
@pytest.mark.parametrize("infusion", ["gating", "residual"])
def test_matches_numpy_reference(interaction: str, infusion: str) -> None:
    torch.manual_seed(0)
    cm = CollaborativeMemory(32, reduction=4, interaction=interaction, infusion=infusion)
    with torch.no_grad():  # non-trivial bias so that the gate is not centred at 0.5
        cm.o.bias.normal_()
    x = torch.randn(2, 3, 10, 32)
    got = cm(x).detach().double().numpy()
    assert got.shape == (2, 3, 10, 32)
    assert _rel(got, reference(cm, x.double().numpy())) <= 1e-5


def test_default_is_associative_gating_ratio_4() -> None:
    cm = CollaborativeMemory(64)
    assert (cm.interaction, cm.infusion, cm.inner_dim) == ("associative", "gating", 16)
    assert cm.q.bias is None and cm.k.bias is None and cm.v.bias is None and cm.o.bias is not None
    assert tuple(cm.q.weight.shape) == (16, 64) and tuple(cm.o.weight.shape) == (64, 16)


def test_push_pop_expose_eq2_eq3_and_the_attention_form() -> None:
    torch.manual_seed(1)
    cm = CollaborativeMemory(24, reduction=3).double()
    x = torch.randn(2, 4, 6, 24, dtype=torch.float64)
    wq, wk, wv = (layer.weight.T for layer in (cm.q, cm.k, cm.v))
    memory = cm.push(x)
    assert memory.shape == (2, 8, 8)
    want = sum((x[:, i] @ wk).transpose(1, 2) @ (x[:, i] @ wv) for i in range(4)) / 4
    torch.testing.assert_close(memory, want)
    # eq. 3 equals inter-clip attention: M_n = 1/N sum_m [(X_n W_q)(X_m W_k)^T](X_m W_v)
    clip_mem = cm.pop(memory, x)
    att = sum(((x @ wq) @ (x[:, m : m + 1] @ wk).transpose(-1, -2)) @ (x[:, m : m + 1] @ wv) for m in range(4)) / 4
    torch.testing.assert_close(clip_mem, att)
    torch.testing.assert_close(cm.contribution(x).mean(dim=1), memory)
    torch.testing.assert_close(cm.read(memory, x), cm(x))


def test_no_token_scaling_by_default_and_the_option() -> None:
    torch.manual_seed(2)
    x = torch.randn(1, 2, 5, 8)
    plain = CollaborativeMemory(8, reduction=2)
    scaled = CollaborativeMemory(8, reduction=2, token_scale=True)
    scaled.load_state_dict(plain.state_dict())
    torch.testing.assert_close(scaled.push(x) * 5, plain.push(x))


def test_gradients_reach_every_weight() -> None:
    cm = CollaborativeMemory(16, reduction=4)
    cm(torch.randn(2, 3, 4, 16)).square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in cm.parameters())


def test_bad_inputs_are_clear_errors() -> None:
    cm = CollaborativeMemory(16)
    with pytest.raises(InputError, match=r"\[B, N, K, D\]"):
        cm(torch.randn(3, 4, 16))
    with pytest.raises(InputError, match="16"):
        cm(torch.randn(1, 2, 4, 8))
    with pytest.raises(InputError, match="memory"):
        cm.pop(torch.randn(1, 8, 8), torch.randn(1, 4, 16))
    with pytest.raises(UnsupportedError):
        CollaborativeMemory(10, reduction=4)
    with pytest.raises(UnsupportedError):
        CollaborativeMemory(16, interaction="maxpool")
    with pytest.raises(UnsupportedError):
        CollaborativeMemory(16, infusion="concat")


@pytest.mark.parametrize("infusion", ["residual", "gating"])
def test_video_logit_against_the_count_of_one_clip_kind(infusion: str) -> None:
    """Why residual CM cannot learn a parity of 3 cues (docs/CM.md): with r of 3 cue clips "red" and
    3 - r "blue", the residual variant's mean clip logit (GAP, then a linear head) is exactly quadratic
    in r (third finite difference 0), so it cannot alternate in sign over r = 0..3; gating's is not."""
    torch.manual_seed(0)
    d, k = 32, 6
    red, blue, others = torch.randn(k, d), torch.randn(k, d), torch.randn(2, k, d)
    third = []
    for _ in range(5):
        cm = CollaborativeMemory(d, 4, infusion=infusion).double()
        with torch.no_grad():
            for p in cm.parameters():
                p.normal_(0.0, 1.0)
        head = torch.randn(d, dtype=torch.float64)
        f = []
        for r in range(4):
            x = torch.stack([*[red] * r, *[blue] * (3 - r), *others])[None].double()
            with torch.no_grad():
                f.append(float((cm(x).mean(2) @ head).mean()))
        third.append(abs(f[3] - 3 * f[2] + 3 * f[1] - f[0]) / max(abs(v) for v in f))
    if infusion == "residual":
        assert max(third) < 1e-9
    else:
        assert min(third) > 1e-3

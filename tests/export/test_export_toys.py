"""The toy streaming model the export tests run on (``export_toys``)."""

from __future__ import annotations

import torch
from export_toys import make_toy


def test_toy_reset_empties_memory() -> None:
    m = make_toy()
    x = torch.randn(2, 3, 4, 16, 16)
    s = m.init_state(2)
    _, s = m.step(x, s)
    fresh, _ = m.step(x, m.init_state(2))
    again, _ = m.step(x, s, torch.tensor([True, False]))
    assert torch.allclose(again[0], fresh[0])
    assert not torch.allclose(again[1], fresh[1])

"""``edgemem.bench.roundrobin``: the kernel-ISA caps a run was made under are recorded, not hidden."""

from __future__ import annotations

import pytest

from edgemem.bench.roundrobin import ISA_CAPS, isa_caps


def test_isa_caps_records_only_the_caps_that_are_set(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ISA_CAPS:
        monkeypatch.delenv(name, raising=False)
    assert isa_caps() == {}
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "")  # empty: no cap
    assert isa_caps() == {"ONEDNN_MAX_CPU_ISA": "AVX2"}

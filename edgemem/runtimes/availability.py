"""Which runtimes can run here, and why not: ``edgemem runtimes [--json]``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from edgemem.errors import UnsupportedError
from edgemem.runtimes.precisions import supported_precisions
from edgemem.runtimes.registry import RUNTIMES, entry


@dataclass(frozen=True)
class Availability:
    runtime: str
    available: bool
    detail: str  # version / device when available, the reason when not
    precisions: list[str] = field(default_factory=list)  # what it really runs here (runtimes.precisions)

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def check(runtime: str) -> Availability:
    """Run ``runtime``'s probe (its registry entry); the reason when it cannot run here."""
    try:
        return Availability(runtime, True, entry(runtime).probe(), supported_precisions(runtime))
    except UnsupportedError as e:
        return Availability(runtime, False, str(e))


def availability() -> list[Availability]:
    """One entry per registered runtime, in registry order."""
    return [check(r) for r in RUNTIMES]

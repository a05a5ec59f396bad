"""The probe interface every kind implements."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from watchdog.core.results import ProbeResult


@runtime_checkable
class Probe(Protocol):
    """One configured check.

    ``run`` never raises (cancellation aside): errors, timeouts and assertion failures come back as
    results with ``Outcome.FAILED`` and a reason. A journey returns one result per step it ran; other
    kinds usually return exactly one.
    """

    name: str
    kind: str
    interval_s: float
    timeout_s: float

    async def run(self) -> Sequence[ProbeResult]: ...

    async def aclose(self) -> None:
        """Release connections held between runs."""
        ...

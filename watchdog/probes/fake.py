"""A scripted :class:`FakeProbe`, the probe contract's fake (loopback servers to probe against live in
``tests/loopback.py``: they are test helpers, not product code).

``FakeProbe`` honours the same contract as the real kinds (``tests/test_probe_contract.py``): an exception
in its script becomes a ``failed`` result with a ``Type: message`` reason, a delay longer than
``timeout_s`` becomes a ``failed`` result with a timeout reason, ``aclose`` is idempotent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import replace
from types import MappingProxyType

from watchdog.core.clock import Clock
from watchdog.core.results import Outcome, ProbeResult
from watchdog.probes._client import describe_error

ScriptItem = Outcome | ProbeResult | BaseException


class FakeProbe:
    """Returns scripted results in order, then sticks on the last item (or cycles, with ``cycle=True``).

    * an :class:`Outcome` becomes a result for this probe (reason ``"scripted <outcome>"`` unless ok),
    * a :class:`ProbeResult` is returned with ``started_at`` and ``latency_s`` from this run,
    * an exception becomes ``failed`` with the same ``Type: message`` reason a real probe gives.

    ``delay_s`` makes every run take that long (real time, bounded by ``timeout_s`` like a real probe),
    for testing timeouts and overlapping runs. ``calls`` counts runs.
    """

    def __init__(
        self,
        name: str,
        script: Sequence[ScriptItem],
        *,
        clock: Clock,
        kind: str = "fake",
        interval_s: float = 30.0,
        timeout_s: float = 10.0,
        delay_s: float = 0.0,
        cycle: bool = False,
        target: str | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> None:
        if not script:
            raise ValueError("a FakeProbe needs at least one scripted item")
        self.name = name
        self.kind = kind
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.delay_s = delay_s
        self.target = target if target is not None else f"fake://{name}"
        self.labels: Mapping[str, str] = MappingProxyType(dict(labels or {}))
        self.calls = 0
        self.closed = False
        self.close_calls = 0
        self._script = list(script)
        self._cycle = cycle
        self._clock = clock

    def _next(self) -> ScriptItem:
        index = self.calls - 1
        if self._cycle:
            return self._script[index % len(self._script)]
        return self._script[min(index, len(self._script) - 1)]

    async def run(self) -> list[ProbeResult]:
        self.calls += 1
        item = self._next()
        started_at = self._clock.now()
        started = self._clock.monotonic()
        try:
            async with asyncio.timeout(self.timeout_s):
                if self.delay_s > 0:
                    await asyncio.sleep(self.delay_s)
                if isinstance(item, BaseException):
                    raise item
        except Exception as exc:  # CancelledError is not an Exception: cancellation propagates
            return [self._result(Outcome.FAILED, describe_error(exc, self.timeout_s), started_at, started)]
        if isinstance(item, ProbeResult):
            return [replace(item, started_at=started_at, latency_s=self._clock.monotonic() - started)]
        reason = "" if item is Outcome.OK else f"scripted {item.value}"
        return [self._result(item, reason, started_at, started)]

    def _result(self, outcome: Outcome, reason: str, started_at: float, started: float) -> ProbeResult:
        return ProbeResult(
            probe=self.name,
            kind=self.kind,
            target=self.target,
            outcome=outcome,
            latency_s=self._clock.monotonic() - started,
            started_at=started_at,
            reason=reason,
            labels=self.labels,
        )

    async def aclose(self) -> None:
        self.close_calls += 1
        self.closed = True

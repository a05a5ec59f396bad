"""Results wait here between a probe run and the next store write, so one transaction carries ~1 s of
results. When the store is unreachable they stay (bounded) and are written on the next successful flush."""

from __future__ import annotations

import asyncio
import logging
import math
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import replace

from watchdog.core.results import ProbeResult
from watchdog.store.base import ResultWriter, StoreUnavailable

_log = logging.getLogger("watchdog.runtime.buffer")


class ResultBuffer:
    def __init__(
        self,
        store: ResultWriter,
        *,
        max_pending: int = 200_000,
        batch_size: int = 5_000,
        on_recorded: Callable[[list[ProbeResult]], None] | None = None,
    ) -> None:
        self._store = store
        self._pending: deque[ProbeResult] = deque()
        self._max_pending = max_pending
        self._batch_size = batch_size
        self._lock = asyncio.Lock()
        self._on_recorded = on_recorded
        self.dropped = 0
        """Results discarded because the store stayed down until the buffer filled (logged each time)."""
        self.store_ok = True
        self.last_error = ""

    def add(self, results: Iterable[ProbeResult]) -> None:
        self._pending.extend(_sanitized(r) for r in results)
        overflow = len(self._pending) - self._max_pending
        if overflow > 0:
            # Oldest first: the newest results matter most for alerting.
            for _ in range(overflow):
                self._pending.popleft()
            self.dropped += overflow
            _log.error(
                "result buffer full (%d pending, store unreachable): dropped the %d oldest results",
                self._max_pending,
                overflow,
                extra={"dropped_total": self.dropped},
            )

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def flush(self) -> int:
        """Write everything pending; returns how many were written. Keeps results on failure."""
        written = 0
        async with self._lock:
            while self._pending:
                batch = [self._pending[i] for i in range(min(self._batch_size, len(self._pending)))]
                try:
                    await self._store.record(batch)
                except ValueError as exc:
                    # The store refused the batch's content, not the connection: write what it accepts
                    # one by one and drop (loudly) only the results it rejects, or the buffer would jam.
                    written += await self._record_one_by_one(batch, exc)
                    continue
                except StoreUnavailable as exc:
                    if self.store_ok:
                        _log.error("state store unavailable, keeping %d results: %s", len(self._pending), exc)
                    self.store_ok = False
                    self.last_error = str(exc)
                    return written
                for _ in batch:
                    self._pending.popleft()
                written += len(batch)
                if not self.store_ok:
                    _log.info("state store reachable again")
                self.store_ok = True
                self.last_error = ""
                if self._on_recorded is not None:
                    self._on_recorded(batch)
        return written

    async def _record_one_by_one(self, batch: list[ProbeResult], first_error: ValueError) -> int:
        _log.error("store rejected a batch (%s); writing its results one by one", first_error)
        written = 0
        for result in batch:
            try:
                await self._store.record([result])
            except ValueError as exc:
                self.dropped += 1
                _log.error("dropped a result the store rejects: %s", exc, extra={"probe": result.probe})
            else:
                written += 1
                if self._on_recorded is not None:
                    self._on_recorded([result])
            self._pending.popleft()
        return written


def _sanitized(result: ProbeResult) -> ProbeResult:
    """NaN/inf never reach the store or a budget: drop such observations, clamp a negative latency
    (a clock step), keep the result itself."""
    finite = tuple(o for o in result.observations if math.isfinite(o.value))
    latency = result.latency_s if math.isfinite(result.latency_s) and result.latency_s >= 0 else 0.0
    if len(finite) == len(result.observations) and latency == result.latency_s:
        return result
    return replace(result, observations=finite, latency_s=latency)

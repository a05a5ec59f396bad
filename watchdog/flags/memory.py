"""In-memory FlagBackend for tests: the flag contract without a file, plus switches to make it fail."""

from __future__ import annotations

import asyncio
import math

from watchdog.core.clock import Clock, SystemClock
from watchdog.flags.base import FlagError, FlagState
from watchdog.flags.flagd_file import normalize_percent


class MemoryFlagBackend:
    """Same semantics as FlagdFileBackend (0.01-point resolution, idempotency keys remembered, read-back
    verification), with every applied change appended to ``history``.

    ``fail_writes`` makes ``set`` raise FlagError as an unreachable backend would; ``drop_writes`` makes it
    accept writes without storing them, so the read-back verification has something to catch.
    """

    def __init__(
        self,
        db_percent: float = 0.0,
        *,
        clock: Clock | None = None,
        name: str = "memory",
        updated_by: str = "initial",
        reason: str = "initial state",
    ) -> None:
        self.name = name
        self._clock: Clock = clock or SystemClock()
        self._state = FlagState(
            db_percent=normalize_percent(db_percent),
            updated_at=self._clock.now(),
            updated_by=updated_by,
            reason=reason,
        )
        self.history: list[FlagState] = []
        """Every change applied through ``set``, oldest first (no-ops are not recorded)."""
        self._applied: dict[str, float] = {}
        self._lock = asyncio.Lock()
        self.fail_writes = False
        self.drop_writes = False

    async def get(self) -> FlagState:
        return self._state

    async def set(self, db_percent: float, reason: str, updated_by: str, idempotency_key: str) -> FlagState:
        percent = normalize_percent(db_percent)
        async with self._lock:
            if idempotency_key and idempotency_key in self._applied:
                applied = self._applied[idempotency_key]
                if not math.isclose(applied, percent, abs_tol=1e-9):
                    raise FlagError(
                        f"idempotency key {idempotency_key!r} was already used for db_percent={applied}, "
                        f"refusing to reuse it for {percent}"
                    )
                return self._state
            if self.fail_writes:
                raise FlagError(f"{self.name}: write failed (fail_writes is set)")
            new_state = FlagState(
                db_percent=percent,
                updated_at=self._clock.now(),
                updated_by=updated_by,
                reason=reason,
                idempotency_key=idempotency_key,
            )
            if not self.drop_writes:
                self._state = new_state
            written = self._state
            if written != new_state:
                raise FlagError(
                    f"read-back mismatch on {self.name}: wanted db_percent={percent} "
                    f"key={idempotency_key!r}, found db_percent={written.db_percent} "
                    f"key={written.idempotency_key!r}"
                )
            if idempotency_key:
                self._applied[idempotency_key] = percent
            self.history.append(written)
            return written

"""Fault injection for the reference service's database path.

Faults hit only the DB path (and the health check's ``SELECT 1``), never the YAML path: a rollback from
DB to YAML must visibly heal the service, which is the behaviour the watchdog is built to exercise.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from watchdog.demo.database import DatabaseError, DatabaseUnavailable


@dataclass(slots=True)
class Faults:
    """Mutable on purpose: one instance is shared by the app, the ``/_faults`` endpoint and tests."""

    db_error_rate: float = 0.0
    """Share (0..1) of DB-path content queries that fail. Not applied to the health ``SELECT 1``, which
    probes connectivity; use ``db_down`` for that."""
    db_latency_ms: float = 0.0
    """Added before every database call, health check included (slow DB → degraded, > 2 s → unhealthy)."""
    db_down: bool = False
    """Every database call fails at once, like a refused connection."""
    discovery_unavailable: bool = False
    """``/api/discovery/*`` answers 503 ``{"error": "Discovery is temporarily unavailable"}``, as
    production may do deliberately."""

    def __post_init__(self) -> None:
        self.update({})

    @property
    def db_faulty(self) -> bool:
        return self.db_down or self.db_error_rate > 0 or self.db_latency_ms > 0

    def update(self, changes: Mapping[str, Any]) -> None:
        """Validate and apply ``changes`` atomically (all or nothing); ValueError names the bad field."""
        known = {f.name for f in fields(self)}
        unknown = set(changes) - known
        if unknown:
            raise ValueError(
                f"unknown fault(s): {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}"
            )
        merged = {**self.to_dict(), **changes}
        rate, latency = merged["db_error_rate"], merged["db_latency_ms"]
        for name in ("db_down", "discovery_unavailable"):
            if not isinstance(merged[name], bool):
                raise ValueError(f"{name} must be true or false")
        for name, value in (("db_error_rate", rate), ("db_latency_ms", latency)):
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ValueError(f"{name} must be a number")
        if not 0.0 <= rate <= 1.0:
            raise ValueError("db_error_rate must be within 0..1")
        if not 0.0 <= latency <= 60_000:
            raise ValueError("db_latency_ms must be within 0..60000")
        self.db_error_rate = float(rate)
        self.db_latency_ms = float(latency)
        self.db_down = merged["db_down"]
        self.discovery_unavailable = merged["discovery_unavailable"]

    def reset(self) -> None:
        self.update(Faults().to_dict())

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class FaultInjector:
    """Applies ``faults`` in front of each database call."""

    def __init__(self, faults: Faults, rng: random.Random | None = None) -> None:
        self.faults = faults
        self._rng = rng or random.Random()

    async def before_db_call(self, *, content_query: bool) -> None:
        faults = self.faults
        if faults.db_down:
            raise DatabaseUnavailable("connection refused (injected fault: db_down)")
        if faults.db_latency_ms > 0:
            await asyncio.sleep(faults.db_latency_ms / 1000.0)
        if content_query and faults.db_error_rate > 0 and self._rng.random() < faults.db_error_rate:
            # The message real outages produced on staging (see target-system.md).
            raise DatabaseError('relation "scenarios" does not exist (injected fault: db_error_rate)')

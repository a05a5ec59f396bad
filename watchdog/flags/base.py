"""The flag contract the watchdog reads and flips (see README "The flag contract").

The flag (default key ``content-data-source``) has variants ``yaml`` and ``db``; ``db_percent`` is the
share of traffic served from the database (0 = all YAML, the rollback state; 5 = the canary). Every
change records why, by whom and when, and an idempotency key so a retried rollback is not applied twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class FlagError(Exception):
    """The backend could not be read or written, or the read-back did not match."""


@dataclass(frozen=True, slots=True)
class FlagState:
    db_percent: float
    """0..100: share of requests whose content comes from the database."""
    updated_at: float = 0.0
    updated_by: str = ""
    reason: str = ""
    idempotency_key: str = ""

    def __post_init__(self) -> None:
        if not 0.0 <= self.db_percent <= 100.0:
            raise ValueError(f"db_percent must be within 0..100, got {self.db_percent}")


class FlagBackend(Protocol):
    name: str

    async def get(self) -> FlagState: ...

    async def set(self, db_percent: float, reason: str, updated_by: str, idempotency_key: str) -> FlagState:
        """Write the new split, then read it back; raise FlagError unless the read-back matches.
        Setting again with the same idempotency key and value is a no-op that returns the current state."""
        ...

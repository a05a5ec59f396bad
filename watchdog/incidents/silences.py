"""Silences (made at run time: a button, the CLI, the API) and maintenance windows (declared in config).

Both match an alert by its *identity labels*: ``alertname`` (the alert's name) plus its labels; a matcher
is a subset match (every given label equal), ``{}`` matches every alert. Silences are ``silence`` records
in the store, so every replica sees them and they outlive restarts.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from watchdog.config.alerts import MaintenanceWindow
from watchdog.core.labels import labels_match
from watchdog.store.base import RecordStore

SILENCE_RECORD = "silence"
MAX_SILENCE_S = 30 * 86400.0
"""A silence longer than this is refused: a forgotten silence hides real pages."""


def identity(alert: str, labels: Mapping[str, str]) -> dict[str, str]:
    return {**labels, "alertname": alert}


@dataclass(frozen=True, slots=True)
class Silence:
    id: str
    matchers: Mapping[str, str]
    starts_at: float
    ends_at: float
    author: str
    reason: str
    created_at: float

    def active(self, now: float) -> bool:
        return self.starts_at <= now < self.ends_at

    def matches(self, alert_identity: Mapping[str, str]) -> bool:
        return labels_match(alert_identity, self.matchers)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "matchers": dict(self.matchers),
            "starts_at": self.starts_at,
            "ends_at": self.ends_at,
            "author": self.author,
            "reason": self.reason,
            "created_at": self.created_at,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Silence:
        return cls(
            id=str(d["id"]),
            matchers={str(k): str(v) for k, v in dict(d.get("matchers") or {}).items()},
            starts_at=float(d["starts_at"]),
            ends_at=float(d["ends_at"]),
            author=str(d.get("author", "")),
            reason=str(d.get("reason", "")),
            created_at=float(d.get("created_at", d["starts_at"])),
        )


@dataclass(frozen=True, slots=True)
class Mute:
    """Why an alert is not paged now."""

    kind: str
    """``silence``, ``maintenance`` or ``inhibited``."""
    name: str
    """The silence id, the window's name, or the inhibiting alert."""
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "name": self.name, "reason": self.reason}

    def describe(self) -> str:
        what = {"silence": "silence", "maintenance": "maintenance window", "inhibited": "inhibited by"}
        return f"{what.get(self.kind, self.kind)} {self.name}" + (f" ({self.reason})" if self.reason else "")


class SilenceBook:
    def __init__(self, store: RecordStore) -> None:
        self._store = store

    async def add(
        self,
        matchers: Mapping[str, str],
        *,
        starts_at: float,
        ends_at: float,
        author: str,
        reason: str,
        now: float,
    ) -> Silence:
        """Raises ValueError for a silence that ends before it starts, or lasts over 30 days."""
        if ends_at <= starts_at:
            raise ValueError("a silence must end after it starts")
        if ends_at - starts_at > MAX_SILENCE_S:
            raise ValueError("a silence may last at most 30 days")
        if not author.strip():
            raise ValueError("a silence needs an author")
        silence = Silence(
            id=secrets.token_hex(6),
            matchers={str(k): str(v) for k, v in matchers.items()},
            starts_at=starts_at,
            ends_at=ends_at,
            author=author,
            reason=reason,
            created_at=now,
        )
        await self._store.put_record(SILENCE_RECORD, silence.id, silence.to_dict(), now)
        return silence

    async def remove(self, silence_id: str) -> bool:
        return await self._store.delete_record(SILENCE_RECORD, silence_id)

    async def get(self, silence_id: str) -> Silence | None:
        value = await self._store.get_record(SILENCE_RECORD, silence_id)
        return None if value is None else Silence.from_dict(value)

    async def all(self) -> list[Silence]:
        return [Silence.from_dict(v) for _, v in await self._store.list_records(SILENCE_RECORD)]

    async def prune(self, now: float, keep_s: float = 7 * 86400.0) -> int:
        """Forget silences that ended over ``keep_s`` ago."""
        removed = 0
        for silence in await self.all():
            if silence.ends_at + keep_s < now and await self.remove(silence.id):
                removed += 1
        return removed


def active_window(windows: Iterable[MaintenanceWindow], now: float) -> list[MaintenanceWindow]:
    return [w for w in windows if w.start.timestamp() <= now < w.end.timestamp()]


def mute_for(
    alert_identity: Mapping[str, str],
    silences: Sequence[Silence],
    windows: Sequence[MaintenanceWindow],
    now: float,
) -> Mute | None:
    """The first silence or maintenance window muting this alert now, if any."""
    for silence in silences:
        if silence.active(now) and silence.matches(alert_identity):
            return Mute("silence", silence.id, f"by {silence.author}: {silence.reason}".rstrip(": "))
    for window in active_window(windows, now):
        if labels_match(alert_identity, window.match):
            return Mute("maintenance", window.name, window.reason)
    return None

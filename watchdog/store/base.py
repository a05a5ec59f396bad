"""The state store contract. SQLite (embedded default), PostgreSQL (psycopg 3) and an in-memory fake
implement it and run through the same contract tests (tests/test_store_contract.py).

Time is in epoch seconds; a *minute* is ``int(epoch_seconds // 60)``. All aggregate columns are additive so
two daemons writing the same minute merge by addition (UPSERT ... count = count + excluded.count).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from watchdog.core.results import ProbeResult

# Fixed latency bucket upper edges (seconds), the same on /metrics. They include the seed's thresholds
# (50 ms DB query, 200 ms API) so "ratio under threshold" SLIs are exact there. A store may be built with
# extra edges (every latency threshold named in the config); +Inf is implied.
LATENCY_BUCKETS_S: tuple[float, ...] = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.25,
    0.3,
    0.4,
    0.5,
    0.75,
    1.0,
    1.5,
    2.0,
    2.5,
    5.0,
    10.0,
    30.0,
)


class StoreUnavailable(Exception):
    """The store could not be reached or written; the caller keeps its data and retries."""


@dataclass(frozen=True, slots=True)
class MinuteAggregate:
    series: str
    """``watchdog.core.results.series_key(probe, labels)``."""
    probe: str
    labels: Mapping[str, str]
    minute: int
    count: int
    failures: int
    degraded: int
    latency_sum_s: float
    buckets: Mapping[float, int]
    """Non-cumulative count per upper edge (``math.inf`` for the overflow bucket), ascending. Sparse: only
    non-empty buckets are present (use ``.get(le, 0)``); every result is counted, failed ones included, so
    ``sum(buckets.values()) == count``."""

    def count_at_or_under(self, threshold_s: float) -> int:
        """Events with latency <= threshold; exact when the threshold is a bucket edge, else a lower bound."""
        return sum(n for le, n in self.buckets.items() if le <= threshold_s)


@dataclass(frozen=True, slots=True)
class ObservationMinute:
    series: str
    """``series_key(probe, {"__name__": name, **labels})``."""
    probe: str
    name: str
    labels: Mapping[str, str]
    minute: int
    count: int
    sum: float
    min: float
    max: float
    last: float
    last_at: float


@dataclass(frozen=True, slots=True)
class OutboxItem:
    id: int
    topic: str
    """What kind of work: "notify", "flag", ..."""
    payload: Mapping[str, Any]
    dedup_key: str
    attempts: int
    created_at: float
    available_at: float


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """An outbox item to add together with an incident transition (same transaction)."""

    topic: str
    payload: Mapping[str, Any]
    dedup_key: str
    delay_s: float = 0.0


@dataclass(frozen=True, slots=True)
class Lease:
    name: str
    holder: str
    expires_at: float


@dataclass(frozen=True, slots=True)
class Incident:
    key: str
    """Dedup key: alert name plus its labels."""
    state: str
    version: int
    data: Mapping[str, Any] = field(default_factory=dict)
    updated_at: float = 0.0


# -- roles: each consumer depends on the narrowest one it needs ------------------------------------------


class ResultWriter(Protocol):
    async def record(self, results: Sequence[ProbeResult]) -> None:
        """Add results atomically: per-minute aggregates, sketch bins, observation minutes, the latest
        result per series and the recent raw results. All or nothing for the batch."""
        ...


class ResultReader(Protocol):
    async def minutes(
        self,
        start_minute: int,
        end_minute: int,
        probe: str | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> list[MinuteAggregate]:
        """Aggregates with start_minute <= minute < end_minute, optionally for one probe, and only series
        whose labels include every given label (subset match). Ordered by (minute, series)."""
        ...

    async def observation_minutes(
        self,
        start_minute: int,
        end_minute: int,
        probe: str | None = None,
        name: str | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> list[ObservationMinute]: ...

    async def latency_quantiles(
        self,
        start_minute: int,
        end_minute: int,
        quantiles: Sequence[float],
        probe: str | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> dict[float, float | None]:
        """Quantiles of latency (seconds) over the range from the merged DDSketch bins (1 % relative
        accuracy); None where there is no data."""
        ...

    async def latest(self, probe: str | None = None) -> list[ProbeResult]:
        """The most recent result of every series (of one probe)."""
        ...

    async def recent(self, probe: str | None = None, limit: int = 100) -> list[ProbeResult]:
        """Raw results, newest first."""
        ...


class LeaseStore(Protocol):
    """Coordination between replicas."""

    async def acquire_lease(self, name: str, holder: str, ttl_s: float, now: float) -> Lease | None:
        """Take or renew the named lease; None when another holder has an unexpired one."""
        ...

    async def release_lease(self, name: str, holder: str) -> None: ...


class IncidentStore(Protocol):
    async def get_incident(self, key: str) -> Incident | None: ...

    async def list_incidents(self, states: Sequence[str] | None = None) -> list[Incident]: ...

    async def transition_incident(
        self,
        key: str,
        expected_version: int | None,
        new_state: str,
        data: Mapping[str, Any],
        now: float,
        outbox: Sequence[OutboxEntry] = (),
    ) -> Incident | None:
        """Compare-and-set. ``expected_version`` None means "create; fail if it exists". Returns the new
        incident (version + 1) or None when another writer got there first.

        ``outbox`` items are enqueued (deduplicated, as ``enqueue``) in the same transaction, only when the
        transition wins: a crash can never leave a transition without its pages, or pages without it."""
        ...


class OutboxStore(Protocol):
    """Work to do exactly once (pages, later flag flips): enqueued deduplicated, claimed before it is done."""

    async def enqueue(
        self, topic: str, payload: Mapping[str, Any], dedup_key: str, now: float, delay_s: float = 0.0
    ) -> bool:
        """Add an outbox item unless one with the same dedup_key exists (done or not); True if added."""
        ...

    async def claim(
        self, topic: str, worker: str, limit: int, lease_s: float, now: float
    ) -> list[OutboxItem]:
        """Claim available items atomically (no two workers get the same item while its claim lasts)."""
        ...

    async def complete(self, item_id: int, worker: str, now: float) -> None: ...

    async def retry_later(self, item_id: int, worker: str, error: str, retry_at: float) -> None: ...

    async def release_claims(self, worker: str) -> int:
        """Give back every unfinished item ``worker`` holds (a restarted worker's claims from before it
        died), so they go out now instead of when the claims expire. Returns how many."""
        ...


class RecordStore(Protocol):
    """Small named JSON records by kind: silences, Slack thread references. Last write wins."""

    async def put_record(self, kind: str, key: str, value: Mapping[str, Any], now: float) -> None: ...

    async def get_record(self, kind: str, key: str) -> dict[str, Any] | None: ...

    async def list_records(self, kind: str) -> list[tuple[str, dict[str, Any]]]:
        """Every record of ``kind`` as (key, value), ordered by key."""
        ...

    async def delete_record(self, kind: str, key: str) -> bool:
        """True if it existed."""
        ...


class StateStore(ResultWriter, ResultReader, LeaseStore, IncidentStore, OutboxStore, RecordStore, Protocol):
    """Everything the daemon persists: every role above plus the lifecycle. Every method may raise
    ``StoreUnavailable``."""

    async def open(self) -> None:
        """Connect and create/migrate the schema (idempotent)."""
        ...

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raise StoreUnavailable unless the store answers now (used by /readyz)."""
        ...

    async def prune(self, now: float) -> int:
        """Apply retention (raw results and minute aggregates); returns rows removed."""
        ...

"""In-memory StateStore: the fake for unit tests of other components, with the real semantics.

Every method body runs without awaiting, so on one event loop each call is atomic, like a transaction.
``sibling()`` gives a second store over the same data, to test two replicas racing for a lease or an
incident; ``set_unavailable()`` makes every call raise ``StoreUnavailable`` to test the degraded paths.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from watchdog.core.labels import labels_match
from watchdog.core.results import ProbeResult
from watchdog.store._common import (
    DEFAULT_MINUTE_RETENTION_S,
    DEFAULT_RAW_RETENTION_S,
    OBSERVATION_SERIES,
    RESULT_SERIES,
    AggDelta,
    ObsDelta,
    SeriesInfo,
    aggregate,
    check_args_positive,
    dumps,
    incident,
    make_minute_aggregate,
    make_observation_minute,
    minute_of,
    normalize_edges,
    quantiles_from_bins,
    result_from_json,
    result_to_json,
)
from watchdog.store.base import (
    LATENCY_BUCKETS_S,
    Incident,
    Lease,
    MinuteAggregate,
    ObservationMinute,
    OutboxEntry,
    OutboxItem,
    StoreUnavailable,
)


@dataclass(slots=True)
class _OutboxRow:
    id: int
    topic: str
    payload: str
    dedup_key: str
    attempts: int
    created_at: float
    available_at: float
    claimed_by: str | None = None
    claimed_until: float | None = None
    done_at: float | None = None
    last_error: str | None = None


@dataclass(slots=True)
class _RawRow:
    seq: int
    probe: str
    started_at: float
    result: str


@dataclass
class _Data:
    """Everything a database would hold; shared between sibling stores."""

    series: dict[tuple[str, str], SeriesInfo] = field(default_factory=dict)
    aggs: dict[tuple[str, int], AggDelta] = field(default_factory=dict)
    obs: dict[tuple[str, int], ObsDelta] = field(default_factory=dict)
    latest: dict[str, tuple[float, str]] = field(default_factory=dict)
    raw: list[_RawRow] = field(default_factory=list)
    raw_seq: int = 0
    outbox: dict[int, _OutboxRow] = field(default_factory=dict)
    outbox_keys: set[str] = field(default_factory=set)
    outbox_seq: int = 0
    incidents: dict[str, tuple[str, int, str, float]] = field(default_factory=dict)
    leases: dict[str, Lease] = field(default_factory=dict)
    records: dict[tuple[str, str], str] = field(default_factory=dict)


class MemoryStore:
    def __init__(
        self,
        *,
        latency_buckets: Iterable[float] = LATENCY_BUCKETS_S,
        raw_retention_s: float = DEFAULT_RAW_RETENTION_S,
        minute_retention_s: float = DEFAULT_MINUTE_RETENTION_S,
        _data: _Data | None = None,
    ) -> None:
        check_args_positive(raw_retention_s=raw_retention_s, minute_retention_s=minute_retention_s)
        self._edges = normalize_edges(latency_buckets)
        self._raw_retention_s = raw_retention_s
        self._minute_retention_s = minute_retention_s
        self._data = _data if _data is not None else _Data()
        self._unavailable: str | None = None
        self._closed = False

    def sibling(self) -> MemoryStore:
        """Another store (another "replica") over the same data."""
        return MemoryStore(
            latency_buckets=self._edges,
            raw_retention_s=self._raw_retention_s,
            minute_retention_s=self._minute_retention_s,
            _data=self._data,
        )

    def set_unavailable(self, message: str | None = "memory store set unavailable") -> None:
        """Make every call raise StoreUnavailable(message); None restores service."""
        self._unavailable = message

    def _check(self) -> None:
        if self._unavailable is not None:
            raise StoreUnavailable(self._unavailable)
        if self._closed:
            raise StoreUnavailable("memory store is closed")

    async def open(self) -> None:
        # Usable without open() (convenient in unit tests); open() after close() reopens, like the others.
        self._closed = False
        self._check()

    async def close(self) -> None:
        self._closed = True

    async def ping(self) -> None:
        self._check()

    # -- probe results ---------------------------------------------------------------------------
    async def record(self, results: Sequence[ProbeResult]) -> None:
        self._check()
        batch = aggregate(results, self._edges)
        raw = [(r.probe, r.started_at, result_to_json(r)) for r in batch.raw]
        latest = {k: (r.started_at, result_to_json(r)) for k, r in batch.latest.items()}
        d = self._data
        for sk, info in batch.series.items():
            d.series.setdefault(sk, info)
        for key, delta in batch.aggs.items():
            agg = d.aggs.setdefault(key, AggDelta())
            agg.count += delta.count
            agg.failures += delta.failures
            agg.degraded += delta.degraded
            agg.latency_sum_s += delta.latency_sum_s
            for le, n in delta.buckets.items():
                agg.buckets[le] = agg.buckets.get(le, 0) + n
            for k, n in delta.sketch.items():
                agg.sketch[k] = agg.sketch.get(k, 0) + n
        for key, od in batch.obs.items():
            have = d.obs.get(key)
            if have is None:
                d.obs[key] = ObsDelta(od.count, od.sum, od.min, od.max, od.last, od.last_at)
            else:
                have.merge(od)
        for skey, (started_at, text) in latest.items():
            prev = d.latest.get(skey)
            if prev is None or started_at >= prev[0]:
                d.latest[skey] = (started_at, text)
        for probe, started_at, text in raw:
            d.raw_seq += 1
            d.raw.append(_RawRow(d.raw_seq, probe, started_at, text))

    def _series(
        self, kind: str, probe: str | None, name: str | None, labels: Mapping[str, str] | None
    ) -> dict[str, SeriesInfo]:
        # Fresh SeriesInfo copies: results share their series' labels dict, never the stored one.
        return {
            info.key: SeriesInfo(info.kind, info.key, info.probe, info.name, dict(info.labels))
            for (k, _), info in self._data.series.items()
            if k == kind
            and (probe is None or info.probe == probe)
            and (name is None or info.name == name)
            and labels_match(info.labels, labels)
        }

    async def minutes(
        self,
        start_minute: int,
        end_minute: int,
        probe: str | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> list[MinuteAggregate]:
        self._check()
        wanted = self._series(RESULT_SERIES, probe, None, labels)
        rows = [
            make_minute_aggregate(wanted[skey], minute, agg, dict(sorted(agg.buckets.items())))
            for (skey, minute), agg in self._data.aggs.items()
            if skey in wanted and start_minute <= minute < end_minute
        ]
        rows.sort(key=lambda a: (a.minute, a.series))
        return rows

    async def observation_minutes(
        self,
        start_minute: int,
        end_minute: int,
        probe: str | None = None,
        name: str | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> list[ObservationMinute]:
        self._check()
        wanted = self._series(OBSERVATION_SERIES, probe, name, labels)
        rows = [
            make_observation_minute(wanted[skey], minute, od)
            for (skey, minute), od in self._data.obs.items()
            if skey in wanted and start_minute <= minute < end_minute
        ]
        rows.sort(key=lambda o: (o.minute, o.series))
        return rows

    async def latency_quantiles(
        self,
        start_minute: int,
        end_minute: int,
        quantiles: Sequence[float],
        probe: str | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> dict[float, float | None]:
        self._check()
        wanted = self._series(RESULT_SERIES, probe, None, labels)
        bins: dict[int, int] = {}
        for (skey, minute), agg in self._data.aggs.items():
            if skey in wanted and start_minute <= minute < end_minute:
                for k, n in agg.sketch.items():
                    bins[k] = bins.get(k, 0) + n
        return quantiles_from_bins(bins, quantiles)

    async def latest(self, probe: str | None = None) -> list[ProbeResult]:
        self._check()
        # Ordered by series key, like the SQL stores.
        out = [result_from_json(text) for _, (_, text) in sorted(self._data.latest.items())]
        return [r for r in out if probe is None or r.probe == probe]

    async def recent(self, probe: str | None = None, limit: int = 100) -> list[ProbeResult]:
        self._check()
        rows = [row for row in self._data.raw if probe is None or row.probe == probe]
        rows.sort(key=lambda row: (row.started_at, row.seq), reverse=True)
        return [result_from_json(row.result) for row in rows[: max(0, limit)]]

    async def prune(self, now: float) -> int:
        self._check()
        d = self._data
        raw_cutoff = now - self._raw_retention_s
        minute_cutoff = minute_of(now - self._minute_retention_s)
        before = len(d.raw)
        d.raw = [row for row in d.raw if row.started_at >= raw_cutoff]
        removed = before - len(d.raw)
        # Count rows as a database would: one per aggregate, bucket, sketch bin and observation minute.
        for key in [k for k in d.aggs if k[1] < minute_cutoff]:
            agg = d.aggs.pop(key)
            removed += 1 + len(agg.buckets) + len(agg.sketch)
        for key in [k for k in d.obs if k[1] < minute_cutoff]:
            del d.obs[key]
            removed += 1
        return removed

    # -- coordination ----------------------------------------------------------------------------
    async def acquire_lease(self, name: str, holder: str, ttl_s: float, now: float) -> Lease | None:
        self._check()
        check_args_positive(ttl_s=ttl_s)
        cur = self._data.leases.get(name)
        if cur is not None and cur.holder != holder and cur.expires_at > now:
            return None
        lease = Lease(name=name, holder=holder, expires_at=now + ttl_s)
        self._data.leases[name] = lease
        return lease

    async def release_lease(self, name: str, holder: str) -> None:
        self._check()
        cur = self._data.leases.get(name)
        if cur is not None and cur.holder == holder:
            del self._data.leases[name]

    async def get_incident(self, key: str) -> Incident | None:
        self._check()
        row = self._data.incidents.get(key)
        return None if row is None else incident(key, row[0], row[1], json.loads(row[2]), row[3])

    async def list_incidents(self, states: Sequence[str] | None = None) -> list[Incident]:
        self._check()
        return [
            incident(key, state, version, json.loads(data), updated_at)
            for key, (state, version, data, updated_at) in sorted(self._data.incidents.items())
            if states is None or state in states
        ]

    async def transition_incident(
        self,
        key: str,
        expected_version: int | None,
        new_state: str,
        data: Mapping[str, Any],
        now: float,
        outbox: Sequence[OutboxEntry] = (),
    ) -> Incident | None:
        self._check()
        text = dumps(dict(data))
        cur = self._data.incidents.get(key)
        if expected_version is None:
            if cur is not None:
                return None
            version = 1
        else:
            if cur is None or cur[1] != expected_version:
                return None
            version = expected_version + 1
        self._data.incidents[key] = (new_state, version, text, now)
        for entry in outbox:
            self._add(entry.topic, dumps(dict(entry.payload)), entry.dedup_key, now, entry.delay_s)
        return incident(key, new_state, version, json.loads(text), now)

    async def enqueue(
        self, topic: str, payload: Mapping[str, Any], dedup_key: str, now: float, delay_s: float = 0.0
    ) -> bool:
        self._check()
        return self._add(topic, dumps(dict(payload)), dedup_key, now, delay_s)

    def _add(self, topic: str, text: str, dedup_key: str, now: float, delay_s: float) -> bool:
        d = self._data
        if dedup_key in d.outbox_keys:
            return False
        d.outbox_seq += 1
        d.outbox[d.outbox_seq] = _OutboxRow(d.outbox_seq, topic, text, dedup_key, 0, now, now + delay_s)
        d.outbox_keys.add(dedup_key)
        return True

    async def claim(
        self, topic: str, worker: str, limit: int, lease_s: float, now: float
    ) -> list[OutboxItem]:
        self._check()
        check_args_positive(lease_s=lease_s)
        ready = sorted(
            (
                row
                for row in self._data.outbox.values()
                if row.topic == topic
                and row.done_at is None
                and row.available_at <= now
                and (row.claimed_until is None or row.claimed_until <= now)
            ),
            key=lambda row: (row.available_at, row.id),
        )[: max(0, limit)]
        out: list[OutboxItem] = []
        for row in ready:
            row.claimed_by, row.claimed_until = worker, now + lease_s
            row.attempts += 1
            out.append(
                OutboxItem(
                    id=row.id,
                    topic=row.topic,
                    payload=json.loads(row.payload),
                    dedup_key=row.dedup_key,
                    attempts=row.attempts,
                    created_at=row.created_at,
                    available_at=row.available_at,
                )
            )
        return out

    async def complete(self, item_id: int, worker: str, now: float) -> None:
        self._check()
        row = self._data.outbox.get(item_id)
        if row is not None and row.claimed_by == worker and row.done_at is None:
            row.done_at = now
            row.claimed_until = None

    async def retry_later(self, item_id: int, worker: str, error: str, retry_at: float) -> None:
        self._check()
        row = self._data.outbox.get(item_id)
        if row is not None and row.claimed_by == worker and row.done_at is None:
            row.claimed_by, row.claimed_until = None, None
            row.available_at = retry_at
            row.last_error = error

    async def release_claims(self, worker: str) -> int:
        self._check()
        released = 0
        for row in self._data.outbox.values():
            if row.claimed_by == worker and row.done_at is None:
                row.claimed_by = None
                row.claimed_until = None
                released += 1
        return released

    async def put_record(self, kind: str, key: str, value: Mapping[str, Any], now: float) -> None:
        self._check()
        self._data.records[(kind, key)] = dumps(dict(value))

    async def get_record(self, kind: str, key: str) -> dict[str, Any] | None:
        self._check()
        text = self._data.records.get((kind, key))
        return None if text is None else dict(json.loads(text))

    async def list_records(self, kind: str) -> list[tuple[str, dict[str, Any]]]:
        self._check()
        return [(k, dict(json.loads(v))) for (rk, k), v in sorted(self._data.records.items()) if rk == kind]

    async def delete_record(self, kind: str, key: str) -> bool:
        self._check()
        return self._data.records.pop((kind, key), None) is not None

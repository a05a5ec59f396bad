"""``SimStore``: the in-memory store with indexes, so a simulated day costs seconds.

``MemoryStore`` answers ``minutes()`` and ``observation_minutes()`` by scanning every aggregate it holds, and
``recent()`` by decoding and sorting every raw result it holds: fine for unit tests, but the SLO engine reads
the last three minutes and the probe alerts the last 50 results on every evaluation, so over a simulated day
(17,280 evaluations at 5 s) those scans would be nearly all the time. This subclass keeps the minute
aggregates, series and latest results exactly as ``MemoryStore`` does (same ``aggregate()`` batch, same
merge), keeps raw results as objects in per-probe lists in start order instead of JSON rows, and indexes the
series present in each minute. Its answers are ``MemoryStore``'s (``tests/test_simulate.py`` compares them);
incidents, the outbox and records are ``MemoryStore``'s own.
"""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Iterable, Mapping, Sequence

from watchdog.core.results import ProbeResult
from watchdog.store._common import (
    OBSERVATION_SERIES,
    RESULT_SERIES,
    AggDelta,
    ObsDelta,
    SeriesInfo,
    aggregate,
    make_minute_aggregate,
    make_observation_minute,
    minute_of,
    result_to_json,
)
from watchdog.store.base import LATENCY_BUCKETS_S, MinuteAggregate, ObservationMinute
from watchdog.store.memory import MemoryStore

_Raw = tuple[float, int, ProbeResult]


class SimStore(MemoryStore):
    def __init__(
        self,
        *,
        latency_buckets: Iterable[float] = LATENCY_BUCKETS_S,
        raw_retention_s: float = 6 * 3600.0,
        minute_retention_s: float = 35 * 86400.0,
    ) -> None:
        super().__init__(
            latency_buckets=latency_buckets,
            raw_retention_s=raw_retention_s,
            minute_retention_s=minute_retention_s,
        )
        self._minute_index: dict[str, dict[int, set[str]]] = {RESULT_SERIES: {}, OBSERVATION_SERIES: {}}
        self._raw: dict[str, list[_Raw]] = {}
        self._seq = 0
        self._wanted: dict[
            tuple[str, str | None, str | None, tuple[tuple[str, str], ...]], dict[str, SeriesInfo]
        ] = {}
        self._series_seen = 0

    async def record(self, results: Sequence[ProbeResult]) -> None:
        """``MemoryStore.record`` (one ``aggregate()`` batch, all or nothing), raw results kept as objects."""
        self._check()
        batch = aggregate(results, self._edges)
        d = self._data
        for sk, info in batch.series.items():
            d.series.setdefault(sk, info)
        index = self._minute_index
        for key, delta in batch.aggs.items():
            agg = d.aggs.get(key)
            if agg is None:
                agg = d.aggs[key] = AggDelta()
                index[RESULT_SERIES].setdefault(key[1], set()).add(key[0])
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
                index[OBSERVATION_SERIES].setdefault(key[1], set()).add(key[0])
            else:
                have.merge(od)
        for skey, r in batch.latest.items():
            prev = d.latest.get(skey)
            if prev is None or r.started_at >= prev[0]:
                d.latest[skey] = (r.started_at, result_to_json(r))
        for r in batch.raw:
            self._seq += 1
            kept = self._raw.setdefault(r.probe, [])
            item = (r.started_at, self._seq, r)
            if not kept or kept[-1][0] <= r.started_at:
                kept.append(item)
            else:
                bisect.insort(kept, item, key=lambda x: (x[0], x[1]))

    def _series(
        self, kind: str, probe: str | None, name: str | None, labels: Mapping[str, str] | None
    ) -> dict[str, SeriesInfo]:
        """MemoryStore's selection, remembered until a new series appears (the engine asks every tick)."""
        if len(self._data.series) != self._series_seen:
            self._wanted.clear()
            self._series_seen = len(self._data.series)
        key = (kind, probe, name, tuple(sorted((labels or {}).items())))
        found = self._wanted.get(key)
        if found is None:
            found = self._wanted[key] = super()._series(kind, probe, name, labels)
        return found

    async def minutes(
        self,
        start_minute: int,
        end_minute: int,
        probe: str | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> list[MinuteAggregate]:
        self._check()
        wanted = self._series(RESULT_SERIES, probe, None, labels)
        aggs = self._data.aggs
        rows: list[MinuteAggregate] = []
        index = self._minute_index[RESULT_SERIES]
        for minute in self._range(index, start_minute, end_minute):
            for skey in sorted(index[minute]):
                info = wanted.get(skey)
                agg = aggs.get((skey, minute))
                if info is not None and agg is not None:
                    rows.append(make_minute_aggregate(info, minute, agg, dict(sorted(agg.buckets.items()))))
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
        obs = self._data.obs
        rows: list[ObservationMinute] = []
        index = self._minute_index[OBSERVATION_SERIES]
        for minute in self._range(index, start_minute, end_minute):
            for skey in sorted(index[minute]):
                info = wanted.get(skey)
                od = obs.get((skey, minute))
                if info is not None and od is not None:
                    rows.append(make_observation_minute(info, minute, od))
        return rows

    @staticmethod
    def _range(index: Mapping[int, object], start: int, end: int) -> Iterable[int]:
        if end - start <= len(index):
            return (m for m in range(start, end) if m in index)
        return sorted(m for m in index if start <= m < end)

    async def recent(self, probe: str | None = None, limit: int = 100) -> list[ProbeResult]:
        self._check()
        limit = max(0, limit)
        if probe is not None:
            return [r for _, _, r in reversed(self._raw.get(probe, [])[-limit:])] if limit else []
        newest = heapq.merge(
            *(reversed(kept) for kept in self._raw.values()), key=lambda x: (x[0], x[1]), reverse=True
        )
        return [r for _, (_, _, r) in zip(range(limit), newest, strict=False)]

    async def prune(self, now: float) -> int:
        """MemoryStore's retention (raw results, minute aggregates, observation minutes), through the
        indexes; rows counted as MemoryStore counts them."""
        self._check()
        removed = 0
        raw_cutoff = now - self._raw_retention_s
        for probe, kept in list(self._raw.items()):
            cut = bisect.bisect_left(kept, raw_cutoff, key=lambda x: x[0])
            removed += cut
            del kept[:cut]
            if not kept:
                del self._raw[probe]
        minute_cutoff = minute_of(now - self._minute_retention_s)
        d = self._data
        for kind, index in self._minute_index.items():
            for minute in sorted(m for m in index if m < minute_cutoff):
                for skey in index.pop(minute):
                    if kind == RESULT_SERIES:
                        agg = d.aggs.pop((skey, minute))
                        removed += 1 + len(agg.buckets) + len(agg.sketch)
                    else:
                        del d.obs[(skey, minute)]
                        removed += 1
        return removed

"""Backend-independent pieces: batch pre-aggregation, bucket edges, sketch keys, quantiles, JSON codecs.

Every backend turns a ``record()`` batch into the same ``Batch`` first, so the three stores agree exactly on
what a minute holds; the SQL stores then only add the deltas with UPSERTs.
"""

from __future__ import annotations

import bisect
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ddsketch.mapping import LogarithmicMapping

from watchdog.core.labels import labels_match
from watchdog.core.results import Outcome, ProbeResult, series_key
from watchdog.store.base import LATENCY_BUCKETS_S, Incident, MinuteAggregate, ObservationMinute

RELATIVE_ACCURACY = 0.01
# The same mapping everywhere: bins written by one daemon must mean the same to another.
MAPPING = LogarithmicMapping(RELATIVE_ACCURACY)
# Bin for latencies too small for the mapping (0 s). Far below any real key (1 ns maps to about -1036).
ZERO_KEY = -(2**31)

RESULT_SERIES = "r"
OBSERVATION_SERIES = "o"

DEFAULT_RAW_RETENTION_S = 2 * 86_400.0
DEFAULT_MINUTE_RETENTION_S = 35 * 86_400.0


def minute_of(epoch_s: float) -> int:
    return int(epoch_s // 60)


def normalize_edges(edges: Iterable[float] = LATENCY_BUCKETS_S) -> tuple[float, ...]:
    """Sorted unique finite positive edges plus +Inf."""
    finite = sorted({float(e) for e in edges if not math.isinf(e)})
    for e in finite:
        if not (e > 0 and math.isfinite(e)):
            raise ValueError(f"latency bucket edges must be positive and finite, got {e!r}")
    return (*finite, math.inf)


def bucket_of(edges: Sequence[float], latency_s: float) -> float:
    """Upper edge of the bucket holding ``latency_s`` (le semantics: latency <= edge)."""
    return edges[bisect.bisect_left(edges, latency_s)]


def sketch_key(latency_s: float) -> int:
    if latency_s <= MAPPING.min_possible:
        return ZERO_KEY
    return int(MAPPING.key(latency_s))


def sketch_value(key: int) -> float:
    return 0.0 if key == ZERO_KEY else float(MAPPING.value(key))


def quantiles_from_bins(bins: Mapping[int, int], quantiles: Sequence[float]) -> dict[float, float | None]:
    """Same rule as ``ddsketch.DDSketch.get_quantile_value`` (rank = q * (n - 1), lower key), computed on
    merged bins without materialising a sketch."""
    for q in quantiles:
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"quantile must be within [0, 1], got {q!r}")
    items = sorted((k, n) for k, n in bins.items() if n > 0)
    total = sum(n for _, n in items)
    if total == 0:
        return {q: None for q in quantiles}
    out: dict[float, float | None] = {}
    for q in quantiles:
        rank = q * (total - 1)
        running = 0
        value = sketch_value(items[-1][0])
        for key, n in items:
            running += n
            if running > rank:
                value = sketch_value(key)
                break
        out[q] = value
    return out


def check_range(start_minute: int, end_minute: int) -> bool:
    """False when the half-open range is empty (nothing to read)."""
    return end_minute > start_minute


# -- JSON codecs ------------------------------------------------------------------------------------


def dumps(value: Any) -> str:
    # allow_nan=False: NaN is not JSON and PostgreSQL would reject it; fail the same way in every backend.
    return json.dumps(value, separators=(",", ":"), allow_nan=False, sort_keys=True)


def result_to_json(r: ProbeResult) -> str:
    return json.dumps(r.to_dict(), separators=(",", ":"))


def result_from_json(text: str) -> ProbeResult:
    return ProbeResult.from_dict(json.loads(text))


def copy_json(value: Mapping[str, Any]) -> dict[str, Any]:
    """Deep copy through JSON so the fake stores exactly what a database would."""
    out: dict[str, Any] = json.loads(dumps(dict(value)))
    return out


# -- batch pre-aggregation --------------------------------------------------------------------------


@dataclass(slots=True)
class SeriesInfo:
    kind: str
    key: str
    probe: str
    name: str
    labels: dict[str, str]


@dataclass(slots=True)
class AggDelta:
    count: int = 0
    failures: int = 0
    degraded: int = 0
    latency_sum_s: float = 0.0
    buckets: dict[float, int] = field(default_factory=dict)
    sketch: dict[int, int] = field(default_factory=dict)


@dataclass(slots=True)
class ObsDelta:
    count: int
    sum: float
    min: float
    max: float
    last: float
    last_at: float

    def add(self, value: float, at: float) -> None:
        self.count += 1
        self.sum += value
        self.min = min(self.min, value)
        self.max = max(self.max, value)
        # ">=": on equal timestamps the later-written value wins, as in the SQL merges.
        if at >= self.last_at:
            self.last, self.last_at = value, at

    def merge(self, other: ObsDelta) -> None:
        self.count += other.count
        self.sum += other.sum
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)
        if other.last_at >= self.last_at:
            self.last, self.last_at = other.last, other.last_at


@dataclass(slots=True)
class Batch:
    series: dict[tuple[str, str], SeriesInfo] = field(default_factory=dict)
    aggs: dict[tuple[str, int], AggDelta] = field(default_factory=dict)
    obs: dict[tuple[str, int], ObsDelta] = field(default_factory=dict)
    latest: dict[str, ProbeResult] = field(default_factory=dict)
    raw: list[ProbeResult] = field(default_factory=list)


def check_result(r: ProbeResult) -> None:
    if not (math.isfinite(r.latency_s) and r.latency_s >= 0):
        raise ValueError(f"probe {r.probe!r}: latency must be finite and >= 0, got {r.latency_s!r}")
    if not math.isfinite(r.started_at):
        raise ValueError(f"probe {r.probe!r}: started_at must be finite, got {r.started_at!r}")
    for o in r.observations:
        if not math.isfinite(o.value):
            raise ValueError(f"probe {r.probe!r}: observation {o.name!r} is not finite ({o.value!r})")


def aggregate(results: Sequence[ProbeResult], edges: Sequence[float]) -> Batch:
    """Fold a batch into per-(series, minute) deltas. Raises ValueError on a malformed result before
    anything is written, so a batch is all or nothing."""
    batch = Batch()
    for r in results:
        check_result(r)
        minute = minute_of(r.started_at)
        skey = series_key(r.probe, r.labels)
        batch.series.setdefault(
            (RESULT_SERIES, skey), SeriesInfo(RESULT_SERIES, skey, r.probe, "", dict(r.labels))
        )
        agg = batch.aggs.setdefault((skey, minute), AggDelta())
        agg.count += 1
        agg.failures += r.outcome is Outcome.FAILED
        agg.degraded += r.outcome is Outcome.DEGRADED
        agg.latency_sum_s += r.latency_s
        le = bucket_of(edges, r.latency_s)
        agg.buckets[le] = agg.buckets.get(le, 0) + 1
        k = sketch_key(r.latency_s)
        agg.sketch[k] = agg.sketch.get(k, 0) + 1

        for o in r.observations:
            okey = series_key(r.probe, {"__name__": o.name, **o.labels})
            batch.series.setdefault(
                (OBSERVATION_SERIES, okey),
                SeriesInfo(OBSERVATION_SERIES, okey, r.probe, o.name, dict(o.labels)),
            )
            od = batch.obs.get((okey, minute))
            if od is None:
                batch.obs[(okey, minute)] = ObsDelta(1, o.value, o.value, o.value, o.value, r.started_at)
            else:
                od.add(o.value, r.started_at)

        prev = batch.latest.get(skey)
        if prev is None or r.started_at >= prev.started_at:
            batch.latest[skey] = r
        batch.raw.append(r)
    return batch


def make_minute_aggregate(
    info: SeriesInfo,
    minute: int,
    row: AggDelta | tuple[int, int, int, float],
    buckets: dict[float, int],
) -> MinuteAggregate:
    """``buckets`` is a fresh dict of the non-empty buckets in ascending order: a full-window read builds
    hundreds of thousands of these, and zero-filled dicts of every edge would triple their memory.
    ``info.labels`` is shared for the same reason; callers pass a SeriesInfo built for this query."""
    if isinstance(row, AggDelta):
        count, failures, degraded, latency_sum = row.count, row.failures, row.degraded, row.latency_sum_s
    else:
        count, failures, degraded, latency_sum = row
    return MinuteAggregate(
        series=info.key,
        probe=info.probe,
        labels=info.labels,
        minute=minute,
        count=int(count),
        failures=int(failures),
        degraded=int(degraded),
        latency_sum_s=float(latency_sum),
        buckets=buckets,
    )


def make_observation_minute(info: SeriesInfo, minute: int, d: ObsDelta) -> ObservationMinute:
    return ObservationMinute(
        series=info.key,
        probe=info.probe,
        name=info.name,
        labels=info.labels,
        minute=minute,
        count=int(d.count),
        sum=float(d.sum),
        min=float(d.min),
        max=float(d.max),
        last=float(d.last),
        last_at=float(d.last_at),
    )


def incident(key: str, state: str, version: int, data: Mapping[str, Any], updated_at: float) -> Incident:
    return Incident(key=key, state=state, version=int(version), data=dict(data), updated_at=float(updated_at))


def check_args_positive(**values: float) -> None:
    for name, v in values.items():
        if not (math.isfinite(v) and v > 0):
            raise ValueError(f"{name} must be a positive number, got {v!r}")


# -- SQL read helpers (rows come back ordered by (minute, series_id)) ---------------------------------

AggRow = tuple[int, int, int, int, int, float]
"""minute, series_id, count, failures, degraded, latency_sum"""
BucketRow = tuple[int, int, float, int]
"""minute, series_id, le, count"""
ObsRow = tuple[int, int, int, float, float, float, float, float]
"""minute, series_id, count, sum, min, max, last, last_at"""


def merge_minute_rows(
    agg_rows: Iterable[AggRow],
    bucket_rows: Iterable[BucketRow],
    series: Mapping[int, SeriesInfo],
) -> list[MinuteAggregate]:
    """Join aggregate rows with their bucket rows in one pass (both sorted by (minute, series_id), buckets
    then by le), then order by (minute, series key); the input is already sorted by minute, so that sort
    only reorders within each minute and is nearly free."""
    buckets_it = iter(bucket_rows)
    pending = next(buckets_it, None)
    out: list[MinuteAggregate] = []
    for minute, sid, count, failures, degraded, latency_sum in agg_rows:
        while pending is not None and (pending[0] < minute or (pending[0] == minute and pending[1] < sid)):
            pending = next(buckets_it, None)
        buckets: dict[float, int] = {}
        while pending is not None and pending[0] == minute and pending[1] == sid:
            if pending[3]:
                buckets[pending[2]] = pending[3]
            pending = next(buckets_it, None)
        info = series.get(sid)
        if info is not None:
            out.append(make_minute_aggregate(info, minute, (count, failures, degraded, latency_sum), buckets))
    out.sort(key=lambda a: (a.minute, a.series))
    return out


def observation_rows(rows: Iterable[ObsRow], series: Mapping[int, SeriesInfo]) -> list[ObservationMinute]:
    out = [
        make_observation_minute(info, minute, ObsDelta(n, total, lo, hi, last, last_at))
        for minute, sid, n, total, lo, hi, last, last_at in rows
        if (info := series.get(sid)) is not None
    ]
    out.sort(key=lambda o: (o.minute, o.series))
    return out


def filter_series(
    rows: Iterable[tuple[int, str, str, str, str, str]],
    labels: Mapping[str, str] | None,
) -> dict[int, SeriesInfo]:
    """Series rows (id, kind, key, probe, name, labels json) whose labels include ``labels``."""
    out: dict[int, SeriesInfo] = {}
    for sid, kind, key, probe, name, labels_json in rows:
        series_labels: dict[str, str] = json.loads(labels_json)
        if labels_match(series_labels, labels):
            out[int(sid)] = SeriesInfo(kind, key, probe, name, series_labels)
    return out

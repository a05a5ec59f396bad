"""Store rows for a block of minutes -> per-source columns (good, total, events), in bulk.

Rows are first folded per store series into columns over the block (counts, failures, latency counts at the
thresholds the matching SLIs use); each SLI source then takes its columns from the series it selects. Columns
are shared: SLIs reading the same quantity of the same series get the same list object, so 1,000 SLOs over a
few series cost a few list passes each, not a Python loop per SLO and minute.

The per-minute meaning of good/total/events is documented in ``sli.py``.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from itertools import accumulate, pairwise
from operator import add, itemgetter

from watchdog.config.slo import CountedRatioSli, LatencySli, MetricThresholdSli, RatioSli, Sli, UptimeSli
from watchdog.store.base import MinuteAggregate, ObservationMinute

Column = list[float]
_RATIO_EPS = 1e-12


@dataclass
class SeriesPlan:
    """What the SLI sources matching one store series need from it."""

    sources: list[object] = field(default_factory=list)
    thresholds: tuple[float, ...] = ()
    """Latency thresholds, ascending."""


def plan_for(slis: Sequence[tuple[object, Sli]]) -> SeriesPlan:
    thresholds = sorted({s.threshold for _, s in slis if isinstance(s, LatencySli)})
    return SeriesPlan([src for src, _ in slis], tuple(thresholds))


class ResultBlock:
    """One result series over minutes [start, start + n)."""

    def __init__(self, n: int, plan: SeriesPlan) -> None:
        self.plan = plan
        self.count: Column = [0.0] * n
        self.failures: Column = [0.0] * n
        self.degraded: Column = [0.0] * n
        self._none = [0.0] * len(plan.thresholds)
        self._fast: list[list[float]] = [self._none] * n
        """Per minute: events at or under each of ``plan.thresholds`` (``_none``, shared, when no row)."""
        self._derived: dict[Hashable, Column] = {}

    def add(self, i: int, row: MinuteAggregate) -> None:
        self.count[i] += row.count
        self.failures[i] += row.failures
        self.degraded[i] += row.degraded
        thresholds = self.plan.thresholds
        if not thresholds:
            return
        # A bucket (le, n) counts for every threshold >= le: add n at the first such threshold, then take
        # running sums. Order-independent, and empty buckets cost nothing.
        last = len(thresholds)
        step = [0.0] * (last + 1)
        for le, n in row.buckets.items():
            if n:
                step[bisect_left(thresholds, le)] += n
        del step[last]  # slower than every threshold
        fast = list(accumulate(step))
        prev = self._fast[i]
        self._fast[i] = fast if prev is self._none else list(map(add, prev, fast))

    def under(self, threshold: float) -> Column:
        """Events at or under ``threshold`` per minute."""
        key = ("under", threshold)
        col = self._derived.get(key)
        if col is None:
            j = self.plan.thresholds.index(threshold)
            col = self._derived[key] = list(map(itemgetter(j), self._fast))
        return col

    def ok_under(self, threshold: float) -> Column:
        """Events at or under ``threshold`` and not failed, per minute: ``min(fast, not failed)``."""
        key = ("ok_under", threshold)
        col = self._derived.get(key)
        if col is None:
            col = self._derived[key] = list(map(min, self.under(threshold), self.good(True)))
        return col

    def good(self, degraded_is_good: bool) -> Column:
        key = "ok" if degraded_is_good else "okd"
        col = self._derived.get(key)
        if col is None:
            pairs = zip(self.count, self.failures, self.degraded, strict=True)
            # A store row never has more failures (plus degraded) than results.
            col = [c - f for c, f, _ in pairs] if degraded_is_good else [c - f - d for c, f, d in pairs]
            self._derived[key] = col
        return col


class ObservationBlock:
    """One observation series over minutes [start, start + n)."""

    def __init__(self, n: int, plan: SeriesPlan, name: str = "") -> None:
        self.plan = plan
        self.name = name
        """The observation's name (a ``counted_ratio`` source reads two)."""
        self.count: Column = [0.0] * n
        self.sum: Column = [0.0] * n
        self.lo: Column = [math.inf] * n
        self.hi: Column = [-math.inf] * n
        self.last: Column = [0.0] * n
        self.last_at: Column = [-math.inf] * n

    def add(self, i: int, row: ObservationMinute) -> None:
        if row.count <= 0:
            return
        self.count[i] += row.count
        self.sum[i] += row.sum
        self.lo[i] = min(self.lo[i], row.min)
        self.hi[i] = max(self.hi[i], row.max)
        if row.last_at >= self.last_at[i]:
            self.last[i], self.last_at[i] = row.last, row.last_at


Block = ResultBlock | ObservationBlock


def _sum(cols: Sequence[Column]) -> Column:
    if len(cols) == 1:
        return cols[0]
    out = list(map(add, cols[0], cols[1]))
    for col in cols[2:]:
        out = list(map(add, out, col))
    return out


class ColumnCache:
    """Columns computed once per block of minutes, keyed by the blocks they come from."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.zeros: Column = [0.0] * n
        self._cols: dict[Hashable, Column] = {}
        self.gaps: dict[Hashable, tuple[Column | None, Column, list[int]]] = {}
        self.prefixes: dict[int, list[float]] = {}
        """Running sums of the columns above by ``id`` (they stay alive as long as this cache)."""

    def get(self, key: Hashable, make: Callable[[], Column]) -> Column:
        col = self._cols.get(key)
        if col is None:
            col = self._cols[key] = make()
        return col


def source_columns(sli: Sli, blocks: Sequence[Block], cache: ColumnCache) -> tuple[Column, Column, Column]:
    """(good, total, events) of one SLI source over the block of minutes."""
    ids = tuple(id(b) for b in blocks)
    if isinstance(sli, CountedRatioSli):
        return _counted_columns(sli, [b for b in blocks if isinstance(b, ObservationBlock)], ids, cache)
    if isinstance(sli, MetricThresholdSli):
        obs = [b for b in blocks if isinstance(b, ObservationBlock)]
        return _metric_columns(sli, obs, ids, cache)
    res = [b for b in blocks if isinstance(b, ResultBlock)]
    count = cache.get((ids, "count"), lambda: _sum([b.count for b in res]))
    if isinstance(sli, RatioSli | UptimeSli):
        dig = sli.degraded_is_good
        good_events = cache.get((ids, "good", dig), lambda: _sum([b.good(dig) for b in res]))
        if isinstance(sli, RatioSli):
            return good_events, count, count
        present = cache.get((ids, "present"), lambda: [1.0 if c > 0 else 0.0 for c in count])
        r = sli.minute_good_ratio

        def slices() -> Column:
            pairs = zip(good_events, count, strict=True)
            return [1.0 if c > 0 and g / c + _RATIO_EPS >= r else 0.0 for g, c in pairs]

        return cache.get((ids, "uptime", dig, r), slices), present, count
    assert isinstance(sli, LatencySli)
    t = sli.threshold
    if sli.count_failures_as_bad:
        good = cache.get((ids, "ok_under", t), lambda: _sum([b.ok_under(t) for b in res]))
    else:
        good = cache.get((ids, "under", t), lambda: _sum([b.under(t) for b in res]))
    return good, count, count


def _metric_columns(
    sli: MetricThresholdSli, obs: Sequence[ObservationBlock], ids: tuple[int, ...], cache: ColumnCache
) -> tuple[Column, Column, Column]:
    count = cache.get((ids, "ocount"), lambda: _sum([b.count for b in obs]) if obs else cache.zeros)
    present = cache.get((ids, "opresent"), lambda: [1.0 if c > 0 else 0.0 for c in count])

    def value() -> Column:
        if not obs:
            return cache.zeros
        if sli.aggregate == "max":
            return obs[0].hi if len(obs) == 1 else [max(v) for v in zip(*(b.hi for b in obs), strict=True)]
        if sli.aggregate == "min":
            return obs[0].lo if len(obs) == 1 else [min(v) for v in zip(*(b.lo for b in obs), strict=True)]
        if sli.aggregate == "avg":
            total = _sum([b.sum for b in obs])
            return [s / c if c > 0 else 0.0 for s, c in zip(total, count, strict=True)]
        if len(obs) == 1:
            return obs[0].last
        out: Column = []
        for pairs in zip(*((b.last_at, b.last) for b in obs), strict=True):
            out.append(max(pairs, key=lambda p: p[0])[1])
        return out

    values = cache.get((ids, "ovalue", sli.aggregate), value)
    below, above = sli.below, sli.above

    def good() -> Column:
        pairs = zip(values, count, strict=True)
        if below is not None:
            return [1.0 if c > 0 and v < below else 0.0 for v, c in pairs]
        bound = above if above is not None else 0.0
        return [1.0 if c > 0 and v > bound else 0.0 for v, c in pairs]

    return cache.get((ids, "bound", sli.aggregate, below, above), good), present, count


def _counted_columns(
    sli: CountedRatioSli, obs: Sequence[ObservationBlock], ids: tuple[int, ...], cache: ColumnCache
) -> tuple[Column, Column, Column]:
    """(good, total, events): total and bad are the minute's sums of the two observations."""

    def summed(name: str) -> Column:
        cols = [b.sum for b in obs if b.name == name]
        return _sum(cols) if cols else cache.zeros

    total = cache.get((ids, "csum", sli.total), lambda: summed(sli.total))
    bad = cache.get((ids, "csum", sli.bad), lambda: summed(sli.bad))

    def good() -> Column:
        return [max(0.0, t - b) for t, b in zip(total, bad, strict=True)]

    return cache.get((ids, "cgood", sli.total, sli.bad), good), total, total


def gap_columns(
    events: Column, start: int, current: int, last_data: int | None, gap_minutes: int, watch_start: int
) -> tuple[Column | None, Column, list[int]]:
    """(missing, data, data minutes) for minutes [start, start + n).

    A minute without data is *missing* once more than ``gap_minutes`` empty minutes in a row precede or
    include it, counted from the last minute with data (or from ``watch_start`` when there was none yet).
    The current, still-growing minute is never missing. ``missing`` is None when nothing is.
    """
    n = len(events)
    idx = [i for i, e in enumerate(events) if e > 0]
    if len(idx) == n:
        return None, [1.0] * n, [start + i for i in idx[-16:]]
    data = [1.0 if e > 0 else 0.0 for e in events]
    prev = last_data if last_data is not None else watch_start - 1
    runs: list[tuple[int, int, int]] = []  # (first empty minute, end exclusive, last data minute before)
    if not idx:
        runs.append((start, start + n, prev))
    else:
        if idx[0] > 0:
            runs.append((start, start + idx[0], prev))
        runs.extend((start + a + 1, start + b, start + a) for a, b in pairwise(idx) if b - a > 1)
        if idx[-1] < n - 1:
            runs.append((start + idx[-1] + 1, start + n, start + idx[-1]))
    missing: Column | None = None
    for first, end, before in runs:
        lo = max(first, before + gap_minutes + 1)
        hi = min(end, current)
        if lo < hi:
            if missing is None:
                missing = [0.0] * n
            missing[lo - start : hi - start] = [1.0] * (hi - lo)
    return missing, data, [start + i for i in idx[-16:]]

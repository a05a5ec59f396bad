"""Where the canary guard's counts come from: probes pinned to a cohort, or the service's own per-cohort
request counters in Prometheus.

A probe cohort (``probe:``) is counted by ``watchdog.canary.guard.cohort_counts`` from the state store, as
before. Probes give a result every few seconds; real traffic gives many, so a cohort may instead read the
service's counters (``prometheus: {url, requests, errors, slow}``; see ``PrometheusCohort``).

A metric cohort counts the counters' increase since the stage began, the way ``increase()`` does but exact
and without extrapolation:

- every check runs one instant query (the expressions joined with ``or``, each series marked with the
  ``watchdog_part`` label), so requests, errors and slow requests come from one consistent snapshot;
- per series: a value at or above the last one seen adds the difference; a value below it is that series
  restarting (an instance restarted, its counters began again at zero) and adds the value itself; a
  series first seen during the stage was born during it and adds its whole value (the first 5xx of a
  fault creates its series). So that a series merely invisible when the stage began (a failed scrape) is
  not taken for a new one, the first look also reads each series' last value over the previous
  ``LOOKBACK``;
- the state (each series' last value, the totals) is kept per guard and written to the store as the
  record ``canary-cohort``/``<rollout>:<role>`` when a stage begins and then at most every
  ``PERSIST_EVERY_S``, so a restarted daemon (or the replica taking over) continues the count;
- a query that fails adds nothing: the counts stay as they were and ``last_at`` stops moving, as for a
  silent probe (the guard holds after ``no_data_after`` while it has fewer than ``min_samples``); the
  failure is logged once per cause, and so is the recovery.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from watchdog.config.rollouts import Cohort, PrometheusCohort, Rollout
from watchdog.sources.base import MetricSource, MetricSourceError, Sample
from watchdog.store.base import RecordStore, ResultReader

_log = logging.getLogger(__name__)

PART_LABEL = "watchdog_part"
PARTS = ("requests", "errors", "slow")
RECORD_KIND = "canary-cohort"
PERSIST_EVERY_S = 10.0
LOOKBACK = "10m"

SourceFactory = Callable[[PrometheusCohort], MetricSource]


def combined_query(cohort: PrometheusCohort) -> str:
    """One instant query for every part, each series marked with ``watchdog_part``."""
    parts = [("requests", cohort.requests), ("errors", cohort.errors), ("slow", cohort.slow)]
    return " or ".join(
        f'label_replace(({expr}), "{PART_LABEL}", "{part}", "", "")' for part, expr in parts if expr
    )


def lookback_query(cohort: PrometheusCohort) -> str:
    """Each series' last value over ``LOOKBACK``, visible now or not."""
    return f"last_over_time(({combined_query(cohort)})[{LOOKBACK}:])"


def series_key(labels: Mapping[str, str]) -> str:
    return "{" + ",".join(f"{k}={labels[k]!r}" for k in sorted(labels) if k != PART_LABEL) + "}"


def _by_part(samples: Sequence[Sample]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {part: {} for part in PARTS}
    for s in samples:
        part = s.labels.get(PART_LABEL)
        if part in out and math.isfinite(s.value) and s.value >= 0:
            out[part][series_key(s.labels)] = s.value
    return out


@dataclass(frozen=True, slots=True)
class MetricCounts:
    """Events since the stage began; ``last_at`` is when the requests counters last moved (guard clock)."""

    events: int = 0
    failed: int = 0
    slow: int = 0
    last_at: float | None = None


@dataclass
class _Tracker:
    since: float
    last: dict[str, dict[str, float]]
    total: dict[str, float] = field(default_factory=lambda: dict.fromkeys(PARTS, 0.0))
    last_at: float | None = None
    persisted_at: float = -math.inf
    dirty: bool = True

    def observe(self, current: Mapping[str, Mapping[str, float]], now: float) -> None:
        for part, series in current.items():
            seen = self.last.setdefault(part, {})
            added = 0.0
            for key, value in series.items():
                before = seen.get(key)
                if before is None or value < before:  # born during the stage, or restarted from zero
                    added += value
                else:
                    added += value - before
                seen[key] = value
            if added > 0:
                self.total[part] = self.total.get(part, 0.0) + added
                self.dirty = True
                if part == "requests":
                    self.last_at = now

    def counts(self, with_slow: bool) -> MetricCounts:
        events = max(0, round(self.total.get("requests", 0.0)))
        failed = min(events, max(0, round(self.total.get("errors", 0.0))))
        slow = min(events, max(0, round(self.total.get("slow", 0.0)))) if with_slow else 0
        return MetricCounts(events, failed, slow, self.last_at)

    def to_record(self) -> dict[str, Any]:
        return {"since": self.since, "last": self.last, "total": self.total, "last_at": self.last_at}

    @classmethod
    def from_record(cls, value: Mapping[str, Any], now: float) -> _Tracker:
        last = {str(p): {str(k): float(v) for k, v in s.items()} for p, s in dict(value["last"]).items()}
        total = {str(p): float(v) for p, v in dict(value["total"]).items()}
        last_at = value.get("last_at")
        return cls(
            float(value["since"]),
            last,
            total,
            None if last_at is None else float(last_at),
            persisted_at=now,
            dirty=False,
        )


def prometheus_source(cohort: PrometheusCohort) -> MetricSource:
    """The default factory: our Prometheus HTTP API client, with the bearer token from ``token_env``."""
    from watchdog.sources.prometheus import PrometheusMetricSource

    headers: dict[str, str] = {}
    if cohort.token_env is not None:
        token = os.environ.get(cohort.token_env)
        if not token:
            raise MetricSourceError(
                f"environment variable {cohort.token_env} (the Prometheus token) is not set"
            )
        headers["Authorization"] = f"Bearer {token}"
    return PrometheusMetricSource(cohort.url, headers=headers)


class MetricCohorts:
    """The metric cohorts of one guard: their sources (one per cohort config, on the running event loop)
    and their trackers. ``source_for`` builds a ``MetricSource`` for a cohort (tests and the benchmark
    pass a fake or a simulated Prometheus)."""

    def __init__(self, source_for: SourceFactory = prometheus_source) -> None:
        self._source_for = source_for
        self._sources: dict[PrometheusCohort, tuple[asyncio.AbstractEventLoop, MetricSource]] = {}
        self._trackers: dict[str, _Tracker] = {}
        self._errors: dict[str, str] = {}

    def _source(self, cohort: PrometheusCohort) -> MetricSource:
        loop = asyncio.get_running_loop()
        held = self._sources.get(cohort)
        if held is None or held[0] is not loop:
            held = (loop, self._source_for(cohort))
            self._sources[cohort] = held
        return held[1]

    async def counts(
        self,
        store: RecordStore,
        rollout: str,
        role: str,
        cohort: PrometheusCohort,
        since: float,
        now: float,
        latency_threshold_s: float | None,
    ) -> MetricCounts:
        key = f"{rollout}:{role}"
        with_slow = latency_threshold_s is not None and cohort.slow is not None
        if now < since:  # the stage's grace period: nothing counts yet
            return MetricCounts()
        tracker = self._trackers.get(key)
        if tracker is None or tracker.since != since:
            tracker = None
            stored = await store.get_record(RECORD_KIND, key)
            if stored is not None and stored.get("since") == since:
                try:
                    tracker = _Tracker.from_record(stored, now)
                except (KeyError, TypeError, ValueError, AttributeError):
                    _log.warning(
                        "rollout %s: %s cohort: unreadable saved counts; starting afresh", rollout, role
                    )
            if tracker is not None:
                self._trackers[key] = tracker
        try:
            source = self._source(cohort)
            samples = await source.query(combined_query(cohort), timeout_s=cohort.timeout)
        except MetricSourceError as exc:
            self._note_error(rollout, role, key, str(exc))
            return tracker.counts(with_slow) if tracker is not None else MetricCounts()
        self._note_recovery(rollout, role, key)
        current = _by_part(samples)
        if tracker is None:
            tracker = await self._baseline(source, cohort, current, since, rollout, role)
            self._trackers[key] = tracker
        else:
            tracker.observe(current, now)
        first = tracker.persisted_at == -math.inf
        if first or (tracker.dirty and now - tracker.persisted_at >= PERSIST_EVERY_S):
            await store.put_record(RECORD_KIND, key, tracker.to_record(), now)
            tracker.persisted_at = now
            tracker.dirty = False
        return tracker.counts(with_slow)

    async def _baseline(
        self,
        source: MetricSource,
        cohort: PrometheusCohort,
        current: dict[str, dict[str, float]],
        since: float,
        rollout: str,
        role: str,
    ) -> _Tracker:
        """The counters' values when the stage began: what is visible now, and for series not visible now,
        their last value over ``LOOKBACK`` (so one that reappears is not taken for a new one)."""
        last = {part: dict(series) for part, series in current.items()}
        try:
            earlier = _by_part(await source.query(lookback_query(cohort), timeout_s=cohort.timeout))
        except MetricSourceError as exc:
            _log.info("rollout %s: %s cohort: no look back at earlier series (%s)", rollout, role, exc)
        else:
            for part, series in earlier.items():
                for key, value in series.items():
                    last[part].setdefault(key, value)
        visible = sum(len(s) for s in current.values())
        _log.info(
            "rollout %s: %s cohort counted from Prometheus from now on (%d series)",
            rollout,
            role,
            visible,
            extra={"rollout": rollout},
        )
        return _Tracker(since, last)

    def _note_error(self, rollout: str, role: str, key: str, error: str) -> None:
        if self._errors.get(key) != error:
            self._errors[key] = error
            _log.warning(
                "rollout %s: %s cohort: Prometheus did not answer (%s); counting nothing new until it does",
                rollout,
                role,
                error,
                extra={"rollout": rollout},
            )

    def _note_recovery(self, rollout: str, role: str, key: str) -> None:
        if self._errors.pop(key, None) is not None:
            _log.warning("rollout %s: %s cohort: Prometheus answers again", rollout, role)

    async def aclose(self) -> None:
        sources, self._sources = self._sources, {}
        for _loop, source in sources.values():
            await source.aclose()


class CohortStore(ResultReader, RecordStore, Protocol):
    """The probe results (probe cohorts) and the saved counts (metric cohorts)."""


class Owner(Protocol):
    """What counting needs of the guard: its rollout and its store."""

    rollout: Rollout

    @property
    def store(self) -> CohortStore: ...


T = TypeVar("T")
ProbeCounts = Callable[[CohortStore, Cohort, float, float, float | None], Awaitable[T]]

_READERS: weakref.WeakKeyDictionary[Owner, MetricCohorts] = weakref.WeakKeyDictionary()


def use(guard: Owner, reader: MetricCohorts) -> None:
    """Give ``guard`` this reader for its metric cohorts (a fake or simulated source in tests)."""
    _READERS[guard] = reader


def reader_of(guard: Owner) -> MetricCohorts:
    reader = _READERS.get(guard)
    if reader is None:
        reader = _READERS[guard] = MetricCohorts()
    return reader


def counter(
    guard: Owner, probe_counts: ProbeCounts[T], make: Callable[[int, int, int, float | None], T]
) -> Callable[[str, Cohort, float, float, float | None], Awaitable[T]]:
    """``count(role, cohort, since, now, latency_threshold_s)``: the cohort's counts from ``since`` to
    ``now``, from wherever the cohort is defined: ``probe_counts`` (the guard's ``cohort_counts``) for a
    probe cohort, the metric path for a Prometheus one, returned through ``make`` (the guard's ``Counts``).
    The guard passes both, so this module never imports it."""

    async def count(
        role: str, cohort: Cohort, since: float, now: float, latency_threshold_s: float | None
    ) -> T:
        if cohort.prometheus is None:
            return await probe_counts(guard.store, cohort, since, now, latency_threshold_s)
        got = await reader_of(guard).counts(
            guard.store, guard.rollout.name, role, cohort.prometheus, since, now, latency_threshold_s
        )
        return make(got.events, got.failed, got.slow, got.last_at)

    return count

"""Where the canary guard's counts come from: probes pinned to a cohort, the service's own per-cohort
request counters in Prometheus, or one Cloud Run revision's real traffic in Cloud Monitoring.

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

A Cloud Run cohort (``cloud_run: {service, revision}``; see ``CloudRunCohort``) counts the revision's
requests, their 5xx and (with a latency limit) the requests over the threshold from Cloud Monitoring
(``run.googleapis.com/request_count`` and ``request_latencies``, ``cloud_run_revision_minutes``), minute by
minute, over the whole minutes from ``since`` (rounded up to a minute: the minute the stage began in holds
traffic from before it) to the newest complete minute:

- Cloud Monitoring is about 3.5 min behind (Cloud Run's points become visible up to ~3 min after their
  minute, ``COMPLETE_AFTER_S``), so the counts end at ``complete_until(now)``, never at now: a minute still
  filling would read low, and a canary's 5xx land in the verdict about 4 min after they happened;
- silence is judged on the same clock: the counts' ``as_of`` is that newest complete minute and ``last_at``
  the end of the newest minute in which the revision had requests, so the guard's ``no_data_after`` hold
  measures minutes without traffic in complete data (a failed read lets ``as_of`` move on while the counts
  stand still, so it holds too), and the ingestion delay itself is never taken for silence;
- each complete minute is read once: a check reads only the minutes completed since the last read (once a
  minute at most, ``RETRY_AFTER_S`` after a failed read), adds them to the totals and writes those to the
  store as the record ``canary-cloud-run``/``<rollout>:<role>``, so a restarted daemon (or the replica taking
  over) carries on from the next minute;
- the source is built from ``google_cloud`` (project from the service's name, the ``monitoring`` endpoint
  override) on first use; nothing Google is imported unless a cohort is a Cloud Run one.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from watchdog.config.gcp import GoogleCloud
from watchdog.config.rollouts import CloudRunCohort, Cohort, PrometheusCohort, Rollout
from watchdog.sources.base import MetricSource, MetricSourceError, Sample
from watchdog.store.base import RecordStore, ResultReader

if TYPE_CHECKING:
    from watchdog.sources.cloud_monitoring import CloudMonitoringMetricSource, RevisionMinute

_log = logging.getLogger(__name__)

PART_LABEL = "watchdog_part"
PARTS = ("requests", "errors", "slow")
RECORD_KIND = "canary-cohort"
PERSIST_EVERY_S = 10.0
LOOKBACK = "10m"
RUN_RECORD_KIND = "canary-cloud-run"
RETRY_AFTER_S = 10.0
"""After a failed Cloud Monitoring read, the next one waits this long (the guard checks every second)."""

SourceFactory = Callable[[PrometheusCohort], MetricSource]
RunSourceFactory = Callable[[str, str], "CloudMonitoringMetricSource"]
"""(project, endpoint) → a Cloud Monitoring source."""


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
    """Events since the stage began; ``last_at`` is when the requests counters last moved (guard clock);
    ``as_of`` and ``source`` as the guard's ``Counts`` (set for Cloud Run cohorts)."""

    events: int = 0
    failed: int = 0
    slow: int = 0
    last_at: float | None = None
    as_of: float | None = None
    source: str = ""


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


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@dataclass
class _RunTracker:
    """A Cloud Run cohort's totals over the minutes ``[first, counted_to)``."""

    since: float
    service: str
    revision: str
    threshold_ms: float | None
    first: float
    counted_to: float
    requests: int = 0
    errors: int = 0
    slow: float = 0.0
    last_at: float | None = None
    retry_at: float = -math.inf

    def same_stage(self, since: float, service: str, revision: str, threshold_ms: float | None) -> bool:
        return (self.since, self.service, self.revision, self.threshold_ms) == (
            since,
            service,
            revision,
            threshold_ms,
        )

    def add(self, minutes: Sequence[RevisionMinute], to: float) -> None:
        for m in minutes:
            self.requests += m.requests
            self.errors += m.errors_5xx
            self.slow += m.slow
            if m.requests > 0:
                self.last_at = max(self.last_at or m.end, m.end)
        self.counted_to = to

    def counts(self, as_of: float) -> MetricCounts:
        events = max(0, self.requests)
        failed = min(events, max(0, self.errors))
        slow = min(events, max(0, round(self.slow))) if self.threshold_ms is not None else 0
        if self.counted_to > self.first:
            span = f"requests from {_iso(self.first)} to {_iso(self.counted_to)}"
        else:
            span = f"no complete minute since {_iso(self.first)} yet"
        where = (
            f"Cloud Run revision {self.revision} ({span}; Cloud Monitoring's data is complete about 3.5 min "
            "after each minute, so the counts run that far behind)"
        )
        return MetricCounts(events, failed, slow, self.last_at, as_of, where)

    def to_record(self) -> dict[str, Any]:
        return {
            "since": self.since,
            "service": self.service,
            "revision": self.revision,
            "threshold_ms": self.threshold_ms,
            "first": self.first,
            "counted_to": self.counted_to,
            "requests": self.requests,
            "errors": self.errors,
            "slow": self.slow,
            "last_at": self.last_at,
        }

    @classmethod
    def from_record(cls, value: Mapping[str, Any]) -> _RunTracker:
        threshold, last_at = value.get("threshold_ms"), value.get("last_at")
        return cls(
            float(value["since"]),
            str(value["service"]),
            str(value["revision"]),
            None if threshold is None else float(threshold),
            float(value["first"]),
            float(value["counted_to"]),
            int(value["requests"]),
            int(value["errors"]),
            float(value["slow"]),
            None if last_at is None else float(last_at),
        )


def cloud_monitoring_source(project: str, endpoint: str) -> CloudMonitoringMetricSource:
    """The default Cloud Run factory: our Cloud Monitoring reader (imports google-cloud-monitoring)."""
    from watchdog.sources.cloud_monitoring import CloudMonitoringMetricSource

    try:
        return CloudMonitoringMetricSource(project, endpoint=endpoint)
    except ImportError:
        raise MetricSourceError(
            "Cloud Run cohorts need the gcp extra (pip install 'sre-watchdog[gcp]')"
        ) from None


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
    pass a fake or a simulated Prometheus). Cloud Run cohorts read Cloud Monitoring with the project of
    their service and ``google_cloud``'s ``monitoring`` endpoint; ``run_source_for(project, endpoint)``
    builds that reader."""

    def __init__(
        self,
        source_for: SourceFactory = prometheus_source,
        *,
        google_cloud: GoogleCloud | None = None,
        run_source_for: RunSourceFactory = cloud_monitoring_source,
    ) -> None:
        self._source_for = source_for
        self._sources: dict[PrometheusCohort, tuple[asyncio.AbstractEventLoop, MetricSource]] = {}
        self._trackers: dict[str, _Tracker] = {}
        self._errors: dict[str, str] = {}
        self.google_cloud = google_cloud
        self._run_source_for = run_source_for
        self._run_sources: dict[
            tuple[str, str], tuple[asyncio.AbstractEventLoop, CloudMonitoringMetricSource]
        ] = {}
        self._run_trackers: dict[str, _RunTracker] = {}

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

    # -- Cloud Run ---------------------------------------------------------------------------------------
    def run_service(self, cohort: CloudRunCohort) -> str:
        """The cohort's service: its own, else ``google_cloud.cloud_run_service``."""
        gcp = self.google_cloud
        service = cohort.service or (gcp.cloud_run_service if gcp is not None else "")
        if not service:
            raise MetricSourceError(
                "no Cloud Run service: set the cohort's service or google_cloud.cloud_run_service"
            )
        return service

    def _run_source(self, service: str) -> CloudMonitoringMetricSource:
        gcp = self.google_cloud
        parts = service.split("/")
        project = parts[1] if parts[0] == "projects" and len(parts) > 1 else (gcp.project if gcp else "")
        if not project:
            raise MetricSourceError(f"no project for Cloud Run service {service!r}: set google_cloud.project")
        endpoint = (gcp.endpoints.get("monitoring", "") if gcp is not None else "").strip()
        loop = asyncio.get_running_loop()
        held = self._run_sources.get((project, endpoint))
        if held is None or held[0] is not loop:
            held = (loop, self._run_source_for(project, endpoint))
            self._run_sources[(project, endpoint)] = held
        return held[1]

    async def cloud_run_counts(
        self,
        store: RecordStore,
        rollout: str,
        role: str,
        cohort: CloudRunCohort,
        since: float,
        now: float,
        latency_threshold_s: float | None,
    ) -> MetricCounts:
        """The revision's requests, 5xx and requests over the threshold in the whole minutes from ``since``
        to the newest complete one (see the module's docstring)."""
        from watchdog.sources.cloud_monitoring import cloud_run_revision_minutes, complete_until

        if now < since:  # the stage's grace period: nothing counts yet
            return MetricCounts()
        key = f"{rollout}:{role}"
        horizon = complete_until(now)
        try:
            service = self.run_service(cohort)
        except MetricSourceError as exc:
            self._note_error(rollout, role, key, str(exc), "Cloud Monitoring")
            return MetricCounts(as_of=horizon)
        threshold_ms = None if latency_threshold_s is None else latency_threshold_s * 1000.0
        tracker = self._run_trackers.get(key)
        if tracker is None or not tracker.same_stage(since, service, cohort.revision, threshold_ms):
            tracker = await self._load_run(store, key, since, service, cohort.revision, threshold_ms)
            if tracker is None:
                first = math.ceil(since / 60.0) * 60.0
                tracker = _RunTracker(since, service, cohort.revision, threshold_ms, first, first)
                _log.info(
                    "rollout %s: %s cohort counted from Cloud Run revision %s from %s on",
                    rollout,
                    role,
                    cohort.revision,
                    _iso(first),
                    extra={"rollout": rollout},
                )
            self._run_trackers[key] = tracker
        if horizon > tracker.counted_to and now >= tracker.retry_at:
            try:
                minutes = await cloud_run_revision_minutes(
                    self._run_source(service),
                    service,
                    cohort.revision,
                    tracker.counted_to,
                    horizon,
                    threshold_ms=threshold_ms,
                    timeout_s=cohort.timeout,
                )
            except MetricSourceError as exc:
                tracker.retry_at = now + RETRY_AFTER_S
                self._note_error(rollout, role, key, str(exc), "Cloud Monitoring")
            else:
                self._note_recovery(rollout, role, key, "Cloud Monitoring")
                tracker.add(minutes, horizon)
                await store.put_record(RUN_RECORD_KIND, key, tracker.to_record(), now)
        return tracker.counts(horizon)

    async def _load_run(
        self,
        store: RecordStore,
        key: str,
        since: float,
        service: str,
        revision: str,
        threshold_ms: float | None,
    ) -> _RunTracker | None:
        stored = await store.get_record(RUN_RECORD_KIND, key)
        if stored is None:
            return None
        try:
            tracker = _RunTracker.from_record(stored)
        except (KeyError, TypeError, ValueError, AttributeError):
            _log.warning("%s: unreadable saved Cloud Run counts; starting afresh", key)
            return None
        return tracker if tracker.same_stage(since, service, revision, threshold_ms) else None

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

    def _note_error(self, rollout: str, role: str, key: str, error: str, what: str = "Prometheus") -> None:
        if self._errors.get(key) != error:
            self._errors[key] = error
            _log.warning(
                "rollout %s: %s cohort: %s did not answer (%s); counting nothing new until it does",
                rollout,
                role,
                what,
                error,
                extra={"rollout": rollout},
            )

    def _note_recovery(self, rollout: str, role: str, key: str, what: str = "Prometheus") -> None:
        if self._errors.pop(key, None) is not None:
            _log.warning("rollout %s: %s cohort: %s answers again", rollout, role, what)

    async def aclose(self) -> None:
        sources, self._sources = self._sources, {}
        for _loop, source in sources.values():
            await source.aclose()
        run_sources, self._run_sources = self._run_sources, {}
        for _loop, run_source in run_sources.values():
            await run_source.aclose()


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


def uses_cloud_run(rollout: Rollout) -> bool:
    return any(c is not None and c.cloud_run is not None for c in (rollout.canary, rollout.baseline))


def cloud_run_reader(google_cloud: GoogleCloud | None) -> MetricCohorts:
    """A reader for a guard with Cloud Run cohorts (``build_guards``): google-cloud-monitoring is imported
    now, at wiring, so the first count does not stall the event loop importing it."""
    try:
        import google.cloud.monitoring_v3  # noqa: F401
    except ImportError:
        _log.warning(
            "Cloud Run cohorts need the gcp extra (pip install 'sre-watchdog[gcp]'); they count nothing"
        )
    return MetricCohorts(google_cloud=google_cloud)


Make = Callable[[int, int, int, "float | None", "float | None", str], T]
"""The guard's ``Counts(events, failed, slow, last_at, as_of, source)``."""


def counter(
    guard: Owner, probe_counts: ProbeCounts[T], make: Make[T]
) -> Callable[[str, Cohort, float, float, float | None], Awaitable[T]]:
    """``count(role, cohort, since, now, latency_threshold_s)``: the cohort's counts from ``since`` to
    ``now``, from wherever the cohort is defined: ``probe_counts`` (the guard's ``cohort_counts``) for a
    probe cohort, the metric path for a Prometheus or Cloud Run one, returned through ``make`` (the guard's
    ``Counts``). The guard passes both, so this module never imports it."""

    async def count(
        role: str, cohort: Cohort, since: float, now: float, latency_threshold_s: float | None
    ) -> T:
        if cohort.prometheus is not None:
            got = await reader_of(guard).counts(
                guard.store, guard.rollout.name, role, cohort.prometheus, since, now, latency_threshold_s
            )
        elif cohort.cloud_run is not None:
            got = await reader_of(guard).cloud_run_counts(
                guard.store, guard.rollout.name, role, cohort.cloud_run, since, now, latency_threshold_s
            )
        else:
            return await probe_counts(guard.store, cohort, since, now, latency_threshold_s)
        return make(got.events, got.failed, got.slow, got.last_at, got.as_of, got.source)

    return count

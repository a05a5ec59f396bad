"""``cloud_run_traffic``: a Cloud Run service's real requests per revision, from Cloud Monitoring.

Each run reads the complete minutes not yet recorded (``run.googleapis.com/request_count`` by revision and
response code class, and with ``latency_threshold`` ``request_latencies`` by revision, both ALIGN_DELTA per
minute) and records, per revision and minute, the observations ``cloud_run_requests``, ``cloud_run_5xx`` and
``cloud_run_slow`` labelled ``revision``. The cursor (the end of the newest minute recorded) lives in memory:
the first run, and the first after a restart, reads only the newest complete minute; a run after a failed
read catches up (at most ``MAX_CATCH_UP_S``). A minute in which a revision served nothing is not recorded.

Timestamps: the observations are recorded with the run (``started_at`` is now), not at the data's minute,
because the SLO engine re-reads only the last few minutes of the store on each tick and would never see a
minute written ~4 minutes into the past. Cloud Run's data is complete ``COMPLETE_AFTER_S`` (~3.5 min) after
its minute ends, so an SLI window over these observations sees the traffic ~3.5-4.5 minutes late.
"""

from __future__ import annotations

import time
from typing import Any

from watchdog.config.gcp import GoogleCloud
from watchdog.config.probes import CloudRunTrafficProbeConfig
from watchdog.config.settings import ProbeDefaults
from watchdog.core.clock import Clock
from watchdog.core.results import Observation, Outcome, ProbeResult
from watchdog.sources.base import MetricSourceError
from watchdog.sources.cloud_monitoring import (
    SAMPLE_PERIOD_S,
    CloudMonitoringMetricSource,
    Distribution,
    MonitoringQuery,
    cloud_run_filter,
    cloud_run_service,
    complete_until,
    endpoint_of,
    revision_filter,
)

KIND = "cloud_run_traffic"
REQUESTS, ERRORS_5XX, SLOW = "cloud_run_requests", "cloud_run_5xx", "cloud_run_slow"
MAX_CATCH_UP_S = 3600.0
"""A run reads at most this much history (after a long outage of Cloud Monitoring, older minutes are
skipped)."""


def _filter(metric: str, service: str, revision: str) -> str:
    return revision_filter(metric, service, revision) if revision else cloud_run_filter(metric, service)


async def traffic_minutes(
    source: CloudMonitoringMetricSource,
    service: str,
    revision: str,
    start: float,
    end: float,
    *,
    threshold_ms: float | None = None,
    timeout_s: float = 10.0,
) -> dict[tuple[str, float], list[float]]:
    """``{(revision, minute end): [requests, 5xx, slow]}`` over ``[start, end)`` (whole minutes), of one
    revision or (``revision`` empty) of every revision; minutes without requests are absent."""
    if start % SAMPLE_PERIOD_S or end % SAMPLE_PERIOD_S or end <= start:
        raise MetricSourceError("traffic minutes need whole-minute bounds, start before end")
    deadline = time.monotonic() + timeout_s
    counts = MonitoringQuery(
        _filter("request_count", service, revision),
        "ALIGN_DELTA",
        reducer="REDUCE_SUM",
        group_by=("resource.label.revision_name", "metric.label.response_code_class"),
        lookback_s=end - start,
        until=end,
    )
    minutes: dict[tuple[str, float], list[float]] = {}
    for s in await source.series(counts, timeout_s=timeout_s):
        rev = s.labels.get("revision_name", revision)
        is_5xx = s.labels.get("response_code_class") == "5xx"
        for p in s.points:
            if isinstance(p.value, Distribution) or not start < p.end <= end:
                continue
            entry = minutes.setdefault((rev, p.end), [0.0, 0.0, 0.0])
            entry[0] += p.value
            if is_5xx:
                entry[1] += p.value
    if threshold_ms is not None:
        latencies = MonitoringQuery(
            _filter("request_latencies", service, revision),
            "ALIGN_DELTA",
            reducer="REDUCE_SUM",
            group_by=("resource.label.revision_name",),
            lookback_s=end - start,
            until=end,
        )
        left = max(0.001, deadline - time.monotonic())
        for s in await source.series(latencies, timeout_s=left):
            rev = s.labels.get("revision_name", revision)
            for p in s.points:
                if not isinstance(p.value, Distribution):
                    raise MetricSourceError("request_latencies answered a number, not a distribution")
                if start < p.end <= end and (rev, p.end) in minutes:
                    slow = p.value.count - p.value.count_at_or_under(threshold_ms)
                    minutes[(rev, p.end)][2] += max(0.0, slow)
    return {k: v for k, v in sorted(minutes.items()) if v[0] > 0}


class CloudRunTrafficProbe:
    kind = KIND

    def __init__(
        self,
        config: CloudRunTrafficProbeConfig,
        *,
        defaults: ProbeDefaults,
        clock: Clock,
        google_cloud: GoogleCloud | None = None,
        source: CloudMonitoringMetricSource | None = None,
    ) -> None:
        self.config = config
        self.name = config.name
        self.interval_s = config.interval if config.interval is not None else defaults.interval
        self.timeout_s = config.timeout if config.timeout is not None else defaults.timeout
        self._clock = clock
        self.service = config.service or (google_cloud.cloud_run_service if google_cloud else "")
        self._problem = ""
        if not self.service:
            self._problem = "no Cloud Run service: set service or google_cloud.cloud_run_service"
        elif source is None and google_cloud is None:
            self._problem = "no google_cloud settings in watchdog.yaml (project, and where Cloud Run runs)"
        else:
            try:
                cloud_run_service(self.service)
            except MetricSourceError as exc:
                self._problem = str(exc)
        self.source = source
        if source is None and google_cloud is not None and not self._problem:
            self.source = CloudMonitoringMetricSource(
                google_cloud.project, endpoint=endpoint_of(google_cloud), clock=clock
            )
        self._cursor: float | None = None
        """The end of the newest minute recorded (None: nothing yet)."""

    async def run(self) -> list[ProbeResult]:
        started = self._clock.now()
        threshold = self.config.latency_threshold
        result: dict[str, Any] = {
            "probe": self.name,
            "kind": KIND,
            "target": self.service,
            "started_at": started,
            "labels": dict(self.config.labels),
        }

        def done(outcome: Outcome, reason: str = "", obs: tuple[Observation, ...] = ()) -> list[ProbeResult]:
            latency = max(0.0, self._clock.now() - started)
            return [
                ProbeResult(outcome=outcome, latency_s=latency, reason=reason, observations=obs, **result)
            ]

        if self._problem or self.source is None:
            return done(Outcome.FAILED, self._problem or "no Cloud Monitoring source")
        end = complete_until(started)
        start = end - SAMPLE_PERIOD_S if self._cursor is None else max(self._cursor, end - MAX_CATCH_UP_S)
        if end <= start:
            return done(Outcome.OK, "no new complete minute yet")
        try:
            minutes = await traffic_minutes(
                self.source,
                self.service,
                self.config.revision,
                start,
                end,
                threshold_ms=threshold * 1000.0 if threshold is not None else None,
                timeout_s=self.timeout_s,
            )
        except MetricSourceError as exc:
            return done(Outcome.FAILED, str(exc))
        self._cursor = end
        obs: list[Observation] = []
        for (revision, _minute_end), (requests, errors, slow) in minutes.items():
            labels = {**self.config.labels, "revision": revision}
            obs.append(Observation(REQUESTS, requests, labels))
            obs.append(Observation(ERRORS_5XX, errors, labels))
            if threshold is not None:
                obs.append(Observation(SLOW, slow, labels))
        revisions = sorted({rev for rev, _ in minutes})
        n = round((end - start) / SAMPLE_PERIOD_S)
        what = f"{n} minute{'s' if n != 1 else ''} to {_hhmm(end)} UTC"
        reason = f"{what}: {', '.join(revisions)}" if revisions else f"{what}: no requests"
        return done(Outcome.OK, reason, tuple(obs))

    async def aclose(self) -> None:
        if self.source is not None:
            await self.source.aclose()


def _hhmm(epoch: float) -> str:
    return time.strftime("%H:%M", time.gmtime(epoch))

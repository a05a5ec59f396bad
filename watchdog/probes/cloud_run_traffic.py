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
    cloud_run_service,
    cloud_run_traffic_minutes,
    complete_until,
    endpoint_of,
)

KIND = "cloud_run_traffic"
REQUESTS, ERRORS_5XX, SLOW = "cloud_run_requests", "cloud_run_5xx", "cloud_run_slow"
MAX_CATCH_UP_S = 3600.0
"""A run reads at most this much history (after a long outage of Cloud Monitoring, older minutes are
skipped)."""


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
            minutes = await cloud_run_traffic_minutes(
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
        for (revision, _minute_end), minute in minutes.items():
            labels = {**self.config.labels, "revision": revision}
            obs.append(Observation(REQUESTS, minute.requests, labels))
            obs.append(Observation(ERRORS_5XX, minute.errors_5xx, labels))
            if threshold is not None:
                obs.append(Observation(SLOW, minute.slow, labels))
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

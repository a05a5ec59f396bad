"""The watchdog's own results written to Cloud Monitoring as custom metrics, for Cloud Monitoring dashboards
and alert policies (``google_cloud.export_metrics``).

Read at export time, like a Prometheus collector at scrape time, from what the daemon already holds:

==================================================  ====================  ==============================
metric (``<prefix>/…``, GAUGE)                      labels                from
==================================================  ====================  ==============================
``probe/success`` (INT64, 1 unless failed)          probe, kind, + the    the store's latest result per
``probe/latency`` (DOUBLE, s)                       result's labels       series (as /metrics)
``slo/budget_remaining`` (DOUBLE, ratio)            slo                   the SLO engine's last evaluation
``slo/burn_rate`` (DOUBLE)                          slo, window
``canary/percent`` (DOUBLE, % to the db variant)    rollout               the rollout record in the store
``canary/held`` (INT64, 1 while rolled back/held)   rollout
``incidents/open`` (INT64)                          severity              open incidents in the store
==================================================  ====================  ==============================

Within the API's documented limits: at most 200 time series per ``CreateTimeSeries`` request, one point per
series per request, and a series written at most once every 5 s (``export_metrics.every`` is at least 10 s
and an export less than 5 s after the previous one is skipped). The monitored resource is ``generic_task``
(``project_id``, ``location`` = ``google_cloud.region`` or ``global``, ``namespace`` ``sre-watchdog``, ``job``
``watchdog``, ``task_id`` = the daemon's instance name): each replica writes its own series, so two replicas
never write the same series twice in 5 s; a ``global`` resource would need an instance label to do the same.

Metric descriptors are created on first use (``CreateMetricDescriptor``, kind, value type, unit and
description), and again when a label key shows up that the descriptor lacks (the API adds labels, never
removes them). Auto-creation from the first write would also work, but it infers the value type from that
one point and has no description or unit.

Failures: UNAVAILABLE and DEADLINE_EXCEEDED are retried (tenacity, jittered backoff) within the export's
``timeout``; anything else fails that request. Every failed request counts in
``watchdog_gcp_export_failures_total{reason}`` and every point written in ``watchdog_gcp_export_points_total``
on the daemon's registry. An export never raises and never blocks probes: it is its own scheduled job, bounded
by ``timeout``, and its API calls are coroutines on the daemon's loop. A request the API refuses as a whole is
counted as not written (the API may have written part of it; the summary in its error is not parsed).
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from prometheus_client import CollectorRegistry, Counter

from watchdog.canary.guard import HELD, ROLLED_BACK, ROLLING_BACK, CanaryGuard
from watchdog.config.alerts import SEVERITIES
from watchdog.config.gcp import CloudMonitoringExport, GoogleCloud
from watchdog.core.clock import Clock
from watchdog.core.results import Outcome, ProbeResult
from watchdog.incidents.manager import OPEN_STATES
from watchdog.sources.base import MetricSourceError
from watchdog.sources.cloud_monitoring import (
    call_with_retries,
    describe_endpoint,
    describe_error,
    endpoint_of,
    open_monitoring_client,
    status_name,
)
from watchdog.store.base import StateStore, StoreUnavailable

if TYPE_CHECKING:
    from google.cloud.monitoring_v3 import MetricServiceAsyncClient

    from watchdog.slo.engine import SloEngine

_log = logging.getLogger(__name__)

MAX_SERIES_PER_REQUEST = 200
"""``CreateTimeSeries``: "The maximum number of TimeSeries objects per Create request is 200"."""
MIN_POINT_SPACING_S = 5.0
"""Cloud Monitoring quotas: one point per time series every 5 seconds at most."""
NAMESPACE = "sre-watchdog"
JOB = "watchdog"
_LABEL_KEY = re.compile(r"[^a-z0-9_]")
_MAX_LABEL_VALUE = 1024
_HELD_STATES = frozenset({ROLLED_BACK, ROLLING_BACK, HELD})


@dataclass(frozen=True, slots=True)
class MetricSpec:
    name: str
    """Suffix after the prefix (``probe/success``)."""
    value_type: str
    """``INT64`` or ``DOUBLE``."""
    unit: str
    description: str


METRICS: dict[str, MetricSpec] = {
    spec.name: spec
    for spec in (
        MetricSpec("probe/success", "INT64", "1", "1 unless the probe's last result failed (degraded is 1)."),
        MetricSpec("probe/latency", "DOUBLE", "s", "Latency of the probe's last result."),
        MetricSpec(
            "slo/budget_remaining",
            "DOUBLE",
            "1",
            "Share of the SLO window's error budget left; negative when overspent.",
        ),
        MetricSpec(
            "slo/burn_rate",
            "DOUBLE",
            "1",
            "Error ratio over the window divided by the allowed error ratio (1 = on budget).",
        ),
        MetricSpec("canary/percent", "DOUBLE", "%", "Share of users the rollout's flag sends to the canary."),
        MetricSpec(
            "canary/held",
            "INT64",
            "1",
            "1 while the rollout is rolled back, rolling back or held, waiting for a person.",
        ),
        MetricSpec("incidents/open", "INT64", "1", "Open (firing or acknowledged) incidents by severity."),
    )
}


@dataclass(frozen=True, slots=True)
class MetricPoint:
    metric: str
    """A ``METRICS`` key."""
    labels: Mapping[str, str]
    value: float


@dataclass
class ExportReport:
    """What one export did."""

    at: float
    points: int = 0
    written: int = 0
    requests: int = 0
    failed_requests: int = 0
    skipped: str = ""
    errors: list[str] = field(default_factory=list)


class ExportSource(Protocol):
    """What an export reads: the daemon (``watchdog.runtime.daemon.Daemon``) satisfies it."""

    @property
    def store(self) -> StateStore: ...

    @property
    def slo_engine(self) -> SloEngine | None: ...

    @property
    def guards(self) -> Sequence[CanaryGuard]: ...

    async def latest_results(self) -> list[ProbeResult]: ...


def label_key(key: str) -> str:
    """A Cloud Monitoring label key (lowercase letters, digits, underscores; a letter first)."""
    out = _LABEL_KEY.sub("_", key.lower())[:100]
    return out if out[:1].isalpha() else f"l_{out}"[:100]


def _labels(items: Mapping[str, str]) -> dict[str, str]:
    return {label_key(k): str(v)[:_MAX_LABEL_VALUE] for k, v in items.items()}


async def collect(state: ExportSource) -> tuple[list[MetricPoint], list[str]]:
    """Every point of one export from ``state`` now, and what could not be read (the store down)."""
    points: list[MetricPoint] = []
    problems: list[str] = []
    try:
        latest = await state.latest_results()
    except (TimeoutError, StoreUnavailable) as exc:
        problems.append(f"probe results not read: {exc or 'the store did not answer'}")
        latest = []
    for r in latest:
        labels = _labels({**r.labels, "probe": r.probe, "kind": r.kind})
        points.append(MetricPoint("probe/success", labels, 0.0 if r.outcome is Outcome.FAILED else 1.0))
        if math.isfinite(r.latency_s):
            points.append(MetricPoint("probe/latency", labels, r.latency_s))
    engine = state.slo_engine
    evaluation = engine.last if engine is not None else None
    if evaluation is not None:
        for s in evaluation.statuses:
            if math.isfinite(s.budget.remaining):
                points.append(MetricPoint("slo/budget_remaining", {"slo": s.name}, s.budget.remaining))
            # As /metrics: each alert window, and the SLO window itself unless an alert window has its label.
            whole = "calendar_month" if s.window.startswith("calendar month") else s.window
            windows = dict(s.windows)
            windows.setdefault(whole, s.slo_window)
            for label, w in sorted(windows.items()):
                if math.isfinite(w.burn_rate):
                    points.append(MetricPoint("slo/burn_rate", {"slo": s.name, "window": label}, w.burn_rate))
    try:
        for guard in state.guards:
            record = await state.store.get_incident(guard.key)
            if record is None:
                continue
            rollout = {"rollout": guard.rollout.name}
            percent = float(record.data.get("percent", 0.0) or 0.0)
            points.append(MetricPoint("canary/percent", rollout, percent))
            points.append(MetricPoint("canary/held", rollout, 1.0 if record.state in _HELD_STATES else 0.0))
        counts: dict[str, int] = dict.fromkeys(SEVERITIES, 0)
        for incident in await state.store.list_incidents(list(OPEN_STATES)):
            severity = str(incident.data.get("severity", "warning"))
            counts[severity] = counts.get(severity, 0) + 1
        points.extend(MetricPoint("incidents/open", {"severity": k}, float(n)) for k, n in counts.items())
    except StoreUnavailable as exc:
        problems.append(f"rollouts and incidents not read: {exc}")
    return points, problems


class CloudMonitoringExporter:
    """``export(state)`` once per ``export_metrics.every`` (the daemon's ``gcp-export`` job)."""

    def __init__(
        self,
        settings: GoogleCloud,
        export: CloudMonitoringExport,
        registry: CollectorRegistry,
        instance: str,
        *,
        clock: Clock,
    ) -> None:
        # Loaded at wiring, not on the first export: importing the client takes ~1 s of the event loop.
        import google.cloud.monitoring_v3  # noqa: F401

        self.project = settings.project
        self.endpoint = endpoint_of(settings)
        self.every = export.every
        self.timeout_s = export.timeout
        self.prefix = export.prefix.rstrip("/")
        self.clock = clock
        self.resource_labels = {
            "project_id": settings.project,
            "location": settings.region or "global",
            "namespace": NAMESPACE,
            "job": JOB,
            "task_id": instance[:_MAX_LABEL_VALUE],
        }
        self.failures = Counter(
            "watchdog_gcp_export_failures",
            "Cloud Monitoring export requests that failed after retries (writes and metric descriptors), "
            "and exports that could not read the state they export.",
            ["reason"],
            registry=registry,
        )
        self.points_written = Counter(
            "watchdog_gcp_export_points",
            "Points written to Cloud Monitoring.",
            registry=registry,
        )
        self._client: MetricServiceAsyncClient | None = None
        self._descriptor_labels: dict[str, frozenset[str]] = {}
        self._last_end = -math.inf
        self._last_problem = ""
        self.last: ExportReport | None = None

    def metric_type(self, metric: str) -> str:
        return f"{self.prefix}/{metric}"

    async def export(self, state: ExportSource) -> ExportReport:
        """Read ``state`` and write it; never raises (what went wrong is counted, logged and returned)."""
        now = self.clock.now()
        report = ExportReport(at=now)
        if now - self._last_end < MIN_POINT_SPACING_S:
            report.skipped = f"the previous export was {now - self._last_end:.1f}s ago (at most one per 5 s)"
            self.last = report
            return report
        try:
            async with asyncio.timeout(self.timeout_s):
                await self._export(state, now, report)
        except TimeoutError:
            self._fail(report, "TIMEOUT", f"export did not finish within {self.timeout_s:g}s")
        except Exception as exc:  # a bug here must not take the job (or the daemon's log) down with it
            _log.exception("Cloud Monitoring export failed")
            self._fail(report, type(exc).__name__, f"export failed: {type(exc).__name__}")
        problem = "; ".join(report.errors)
        if problem != self._last_problem:
            if problem:
                _log.warning("Cloud Monitoring export: %s", problem, extra={"gcp_export": report.errors})
            else:
                _log.info("Cloud Monitoring export: writing again (%d points)", report.written)
            self._last_problem = problem
        self.last = report
        return report

    def _fail(self, report: ExportReport, reason: str, message: str) -> None:
        self.failures.labels(reason=reason).inc()
        report.errors.append(message)

    async def _export(self, state: ExportSource, now: float, report: ExportReport) -> None:
        deadline = self.clock.monotonic() + self.timeout_s
        points, problems = await collect(state)
        for problem in problems:
            self._fail(report, "STATE", problem)
        report.points = len(points)
        if not points:
            return
        try:
            client = await self._get_client()
        except MetricSourceError as exc:  # no credentials
            self._fail(report, "CREDENTIALS", str(exc))
            return
        ready = await self._ensure_descriptors(client, points, report, deadline)
        selected = [p for p in points if p.metric in ready]
        self._last_end = now
        for start in range(0, len(selected), MAX_SERIES_PER_REQUEST):
            batch = selected[start : start + MAX_SERIES_PER_REQUEST]
            request = self._request(batch, now)
            report.requests += 1

            async def write(left: float, request: Any = request) -> None:
                await client.create_time_series(request=request, retry=None, timeout=left)

            try:
                await call_with_retries(write, self._left(deadline))
            except Exception as exc:
                report.failed_requests += 1
                self._fail(report, status_name(exc), describe_error(exc, self.project, action="write to"))
                continue
            report.written += len(batch)
            self.points_written.inc(len(batch))

    def _left(self, deadline: float) -> float:
        return max(0.001, deadline - self.clock.monotonic())

    async def _get_client(self) -> MetricServiceAsyncClient:
        if self._client is None:
            self._client = await open_monitoring_client(self.endpoint)
        return self._client

    async def _ensure_descriptors(
        self,
        client: MetricServiceAsyncClient,
        points: Sequence[MetricPoint],
        report: ExportReport,
        deadline: float,
    ) -> set[str]:
        """The metrics whose descriptor has every label key the points use (created or extended now)."""
        from google.api import label_pb2, metric_pb2  # type: ignore[import-untyped]

        keys: dict[str, set[str]] = {}
        for p in points:
            keys.setdefault(p.metric, set()).update(p.labels)
        ready: set[str] = set()
        for metric, needed in sorted(keys.items()):
            have = self._descriptor_labels.get(metric)
            if have is not None and needed <= have:
                ready.add(metric)
                continue
            spec = METRICS[metric]
            labels = sorted(needed | (have or frozenset()))
            descriptor = metric_pb2.MetricDescriptor(
                type=self.metric_type(metric),
                metric_kind=metric_pb2.MetricDescriptor.MetricKind.GAUGE,
                value_type=metric_pb2.MetricDescriptor.ValueType.Value(spec.value_type),
                unit=spec.unit,
                description=spec.description,
                display_name=f"watchdog {metric.replace('/', ' ').replace('_', ' ')}",
                labels=[label_pb2.LabelDescriptor(key=k, value_type="STRING") for k in labels],
            )

            async def create(left: float, descriptor: Any = descriptor) -> None:
                await client.create_metric_descriptor(
                    name=f"projects/{self.project}", metric_descriptor=descriptor, retry=None, timeout=left
                )

            try:
                await call_with_retries(create, self._left(deadline))
            except Exception as exc:
                why = describe_error(exc, self.project, action="write to")
                self._fail(report, status_name(exc), f"{metric} descriptor: {why}")
                continue
            self._descriptor_labels[metric] = frozenset(labels)
            ready.add(metric)
        return ready

    def _request(self, batch: Sequence[MetricPoint], now: float) -> Any:
        """One ``CreateTimeSeriesRequest``, built on the protobuf message itself: proto-plus wrappers cost
        ~0.15 ms a series, most of an export's CPU, and the time the event loop is not running probes."""
        from google.cloud import monitoring_v3

        pb = monitoring_v3.CreateTimeSeriesRequest.pb()(name=f"projects/{self.project}")
        seconds = math.floor(now)
        nanos = min(999_999_999, round((now - seconds) * 1e9))
        for p in batch:
            ts = pb.time_series.add()
            ts.metric.type = self.metric_type(p.metric)
            ts.metric.labels.update(p.labels)
            ts.resource.type = "generic_task"
            ts.resource.labels.update(self.resource_labels)
            point = ts.points.add()
            point.interval.end_time.seconds = seconds
            point.interval.end_time.nanos = nanos
            if METRICS[p.metric].value_type == "INT64":
                point.value.int64_value = int(p.value)
            else:
                point.value.double_value = p.value
        return monitoring_v3.CreateTimeSeriesRequest.wrap(pb)

    def __repr__(self) -> str:
        return f"CloudMonitoringExporter({self.project!r}, {describe_endpoint(self.endpoint)!r})"

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.transport.close()  # type: ignore[no-untyped-call]

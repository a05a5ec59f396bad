"""Cloud Monitoring time series as a ``MetricSource``: Cloud SQL and Cloud Run numbers found nowhere else.

A query is a Monitoring filter, optionally followed by ``|`` and options::

    metric.type="cloudsql.googleapis.com/database/cpu/utilization" AND resource.labels.database_id="P:I"
    metric.type="run.googleapis.com/request_count" | aligner=ALIGN_DELTA period=60s reducer=REDUCE_SUM
        group_by=resource.label.revision_name,metric.label.response_code_class

Options: ``aligner``/``period``/``reducer``/``group_by`` (the API's ``Aggregation``), ``lookback`` (how far
back to read, default 10 min), ``delay`` (aligned queries end this long before now, default 210 s), ``scale``
(multiply every value, e.g. 100 for a 0–1 utilization). Named shortcuts cover the Cloud SQL metrics the
``host`` check and a database page need, built from ``google_cloud.cloud_sql_instance`` (or ``@P:R:I``)::

    cloudsql:cpu_percent  cloudsql:memory_percent  cloudsql:disk_percent  cloudsql:up
    cloudsql:num_backends  cloudsql:num_backends_by_state  cloudsql:replica_lag_seconds

Time: Cloud SQL and Cloud Run sample every 60 s and a point becomes visible up to ~3.5 min after it was
taken. A raw query therefore reads the last ``lookback`` (10 min: several points of a healthy series, so a
late point never reads as "no data") and returns each series' newest point with ``Sample.timestamp`` = its
end time, so a check can say how old it is. An aligned query (sums, rates, cross-series reductions) ends its
window on a period boundary at least ``delay`` before now, where every series' data is complete: a sum over a
minute whose points are still arriving would read low.

Errors: PERMISSION_DENIED and UNAUTHENTICATED, RESOURCE_EXHAUSTED (quota), INVALID_ARGUMENT (a bad filter)
raise ``MetricSourceError`` at once; UNAVAILABLE and DEADLINE_EXCEEDED are retried with jittered exponential
backoff (tenacity) within the query's timeout. A filter that matches nothing is an empty result.

Client: google-cloud-monitoring's ``MetricServiceAsyncClient`` on its gRPC asyncio transport (the library
ships no REST transport): the daemon is one asyncio loop, so a query is a coroutine on that loop instead of a
thread per call. ``google_cloud.endpoints["monitoring"]`` overrides the endpoint; an ``http://`` one is an
insecure channel without credentials (a server on loopback in tests), anything else uses Application Default
Credentials. Nothing Google is imported until a source (or ``open_monitoring_client``) is built.

Cloud Run per revision, for error-rate and latency SLIs and canary cohorts from real traffic:
``cloud_run_request_counts`` and ``cloud_run_latencies``.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from watchdog.config.gcp import GoogleCloud
from watchdog.core.clock import Clock, SystemClock
from watchdog.core.durations import parse_duration
from watchdog.core.redact import redact_url
from watchdog.sources.base import MetricSourceError, Sample

if TYPE_CHECKING:
    from google.cloud.monitoring_v3 import MetricServiceAsyncClient

SAMPLE_PERIOD_S = 60.0
"""Cloud SQL and Cloud Run metrics are sampled once a minute."""
COMPLETE_AFTER_S = 210.0
"""How long after its end a minute's data is complete: Cloud SQL's documented visibility delay is up to
210 s, Cloud Run's 180 s."""
DEFAULT_LOOKBACK_S = 600.0
"""How far back a query reads by default: a minute's sampling plus the ingestion delay, twice over."""
STALE_AFTER_S = 90.0
"""A point older than this is worth mentioning next to its value (checks say "N min old")."""
SCOPES = (
    "https://www.googleapis.com/auth/monitoring.read",
    "https://www.googleapis.com/auth/monitoring.write",
)

CLOUD_SQL_PREFIX = "cloudsql.googleapis.com/"
CLOUD_RUN_PREFIX = "run.googleapis.com/"
CPU_PERCENT = "cloudsql:cpu_percent"
MEMORY_PERCENT = "cloudsql:memory_percent"

_RETRY_INITIAL_S = 0.1
_RETRY_MAX_S = 1.0
_SHORTCUT = re.compile(r"^cloudsql:([a-z_]+)(?:@(\S+))?$")
_OPTION = re.compile(r"^([a-z_]+)=(\S+)$")
_ENUM_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")
_MAX_REASON = 300
_GRACE_S = 0.25
_T = TypeVar("_T")


def complete_until(now: float, complete_after_s: float = COMPLETE_AFTER_S) -> float:
    """The end of the newest minute whose data is complete at ``now`` (epoch seconds, a minute boundary)."""
    return math.floor((now - complete_after_s) / SAMPLE_PERIOD_S) * SAMPLE_PERIOD_S


@dataclass(frozen=True, slots=True)
class MonitoringQuery:
    """One ``ListTimeSeries`` call: a filter, an optional aggregation and how to place its time window."""

    filter: str
    aligner: str = ""
    """``Aggregation.Aligner`` name (``ALIGN_MEAN``, ``ALIGN_DELTA``, ``ALIGN_RATE`` …); empty: raw points."""
    period_s: float = SAMPLE_PERIOD_S
    reducer: str = ""
    """``Aggregation.Reducer`` name (``REDUCE_SUM`` …) combining series; needs an aligner."""
    group_by: tuple[str, ...] = ()
    lookback_s: float = DEFAULT_LOOKBACK_S
    complete_after_s: float = COMPLETE_AFTER_S
    scale: float = 1.0
    until: float | None = None
    """An aligned query's fixed end (epoch seconds, on a minute boundary) instead of the last complete
    boundary before now: a caller that has placed its window itself (the canary's Cloud Run cohorts). Not
    part of the text form."""

    def window(self, now: float) -> tuple[float, float]:
        """(start, end) epoch seconds: raw reads end now, aligned ones on the last complete boundary."""
        if not self.aligner:
            return now - self.lookback_s, now
        # On a minute boundary (Cloud SQL and Cloud Run sample per minute): its periods hold whole minutes.
        end = complete_until(now, self.complete_after_s) if self.until is None else self.until
        return end - max(self.lookback_s, self.period_s), end

    def render(self) -> str:
        """The text form ``parse_query`` reads back."""
        opts: list[str] = []
        if self.aligner:
            opts += [f"aligner={self.aligner}", f"period={self.period_s:g}s"]
        if self.reducer:
            opts.append(f"reducer={self.reducer}")
        if self.group_by:
            opts.append("group_by=" + ",".join(self.group_by))
        if self.lookback_s != DEFAULT_LOOKBACK_S:
            opts.append(f"lookback={self.lookback_s:g}s")
        if self.aligner and self.complete_after_s != COMPLETE_AFTER_S:
            opts.append(f"delay={self.complete_after_s:g}s")
        if self.scale != 1.0:
            opts.append(f"scale={self.scale:g}")
        return self.filter + (" | " + " ".join(opts) if opts else "")


@dataclass(frozen=True, slots=True)
class Distribution:
    """A distribution point: ``counts[i]`` events fell in bucket i, whose upper bound is ``bounds[i]``
    (``bounds`` has one entry fewer than ``counts``: the last bucket is unbounded above)."""

    count: int
    bounds: tuple[float, ...]
    counts: tuple[int, ...]
    mean: float = 0.0

    def quantile(self, q: float) -> float | None:
        """The ``q`` quantile (0–1), interpolated linearly inside its bucket; None without events."""
        if self.count <= 0:
            return None
        rank = q * self.count
        seen = 0
        for i, n in enumerate(self.counts):
            if n and seen + n >= rank:
                lower = self.bounds[i - 1] if i > 0 else 0.0
                upper = self.bounds[i] if i < len(self.bounds) else lower
                return lower + (upper - lower) * ((rank - seen) / n)
            seen += n
        return self.bounds[-1] if self.bounds else self.mean

    def count_at_or_under(self, threshold: float) -> float:
        """Events at or under ``threshold``: exact when it is a bucket bound, else interpolated."""
        total = 0.0
        for i, n in enumerate(self.counts):
            lower = self.bounds[i - 1] if i > 0 else 0.0
            upper = self.bounds[i] if i < len(self.bounds) else math.inf
            if upper <= threshold:
                total += n
            elif lower < threshold and math.isfinite(upper):
                total += n * (threshold - lower) / (upper - lower)
        return total

    def merged(self, other: Distribution) -> Distribution:
        if other.bounds != self.bounds:
            raise MetricSourceError("cannot merge distributions with different buckets")
        count = self.count + other.count
        mean = (self.mean * self.count + other.mean * other.count) / count if count else 0.0
        counts = tuple(a + b for a, b in zip(self.counts, other.counts, strict=True))
        return Distribution(count, self.bounds, counts, mean)


@dataclass(frozen=True, slots=True)
class Point:
    end: float
    """Epoch seconds of the point's interval end."""
    start: float
    value: float | Distribution


@dataclass(frozen=True, slots=True)
class Series:
    metric_type: str
    labels: Mapping[str, str]
    """Resource labels, then metric labels (a metric label wins on a clash)."""
    points: tuple[Point, ...]
    """Newest first, as the API returns them."""


# -- query text ----------------------------------------------------------------------------------------


def database_id(connection_name: str) -> str:
    """Cloud SQL's ``database_id`` resource label (``PROJECT:INSTANCE``) of a connection name
    (``PROJECT:REGION:INSTANCE``; a domain-scoped ``example.com:PROJECT:REGION:INSTANCE`` works too)."""
    parts = connection_name.split(":")
    if len(parts) < 2 or not all(parts):
        raise MetricSourceError(
            f"{connection_name!r} is not a Cloud SQL connection name (PROJECT:REGION:INSTANCE)"
        )
    if len(parts) == 2:
        return connection_name
    return ":".join([*parts[:-2], parts[-1]])


def cloud_sql_filter(metric: str, instance: str) -> str:
    """The filter for one Cloud SQL metric (``database/cpu/utilization``) of one instance."""
    return (
        f'metric.type="{CLOUD_SQL_PREFIX}{metric}" AND resource.type="cloudsql_database" '
        f'AND resource.labels.database_id="{database_id(instance)}"'
    )


def cloud_sql_queries(instance: str) -> dict[str, MonitoringQuery]:
    """The shortcut queries for one instance, by name."""

    def raw(metric: str, scale: float = 1.0) -> MonitoringQuery:
        return MonitoringQuery(cloud_sql_filter(metric, instance), scale=scale)

    # num_backends is one series per database; the instance's total sums them, minute by minute.
    backends = MonitoringQuery(
        cloud_sql_filter("database/postgresql/num_backends", instance), "ALIGN_MAX", reducer="REDUCE_SUM"
    )
    by_state = MonitoringQuery(
        cloud_sql_filter("database/postgresql/num_backends_by_state", instance),
        "ALIGN_MAX",
        reducer="REDUCE_SUM",
        group_by=("metric.label.state",),
    )
    return {
        "cpu_percent": raw("database/cpu/utilization", 100.0),
        "memory_percent": raw("database/memory/utilization", 100.0),
        "disk_percent": raw("database/disk/utilization", 100.0),
        "up": raw("database/up"),
        "replica_lag_seconds": raw("database/replication/replica_lag"),
        "num_backends": backends,
        "num_backends_by_state": by_state,
    }


def _split_options(text: str) -> tuple[str, str]:
    """(filter, options) split at the first ``|`` outside double quotes."""
    quoted = False
    escaped = False
    for i, ch in enumerate(text):
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == "|" and not quoted:
            return text[:i].strip(), text[i + 1 :].strip()
    return text.strip(), ""


def parse_query(text: str, *, cloud_sql_instance: str = "") -> MonitoringQuery:
    """A query's text (filter or shortcut, then options) as a ``MonitoringQuery``; MetricSourceError if
    bad."""
    head, options = _split_options(text)
    if not head:
        raise MetricSourceError("empty Cloud Monitoring query")
    shortcut = _SHORTCUT.match(head)
    if shortcut is not None:
        name, instance = shortcut.group(1), shortcut.group(2) or cloud_sql_instance
        if not instance:
            raise MetricSourceError(
                f"{head}: no Cloud SQL instance (set google_cloud.cloud_sql_instance or write {head}@P:R:I)"
            )
        table = cloud_sql_queries(instance)
        if name not in table:
            raise MetricSourceError(f"unknown shortcut cloudsql:{name}; known: {', '.join(sorted(table))}")
        query = table[name]
    elif head.startswith("cloudsql:"):
        raise MetricSourceError(f"{head!r} is not a shortcut (cloudsql:NAME or cloudsql:NAME@P:R:I)")
    else:
        query = MonitoringQuery(head)
    for token in options.split():
        m = _OPTION.match(token)
        if m is None:
            raise MetricSourceError(f"option {token!r} is not key=value")
        key, value = m.groups()
        try:
            query = _apply_option(query, key, value)
        except ValueError as exc:
            raise MetricSourceError(f"option {token!r}: {exc}") from None
    if query.reducer and not query.aligner:
        raise MetricSourceError("a reducer needs an aligner (aligner=ALIGN_… period=60s)")
    if query.aligner and query.period_s < 60:
        raise MetricSourceError("period must be at least 60s (the API's minimum alignment period)")
    return query


def _apply_option(query: MonitoringQuery, key: str, value: str) -> MonitoringQuery:
    if key in ("aligner", "reducer"):
        if not _ENUM_NAME.match(value):
            raise ValueError(f"{value!r} is not an {key} name")
        return replace(query, aligner=value) if key == "aligner" else replace(query, reducer=value)
    if key == "period":
        return replace(query, period_s=parse_duration(value))
    if key == "group_by":
        return replace(query, group_by=tuple(f for f in value.split(",") if f))
    if key == "lookback":
        return replace(query, lookback_s=parse_duration(value))
    if key == "delay":
        return replace(query, complete_after_s=parse_duration(value))
    if key == "scale":
        scale = float(value)
        if not math.isfinite(scale):
            raise ValueError("scale must be finite")
        return replace(query, scale=scale)
    raise ValueError("unknown option (aligner, period, reducer, group_by, lookback, delay, scale)")


# -- the client ------------------------------------------------------------------------------------------


def endpoint_of(settings: GoogleCloud | None) -> str:
    return (settings.endpoints.get("monitoring", "") if settings is not None else "").strip()


def describe_endpoint(endpoint: str) -> str:
    return redact_url(endpoint) if endpoint else "monitoring.googleapis.com"


async def open_monitoring_client(endpoint: str = "") -> MetricServiceAsyncClient:
    """A ``MetricServiceAsyncClient`` on the running loop. ``http://HOST:PORT``: an insecure channel without
    credentials; otherwise (``https://HOST[:PORT]``, ``HOST[:PORT]`` or empty for Google's) Application
    Default Credentials, looked up in a thread (on Google Cloud that asks the metadata server)."""
    from google.cloud.monitoring_v3 import MetricServiceAsyncClient
    from google.cloud.monitoring_v3.services.metric_service.transports.grpc_asyncio import (
        MetricServiceGrpcAsyncIOTransport,
    )

    if endpoint.startswith("http://"):
        import grpc  # type: ignore[import-untyped]
        from google.auth.credentials import AnonymousCredentials

        target = endpoint.removeprefix("http://").rstrip("/")
        transport = MetricServiceGrpcAsyncIOTransport(
            channel=grpc.aio.insecure_channel(target),
            credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
        )
        return MetricServiceAsyncClient(transport=transport)
    import google.auth
    from google.api_core.client_options import ClientOptions
    from google.auth.exceptions import DefaultCredentialsError

    try:
        credentials, _project = await asyncio.to_thread(google.auth.default, scopes=list(SCOPES))
    except DefaultCredentialsError:
        raise MetricSourceError(
            "no Google credentials: Application Default Credentials not found (run on Google Cloud with a "
            "service account, or set GOOGLE_APPLICATION_CREDENTIALS)"
        ) from None
    host = endpoint.removeprefix("https://").rstrip("/")
    options = ClientOptions(api_endpoint=host) if host else None
    return MetricServiceAsyncClient(credentials=credentials, client_options=options)


def _google_errors() -> dict[str, type[Exception]]:
    from google.api_core import exceptions as gexc

    return {
        "permission": gexc.PermissionDenied,
        "unauthenticated": gexc.Unauthenticated,
        "quota": gexc.ResourceExhausted,
        "invalid": gexc.InvalidArgument,
        "not_found": gexc.NotFound,
        "unavailable": gexc.ServiceUnavailable,
        "deadline": gexc.DeadlineExceeded,
        "api": gexc.GoogleAPICallError,
    }


def _message(exc: BaseException) -> str:
    text = str(getattr(exc, "message", "") or exc)
    return redact_url(text.replace("\n", " "))[:_MAX_REASON]


def status_name(exc: BaseException) -> str:
    """The gRPC status of an API error (``UNAVAILABLE``), else the exception's type name."""
    code = getattr(exc, "grpc_status_code", None)
    return str(getattr(code, "name", None) or type(exc).__name__)


def describe_error(exc: BaseException, project: str, *, action: str = "read") -> str:
    """A reason for an API error: what the status means for us, the server's message (redacted, short)."""
    e = _google_errors()
    if isinstance(exc, e["permission"]):
        return (
            f"Cloud Monitoring refused to {action} project {project}: permission denied (the watchdog's "
            f"service account needs roles/monitoring.{'viewer' if action == 'read' else 'metricWriter'}): "
            f"{_message(exc)}"
        )
    if isinstance(exc, e["unauthenticated"]):
        return f"Cloud Monitoring rejected the credentials (UNAUTHENTICATED): {_message(exc)}"
    if isinstance(exc, e["quota"]):
        return f"Cloud Monitoring quota exhausted for project {project} (RESOURCE_EXHAUSTED): {_message(exc)}"
    if isinstance(exc, e["invalid"]):
        return f"Cloud Monitoring rejected the request (INVALID_ARGUMENT): {_message(exc)}"
    if isinstance(exc, e["not_found"]):
        return f"Cloud Monitoring: not found (NOT_FOUND): {_message(exc)}"
    if isinstance(exc, e["api"]):
        return f"Cloud Monitoring call failed ({status_name(exc)}): {_message(exc)}"
    return f"Cloud Monitoring call failed: {type(exc).__name__}"


def retryable(exc: BaseException) -> bool:
    e = _google_errors()
    return isinstance(exc, e["unavailable"] | e["deadline"])


async def call_with_retries(
    call: Callable[[float], Awaitable[_T]], budget_s: float, attempts: list[int] | None = None
) -> _T:
    """``call(seconds_left)`` until it returns or raises something other than UNAVAILABLE/DEADLINE_EXCEEDED;
    those are retried with jittered exponential backoff (0.1 s doubling to 1 s) while a retry can still
    start within ``budget_s``. The last error is re-raised. ``attempts[0]`` counts the calls made."""
    from tenacity import AsyncRetrying, retry_if_exception, stop_before_delay, wait_exponential_jitter

    deadline = time.monotonic() + budget_s
    retrying = AsyncRetrying(
        retry=retry_if_exception(retryable),
        wait=wait_exponential_jitter(multiplier=_RETRY_INITIAL_S, max=_RETRY_MAX_S, jitter=_RETRY_INITIAL_S),
        stop=stop_before_delay(budget_s),
        reraise=True,
    )
    async for attempt in retrying:
        with attempt:
            if attempts is not None:
                attempts[0] += 1
            return await call(max(0.001, deadline - time.monotonic()))
    raise AssertionError("unreachable: tenacity re-raises the last error")  # pragma: no cover


# -- the source ------------------------------------------------------------------------------------------


class CloudMonitoringMetricSource:
    """Implements ``MetricSource`` over ``projects.timeSeries.list``; ``series`` gives the parsed series
    (distributions included) for callers that need more than one number per series."""

    name = "cloud-monitoring"

    def __init__(
        self,
        project: str,
        *,
        endpoint: str = "",
        cloud_sql_instance: str = "",
        clock: Clock | None = None,
        client_factory: Callable[[str], Any] | None = None,
    ) -> None:
        if not project:
            raise ValueError("a Cloud Monitoring source needs a project")
        # Loaded now, at wiring, so the first query does not stall the event loop importing ~1 s of modules.
        import google.cloud.monitoring_v3  # noqa: F401

        self.project = project
        self.endpoint = endpoint
        self.cloud_sql_instance = cloud_sql_instance
        self.clock: Clock = clock or SystemClock()
        self._factory = client_factory or open_monitoring_client
        self._client: MetricServiceAsyncClient | None = None
        self._opening = asyncio.Lock()
        self._closed = False

    @classmethod
    def from_settings(
        cls, settings: GoogleCloud, *, cloud_sql_instance: str | None = None
    ) -> CloudMonitoringMetricSource:
        return cls(
            settings.project,
            endpoint=endpoint_of(settings),
            cloud_sql_instance=settings.cloud_sql_instance
            if cloud_sql_instance is None
            else cloud_sql_instance,
        )

    def __repr__(self) -> str:
        return f"CloudMonitoringMetricSource({self.project!r}, {describe_endpoint(self.endpoint)!r})"

    async def _get_client(self) -> MetricServiceAsyncClient:
        async with self._opening:
            if self._closed:
                raise MetricSourceError("Cloud Monitoring source is closed")
            if self._client is None:
                self._client = await self._factory(self.endpoint)
            return self._client

    async def query(self, query: str, *, timeout_s: float = 5.0) -> Sequence[Sample]:
        q = parse_query(query, cloud_sql_instance=self.cloud_sql_instance)
        samples: list[Sample] = []
        for s in await self.series(q, timeout_s=timeout_s):
            if not s.points:
                continue
            newest = s.points[0]
            if isinstance(newest.value, Distribution):
                raise MetricSourceError(
                    f"{s.metric_type} is distribution-valued: add aligner=ALIGN_PERCENTILE_95 (or another "
                    "percentile), or use cloud_run_latencies"
                )
            if math.isfinite(newest.value):
                samples.append(Sample(newest.value * q.scale, dict(s.labels), newest.end))
        return samples

    async def series(self, q: MonitoringQuery, *, timeout_s: float = 5.0) -> list[Series]:
        """Every series matching ``q`` in its window, each with its points (newest first)."""
        where = describe_endpoint(self.endpoint)
        attempts = [0]
        try:
            # tenacity stops before a retry would start past the budget and each call gets what is left of
            # it as its deadline; this bound is the backstop.
            async with asyncio.timeout(timeout_s + _GRACE_S):
                return await call_with_retries(lambda left: self._list(q, left), timeout_s, attempts)
        except TimeoutError:
            raise MetricSourceError(
                f"Cloud Monitoring at {where} did not answer within {timeout_s:g}s"
            ) from None
        except MetricSourceError:
            raise
        except Exception as exc:
            if retryable(exc):
                raise MetricSourceError(
                    f"Cloud Monitoring at {where} unavailable ({status_name(exc)}, {attempts[0]} attempts in "
                    f"{timeout_s:g}s): {_message(exc)}"
                ) from None
            raise MetricSourceError(describe_error(exc, self.project)) from None

    async def _list(self, q: MonitoringQuery, timeout_s: float) -> list[Series]:
        from google.cloud import monitoring_v3

        start, end = q.window(self.clock.now())
        request = monitoring_v3.ListTimeSeriesRequest(
            name=f"projects/{self.project}",
            filter=q.filter,
            interval=monitoring_v3.TimeInterval(start_time=_timestamp(start), end_time=_timestamp(end)),
            view=monitoring_v3.ListTimeSeriesRequest.TimeSeriesView.FULL,
        )
        if q.aligner:
            aligners = monitoring_v3.Aggregation.Aligner.__members__
            reducers = monitoring_v3.Aggregation.Reducer.__members__
            if q.aligner not in aligners or (q.reducer or "REDUCE_NONE") not in reducers:
                unknown = q.aligner if q.aligner not in aligners else q.reducer
                raise MetricSourceError(f"unknown aligner or reducer {unknown!r}")
            request.aggregation = monitoring_v3.Aggregation(
                alignment_period=timedelta(seconds=int(q.period_s)),
                per_series_aligner=aligners[q.aligner],
                cross_series_reducer=reducers[q.reducer or "REDUCE_NONE"],
                group_by_fields=list(q.group_by),
            )
        client = await self._get_client()
        pager = await client.list_time_series(request=request, retry=None, timeout=timeout_s)
        out: list[Series] = []
        async for ts in pager:
            out.append(_series(monitoring_v3.TimeSeries.pb(ts)))
        return out

    async def aclose(self) -> None:
        async with self._opening:
            self._closed = True
            client, self._client = self._client, None
        if client is not None:
            await client.transport.close()  # type: ignore[no-untyped-call]


def _timestamp(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def _epoch(ts: Any) -> float:
    return float(ts.seconds) + float(ts.nanos) / 1e9


def _series(pb: Any) -> Series:
    labels = dict(pb.resource.labels)
    labels.update(pb.metric.labels)
    points = tuple(
        Point(_epoch(p.interval.end_time), _epoch(p.interval.start_time), _value(p.value, pb.metric.type))
        for p in pb.points
    )
    return Series(pb.metric.type, labels, points)


def _value(tv: Any, metric_type: str) -> float | Distribution:
    kind = tv.WhichOneof("value")
    if kind == "double_value":
        return float(tv.double_value)
    if kind == "int64_value":
        return float(tv.int64_value)
    if kind == "bool_value":
        return 1.0 if tv.bool_value else 0.0
    if kind == "distribution_value":
        return distribution(tv.distribution_value)
    raise MetricSourceError(f"{metric_type} has a {kind or 'missing'} value, not a number")


def distribution(d: Any) -> Distribution:
    """A ``google.api.Distribution`` as bounds and counts (trailing zero buckets restored)."""
    opts = d.bucket_options
    which = opts.WhichOneof("options")
    bounds: tuple[float, ...]
    if which == "linear_buckets":
        lb = opts.linear_buckets
        bounds = tuple(lb.offset + lb.width * i for i in range(lb.num_finite_buckets + 1))
    elif which == "exponential_buckets":
        eb = opts.exponential_buckets
        bounds = tuple(eb.scale * eb.growth_factor**i for i in range(eb.num_finite_buckets + 1))
    elif which == "explicit_buckets":
        bounds = tuple(opts.explicit_buckets.bounds)
    else:
        bounds = ()
    counts = list(d.bucket_counts) or [int(d.count)]
    counts += [0] * (len(bounds) + 1 - len(counts))
    return Distribution(int(d.count), bounds, tuple(int(c) for c in counts), float(d.mean))


# -- Cloud Run, per revision -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RevisionCounts:
    """Requests a revision served in ``[start, end)`` and how many answered 5xx."""

    total: int
    errors_5xx: int
    start: float
    end: float

    @property
    def error_ratio(self) -> float | None:
        return self.errors_5xx / self.total if self.total else None


@dataclass(frozen=True, slots=True)
class RevisionLatency:
    """A revision's request latencies (milliseconds, as Cloud Run reports them) over ``[start, end)``."""

    distribution: Distribution
    start: float
    end: float
    threshold_ms: float | None = None
    at_or_under: float | None = None
    """Requests at or under ``threshold_ms`` (exact when it is a bucket bound): the good events of a
    latency SLI."""
    quantiles: dict[float, float | None] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return self.distribution.count


def cloud_run_service(service: str) -> tuple[str, str]:
    """(location, name) of ``projects/P/locations/R/services/S`` (or a bare name: location "")."""
    parts = service.strip("/").split("/")
    if len(parts) == 6 and parts[0] == "projects" and parts[2] == "locations" and parts[4] == "services":
        return parts[3], parts[5]
    if len(parts) == 1 and parts[0]:
        return "", parts[0]
    raise MetricSourceError(
        f"{service!r} is not a Cloud Run service (projects/P/locations/R/services/S or S)"
    )


def cloud_run_filter(metric: str, service: str) -> str:
    location, name = cloud_run_service(service)
    where = f' AND resource.labels.location="{location}"' if location else ""
    return (
        f'metric.type="{CLOUD_RUN_PREFIX}{metric}" AND resource.type="cloud_run_revision" '
        f'AND resource.labels.service_name="{name}"{where}'
    )


def _window_query(
    metric: str, service: str, window_s: float, complete_after_s: float, group_by: tuple[str, ...]
) -> MonitoringQuery:
    if window_s < 60 or window_s % 60:
        raise MetricSourceError("a Cloud Run window must be whole minutes (at least 60 s)")
    # One aligned point per series covering exactly the window.
    return MonitoringQuery(
        cloud_run_filter(metric, service),
        "ALIGN_DELTA",
        period_s=window_s,
        reducer="REDUCE_SUM",
        group_by=group_by,
        lookback_s=window_s,
        complete_after_s=complete_after_s,
    )


async def cloud_run_request_counts(
    source: CloudMonitoringMetricSource,
    service: str,
    window_s: float = 300.0,
    *,
    timeout_s: float = 10.0,
    complete_after_s: float = COMPLETE_AFTER_S,
) -> dict[str, RevisionCounts]:
    """Requests per revision of ``service`` over the last complete ``window_s`` (whole minutes) and their
    5xx: ``run.googleapis.com/request_count`` aligned with ALIGN_DELTA over the window, summed
    (REDUCE_SUM) by revision and response code class. The window ends ``complete_after_s`` before now on a
    minute boundary, where Cloud Run's data is complete; each result carries it. A revision without traffic
    in the window is absent. For the canary: the canary revision's errors against the stable one's."""
    q = _window_query(
        "request_count",
        service,
        window_s,
        complete_after_s,
        ("resource.label.revision_name", "metric.label.response_code_class"),
    )
    start, end = q.window(source.clock.now())
    totals: dict[str, list[int]] = {}
    for s in await source.series(q, timeout_s=timeout_s):
        revision = s.labels.get("revision_name", "")
        n = int(sum(p.value for p in s.points if not isinstance(p.value, Distribution)))
        entry = totals.setdefault(revision, [0, 0])
        entry[0] += n
        if s.labels.get("response_code_class") == "5xx":
            entry[1] += n
    return {rev: RevisionCounts(t, e, start, end) for rev, (t, e) in sorted(totals.items())}


async def cloud_run_latencies(
    source: CloudMonitoringMetricSource,
    service: str,
    window_s: float = 300.0,
    *,
    threshold_ms: float | None = None,
    quantiles: Sequence[float] = (0.5, 0.95, 0.99),
    timeout_s: float = 10.0,
    complete_after_s: float = COMPLETE_AFTER_S,
) -> dict[str, RevisionLatency]:
    """Request latencies per revision of ``service`` over the last complete ``window_s``:
    ``run.googleapis.com/request_latencies`` (a delta distribution) aligned with ALIGN_DELTA and merged
    (REDUCE_SUM) by revision, so quantiles and the count under a threshold come from every request's
    bucket, not from an average of per-instance percentiles."""
    q = _window_query(
        "request_latencies", service, window_s, complete_after_s, ("resource.label.revision_name",)
    )
    start, end = q.window(source.clock.now())
    merged: dict[str, Distribution] = {}
    for s in await source.series(q, timeout_s=timeout_s):
        revision = s.labels.get("revision_name", "")
        for p in s.points:
            if not isinstance(p.value, Distribution):
                raise MetricSourceError("request_latencies answered a number, not a distribution")
            have = merged.get(revision)
            merged[revision] = p.value if have is None else have.merged(p.value)
    return {
        rev: RevisionLatency(
            d,
            start,
            end,
            threshold_ms,
            d.count_at_or_under(threshold_ms) if threshold_ms is not None else None,
            {q_: d.quantile(q_) for q_ in quantiles},
        )
        for rev, d in sorted(merged.items())
    }


@dataclass(frozen=True, slots=True)
class RevisionMinute:
    """One minute of one revision's traffic, ``[end - 60, end)``: its requests, their 5xx and (when asked
    for a threshold) the requests slower than it (from the latency distribution's buckets: exact when the
    threshold is a bucket bound, else interpolated inside its bucket)."""

    end: float
    requests: int
    errors_5xx: int
    slow: float = 0.0


def revision_filter(metric: str, service: str, revision: str) -> str:
    """The filter for one Cloud Run metric of one revision of ``service``."""
    return f'{cloud_run_filter(metric, service)} AND resource.labels.revision_name="{revision}"'


async def cloud_run_traffic_minutes(
    source: CloudMonitoringMetricSource,
    service: str,
    revision: str,
    start: float,
    end: float,
    *,
    threshold_ms: float | None = None,
    timeout_s: float = 10.0,
) -> dict[tuple[str, float], RevisionMinute]:
    """Cloud Run traffic minute by minute over ``[start, end)`` (both minute boundaries, placed by the
    caller where the data is complete: ``complete_until``), per revision: of one ``revision``, or of every
    revision when it is empty. ``{(revision, minute end): RevisionMinute}``, oldest first; a minute without
    requests is absent. ``request_count`` aligned with ALIGN_DELTA per minute and summed by revision and
    response code class; with ``threshold_ms``, also ``request_latencies`` merged per minute and revision (a
    second call within the same ``timeout_s``: both or neither)."""
    if start % SAMPLE_PERIOD_S or end % SAMPLE_PERIOD_S or end <= start:
        raise MetricSourceError("traffic minutes need whole-minute bounds, start before end")
    deadline = time.monotonic() + timeout_s

    def metric_filter(metric: str) -> str:
        return revision_filter(metric, service, revision) if revision else cloud_run_filter(metric, service)

    # One revision: its filter selects it already; every revision: one series per revision.
    by_revision: tuple[str, ...] = () if revision else ("resource.label.revision_name",)
    counts = MonitoringQuery(
        metric_filter("request_count"),
        "ALIGN_DELTA",
        reducer="REDUCE_SUM",
        group_by=(*by_revision, "metric.label.response_code_class"),
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
        latencies = replace(counts, filter=metric_filter("request_latencies"), group_by=by_revision)
        left = max(0.001, deadline - time.monotonic())
        for s in await source.series(latencies, timeout_s=left):
            rev = s.labels.get("revision_name", revision)
            for p in s.points:
                if not isinstance(p.value, Distribution):
                    raise MetricSourceError("request_latencies answered a number, not a distribution")
                if start < p.end <= end and (rev, p.end) in minutes:
                    slow = p.value.count - p.value.count_at_or_under(threshold_ms)
                    minutes[(rev, p.end)][2] += max(0.0, slow)
    return {
        key: RevisionMinute(key[1], round(n), round(e), slow)
        for key, (n, e, slow) in sorted(minutes.items())
        if n > 0
    }


async def cloud_run_revision_minutes(
    source: CloudMonitoringMetricSource,
    service: str,
    revision: str,
    start: float,
    end: float,
    *,
    threshold_ms: float | None = None,
    timeout_s: float = 10.0,
) -> list[RevisionMinute]:
    """One revision's traffic minute by minute (``cloud_run_traffic_minutes``), oldest first."""
    minutes = await cloud_run_traffic_minutes(
        source, service, revision, start, end, threshold_ms=threshold_ms, timeout_s=timeout_s
    )
    return list(minutes.values())


def newest(samples: Sequence[Sample]) -> float | None:
    """The newest timestamp among ``samples`` (None when none has one)."""
    stamps = [s.timestamp for s in samples if s.timestamp is not None]
    return max(stamps) if stamps else None


__all__ = [
    "COMPLETE_AFTER_S",
    "CPU_PERCENT",
    "DEFAULT_LOOKBACK_S",
    "MEMORY_PERCENT",
    "STALE_AFTER_S",
    "CloudMonitoringMetricSource",
    "Distribution",
    "MonitoringQuery",
    "Point",
    "RevisionCounts",
    "RevisionLatency",
    "RevisionMinute",
    "Series",
    "cloud_run_latencies",
    "cloud_run_request_counts",
    "cloud_run_revision_minutes",
    "cloud_run_traffic_minutes",
    "cloud_sql_queries",
    "complete_until",
    "describe_error",
    "open_monitoring_client",
    "parse_query",
]

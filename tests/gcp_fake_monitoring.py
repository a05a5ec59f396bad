"""A Cloud Monitoring ``MetricService`` on loopback, for the real google-cloud-monitoring client.

A real gRPC server (grpcio, insecure, 127.0.0.1) speaking ``google.monitoring.v3.MetricService`` with the
library's own message classes: ``ListTimeSeries``, ``CreateTimeSeries``, ``CreateMetricDescriptor`` and
``GetMetricDescriptor``. It records every request and answers from the series it holds, as the API does:

- filters: ``metric.type``, ``resource.type``, ``metric.label(s).K``, ``resource.label(s).K``, ``project``
  with ``=``, ``!=`` or ``starts_with("…")``, joined by ``AND``; anything else is INVALID_ARGUMENT;
- intervals: points whose end time is in ``[start, end]``; a series without such points is not returned;
  ``visible_until`` hides points ending later (Cloud Monitoring's ingestion delay);
- aggregation: alignment periods ending at the interval's end (``ALIGN_MEAN/MAX/MIN/SUM/DELTA/RATE``), then
  ``REDUCE_SUM/MEAN/MAX/MIN/COUNT`` grouped by ``group_by_fields`` (distributions merge under SUM);
- writes: at most 200 series per request, exactly one point each, no series twice in a request, each point
  newer than the series' last and at least 5 s after it, a ``custom.googleapis.com/`` type, a ``global`` or
  ``generic_task`` resource with all its labels, labels matching the descriptor when there is one
  (INVALID_ARGUMENT otherwise, as the API answers);
- ``fail(method, code, message, times)`` makes the next calls of a method fail with a gRPC status.

Run as a script it serves synthetic Cloud SQL and Cloud Run data (``populate``) until stdin closes, printing
its endpoint first (the benchmark runs it in a separate process so its CPU is not counted).
"""

from __future__ import annotations

import math
import re
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc  # type: ignore[import-untyped]
from google.api import distribution_pb2, metric_pb2  # type: ignore[import-untyped]
from google.cloud import monitoring_v3
from google.protobuf import empty_pb2  # type: ignore[import-untyped]

SERVICE = "google.monitoring.v3.MetricService"
MAX_SERIES_PER_WRITE = 200
MIN_WRITE_INTERVAL_S = 5.0
RESOURCE_LABELS = {
    "global": ("project_id",),
    "generic_task": ("project_id", "location", "namespace", "job", "task_id"),
}

Aligner = monitoring_v3.Aggregation.Aligner
Reducer = monitoring_v3.Aggregation.Reducer
MetricKind = metric_pb2.MetricDescriptor.MetricKind

_pb_request = monitoring_v3.ListTimeSeriesRequest.pb()
_pb_response = monitoring_v3.ListTimeSeriesResponse.pb()
_pb_create = monitoring_v3.CreateTimeSeriesRequest.pb()
_pb_create_descriptor = monitoring_v3.CreateMetricDescriptorRequest.pb()
_pb_get_descriptor = monitoring_v3.GetMetricDescriptorRequest.pb()
_pb_series = monitoring_v3.TimeSeries.pb()


class Abort(Exception):
    def __init__(self, code: Any, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# -- stored data ---------------------------------------------------------------------------------------


@dataclass
class StoredPoint:
    start: float
    end: float
    value: Any
    """float/int, or a google.api.Distribution message."""


@dataclass
class StoredSeries:
    metric_type: str
    metric_labels: dict[str, str]
    resource_type: str
    resource_labels: dict[str, str]
    kind: int = MetricKind.GAUGE
    value_type: str = "double_value"
    points: list[StoredPoint] = field(default_factory=list)
    """Oldest first."""

    def key(self) -> tuple[Any, ...]:
        return (
            self.metric_type,
            tuple(sorted(self.metric_labels.items())),
            self.resource_type,
            tuple(sorted(self.resource_labels.items())),
        )


def _epoch(ts: Any) -> float:
    return float(ts.seconds) + float(ts.nanos) / 1e9


def _set_ts(ts: Any, epoch: float) -> None:
    seconds = math.floor(epoch)
    ts.seconds = seconds
    ts.nanos = round((epoch - seconds) * 1e9) % 1_000_000_000


# -- filters -------------------------------------------------------------------------------------------

_CLAUSE = re.compile(
    r"\s*(?P<key>[a-z_]+(?:\.[a-z_]+)*(?:\.[A-Za-z0-9_]+)?)\s*(?P<op>!=|=)\s*"
    r'(?:"(?P<value>(?:[^"\\]|\\.)*)"|starts_with\(\s*"(?P<prefix>(?:[^"\\]|\\.)*)"\s*\))\s*'
)
_KEY = re.compile(r"^(metric\.type|resource\.type|project|(metric|resource)\.labels?\.([A-Za-z0-9_]+))$")


def parse_filter(text: str) -> Callable[[StoredSeries, str], bool]:
    """A predicate over (series, project) for a Monitoring filter; Abort(INVALID_ARGUMENT) when the fake (or
    the API) cannot parse it."""
    clauses: list[tuple[str, bool, str, bool]] = []
    rest = text.strip()
    if not rest:
        raise Abort(grpc.StatusCode.INVALID_ARGUMENT, "filter must not be empty")
    while True:
        m = _CLAUSE.match(rest)
        if m is None or not _KEY.match(m.group("key")):
            raise Abort(grpc.StatusCode.INVALID_ARGUMENT, f"Could not parse filter {text!r}")
        prefix = m.group("prefix")
        value = prefix if prefix is not None else m.group("value")
        clauses.append((m.group("key"), m.group("op") == "!=", value.replace('\\"', '"'), prefix is not None))
        rest = rest[m.end() :]
        if not rest:
            break
        if not rest.startswith("AND "):
            raise Abort(grpc.StatusCode.INVALID_ARGUMENT, f"Could not parse filter {text!r}")
        rest = rest[4:]
    if not any(k == "metric.type" for k, *_ in clauses):
        raise Abort(grpc.StatusCode.INVALID_ARGUMENT, "A filter must name a metric.type")

    def field_of(s: StoredSeries, project: str, key: str) -> str | None:
        if key == "metric.type":
            return s.metric_type
        if key == "resource.type":
            return s.resource_type
        if key == "project":
            return project
        parts = key.split(".")
        labels = s.metric_labels if parts[0] == "metric" else s.resource_labels
        return labels.get(parts[2])

    def predicate(s: StoredSeries, project: str) -> bool:
        for key, negate, value, is_prefix in clauses:
            have = field_of(s, project, key)
            hit = have is not None and (have.startswith(value) if is_prefix else have == value)
            if hit == negate:
                return False
        return True

    return predicate


def _label_field(name: str) -> tuple[str, str]:
    """``metric.label.K`` / ``resource.labels.K`` → (metric|resource, K)."""
    m = _KEY.match(name)
    if m is None or m.group(2) is None:
        raise Abort(grpc.StatusCode.INVALID_ARGUMENT, f"invalid group_by field {name!r}")
    return m.group(2), m.group(3)


# -- aggregation ---------------------------------------------------------------------------------------


def _merge_distributions(items: Sequence[Any]) -> Any:
    out = distribution_pb2.Distribution()
    out.CopyFrom(items[0])
    counts = list(items[0].bucket_counts)
    total = items[0].count
    weighted = items[0].mean * items[0].count
    for d in items[1:]:
        if d.bucket_options != out.bucket_options:
            raise Abort(grpc.StatusCode.INVALID_ARGUMENT, "distributions with different buckets")
        other = list(d.bucket_counts)
        size = max(len(counts), len(other))
        counts = [
            (counts[i] if i < len(counts) else 0) + (other[i] if i < len(other) else 0) for i in range(size)
        ]
        total += d.count
        weighted += d.mean * d.count
    del out.bucket_counts[:]
    out.bucket_counts.extend(counts)
    out.count = total
    out.mean = weighted / total if total else 0.0
    return out


def _is_distribution(value: Any) -> bool:
    return not isinstance(value, int | float)


def _align(
    s: StoredSeries, aligner: int, period: float, start: float, end: float
) -> tuple[list[StoredPoint], int, str]:
    buckets: list[StoredPoint] = []
    k = 0
    out_kind, out_type = MetricKind.GAUGE, "double_value"
    if aligner == Aligner.ALIGN_DELTA:
        out_kind, out_type = MetricKind.DELTA, s.value_type
    while True:
        b_end = end - k * period
        b_start = b_end - period
        if b_end <= start:
            break
        k += 1
        values = [p.value for p in s.points if b_start < p.end <= b_end]
        if not values:
            continue
        numbers = [float(v) for v in values if not _is_distribution(v)]
        if aligner in (Aligner.ALIGN_DELTA, Aligner.ALIGN_RATE, Aligner.ALIGN_SUM):
            if s.kind not in (MetricKind.DELTA, MetricKind.GAUGE) or (
                aligner != Aligner.ALIGN_SUM and s.kind != MetricKind.DELTA
            ):
                raise Abort(grpc.StatusCode.INVALID_ARGUMENT, "aligner not valid for this metric kind")
            if _is_distribution(values[0]):
                if aligner != Aligner.ALIGN_DELTA:
                    raise Abort(grpc.StatusCode.INVALID_ARGUMENT, "only ALIGN_DELTA keeps a distribution")
                value: Any = _merge_distributions(values)
            else:
                total = sum(numbers)
                value = total / period if aligner == Aligner.ALIGN_RATE else total
                if out_type == "int64_value":
                    value = int(value)
        elif _is_distribution(values[0]):
            raise Abort(
                grpc.StatusCode.INVALID_ARGUMENT, "the fake aligns distributions with ALIGN_DELTA only"
            )
        elif aligner == Aligner.ALIGN_MEAN:
            value = sum(numbers) / len(numbers)
        elif aligner == Aligner.ALIGN_MAX:
            value = max(numbers)
        elif aligner == Aligner.ALIGN_MIN:
            value = min(numbers)
        else:
            raise Abort(grpc.StatusCode.INVALID_ARGUMENT, f"aligner {aligner} not supported by the fake")
        p_start = b_start if out_kind == MetricKind.DELTA else b_end
        buckets.append(StoredPoint(p_start, b_end, value))
    return buckets, out_kind, out_type


def _reduce(aligned: list[StoredSeries], reducer: int, group_by: Sequence[str]) -> list[StoredSeries]:
    fields = [_label_field(f) for f in group_by]
    groups: dict[tuple[Any, ...], list[StoredSeries]] = {}
    for s in aligned:
        key = (
            s.resource_type,
            *(
                (s.metric_labels if where == "metric" else s.resource_labels).get(name, "")
                for where, name in fields
            ),
        )
        groups.setdefault(key, []).append(s)
    out: list[StoredSeries] = []
    for key, members in groups.items():
        first = members[0]
        metric_labels = {n: v for (w, n), v in zip(fields, key[1:], strict=True) if w == "metric"}
        resource_labels = {n: v for (w, n), v in zip(fields, key[1:], strict=True) if w == "resource"}
        by_end: dict[float, list[StoredPoint]] = {}
        for s in members:
            for p in s.points:
                by_end.setdefault(p.end, []).append(p)
        points: list[StoredPoint] = []
        value_type = first.value_type
        for end in sorted(by_end):
            ps = by_end[end]
            values = [p.value for p in ps]
            if _is_distribution(values[0]):
                if reducer != Reducer.REDUCE_SUM:
                    raise Abort(
                        grpc.StatusCode.INVALID_ARGUMENT, "the fake reduces distributions by SUM only"
                    )
                value: Any = _merge_distributions(values)
            else:
                nums = [float(v) for v in values]
                if reducer == Reducer.REDUCE_SUM:
                    value = sum(nums)
                elif reducer == Reducer.REDUCE_MEAN:
                    value, value_type = sum(nums) / len(nums), "double_value"
                elif reducer == Reducer.REDUCE_MAX:
                    value = max(nums)
                elif reducer == Reducer.REDUCE_MIN:
                    value = min(nums)
                elif reducer == Reducer.REDUCE_COUNT:
                    value, value_type = len(nums), "int64_value"
                else:
                    raise Abort(
                        grpc.StatusCode.INVALID_ARGUMENT, f"reducer {reducer} not supported by the fake"
                    )
                if value_type == "int64_value":
                    value = int(value)
            points.append(StoredPoint(ps[0].start, end, value))
        out.append(
            StoredSeries(
                first.metric_type,
                metric_labels,
                first.resource_type,
                resource_labels,
                first.kind,
                value_type,
                points,
            )
        )
    return out


# -- the service ---------------------------------------------------------------------------------------


@dataclass
class Recorded:
    method: str
    request: Any
    """The request message (protobuf), as the client sent it."""
    at: float


class FakeMonitoring:
    """Start with ``start()`` (returns the ``http://127.0.0.1:PORT`` endpoint), stop with ``stop()``."""

    def __init__(self, *, page_size: int = 100, project: str = "demo-project") -> None:
        self.page_size = page_size
        self.project = project
        self.series: dict[tuple[Any, ...], StoredSeries] = {}
        self.descriptors: dict[str, Any] = {}
        self.requests: list[Recorded] = []
        self.visible_until: float | None = None
        self.delay_s = 0.0
        """Every call waits this long before answering (a slow API)."""
        self._failures: dict[str, deque[tuple[Any, str]]] = {}
        self._lock = threading.Lock()
        self._server: Any = None
        self.endpoint = ""

    # -- control ----------------------------------------------------------------------------------------
    def start(self) -> str:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        handlers = {
            "ListTimeSeries": self._rpc(self._list, _pb_request.FromString),
            "CreateTimeSeries": self._rpc(self._create, _pb_create.FromString),
            "CreateMetricDescriptor": self._rpc(self._create_descriptor, _pb_create_descriptor.FromString),
            "GetMetricDescriptor": self._rpc(self._get_descriptor, _pb_get_descriptor.FromString),
        }
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        self._server = server
        self.endpoint = f"http://127.0.0.1:{port}"
        return self.endpoint

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(grace=0).wait()
            self._server = None

    def reset(self) -> None:
        with self._lock:
            self.series.clear()
            self.descriptors.clear()
            self.requests.clear()
            self._failures.clear()
            self.visible_until = None
            self.delay_s = 0.0

    def fail(self, method: str, code: Any, message: str, times: int = 1) -> None:
        """The next ``times`` calls of ``method`` answer with ``code``."""
        with self._lock:
            queue = self._failures.setdefault(method, deque())
            queue.extend([(code, message)] * times)

    def calls(self, method: str) -> list[Any]:
        with self._lock:
            return [r.request for r in self.requests if r.method == method]

    def add(
        self,
        metric_type: str,
        points: Iterable[tuple[float, Any]],
        *,
        metric_labels: Mapping[str, str] | None = None,
        resource_type: str = "global",
        resource_labels: Mapping[str, str] | None = None,
        kind: str = "GAUGE",
        period_s: float = 60.0,
    ) -> StoredSeries:
        """Add points ``(end, value)`` to a series (DELTA points cover ``period_s`` before their end)."""
        kind_value = MetricKind.Value(kind)
        stored = StoredSeries(
            metric_type, dict(metric_labels or {}), resource_type, dict(resource_labels or {}), kind_value
        )
        with self._lock:
            s = self.series.setdefault(stored.key(), stored)
            for end, value in sorted(points, key=lambda p: p[0]):
                if isinstance(value, bool):
                    s.value_type = "bool_value"
                elif isinstance(value, int):
                    s.value_type = "int64_value"
                elif isinstance(value, float):
                    s.value_type = "double_value"
                else:
                    s.value_type = "distribution_value"
                start = end - period_s if kind_value == MetricKind.DELTA else end
                s.points.append(StoredPoint(start, end, value))
        return s

    def points_written(self, metric_type: str) -> list[tuple[dict[str, str], float, float]]:
        """(metric labels, end, value) of every point written to ``metric_type``."""
        with self._lock:
            return [
                (dict(s.metric_labels), p.end, float(p.value))
                for s in self.series.values()
                if s.metric_type == metric_type
                for p in s.points
            ]

    # -- rpc plumbing -----------------------------------------------------------------------------------
    def _rpc(self, fn: Callable[[Any], Any], deserialize: Callable[[bytes], Any]) -> Any:
        name = fn.__name__

        def handler(request: Any, context: Any) -> Any:
            method = {
                "_list": "ListTimeSeries",
                "_create": "CreateTimeSeries",
                "_create_descriptor": "CreateMetricDescriptor",
                "_get_descriptor": "GetMetricDescriptor",
            }[name]
            with self._lock:
                self.requests.append(Recorded(method, request, time.time()))
                queue = self._failures.get(method)
                failure = queue.popleft() if queue else None
            if self.delay_s:
                time.sleep(self.delay_s)
            if failure is not None:
                context.abort(failure[0], failure[1])
            try:
                with self._lock:
                    return fn(request)
            except Abort as exc:
                context.abort(exc.code, exc.message)

        return grpc.unary_unary_rpc_method_handler(
            handler, request_deserializer=deserialize, response_serializer=lambda m: m.SerializeToString()
        )

    def _project(self, name: str) -> str:
        if not name.startswith("projects/") or name.count("/") != 1:
            raise Abort(grpc.StatusCode.INVALID_ARGUMENT, f"Name {name!r} is not projects/PROJECT")
        return name.removeprefix("projects/")

    # -- ListTimeSeries ---------------------------------------------------------------------------------
    def _list(self, req: Any) -> Any:
        project = self._project(req.name)
        predicate = parse_filter(req.filter)
        if not req.interval.HasField("end_time"):
            raise Abort(grpc.StatusCode.INVALID_ARGUMENT, "interval.end_time is required")
        end = _epoch(req.interval.end_time)
        start = _epoch(req.interval.start_time) if req.interval.HasField("start_time") else end
        if start > end:
            raise Abort(grpc.StatusCode.INVALID_ARGUMENT, "interval start is after its end")
        visible = self.visible_until
        selected: list[StoredSeries] = []
        for s in self.series.values():
            if not predicate(s, project):
                continue
            pts = [p for p in s.points if visible is None or p.end <= visible]
            selected.append(
                StoredSeries(
                    s.metric_type,
                    s.metric_labels,
                    s.resource_type,
                    s.resource_labels,
                    s.kind,
                    s.value_type,
                    pts,
                )
            )
        agg = req.aggregation
        aligner = agg.per_series_aligner
        if aligner != Aligner.ALIGN_NONE:
            period = float(agg.alignment_period.seconds)
            if period < 60:
                raise Abort(grpc.StatusCode.INVALID_ARGUMENT, "The alignment period must be at least 60s")
            aligned: list[StoredSeries] = []
            for s in selected:
                pts, kind, value_type = _align(s, aligner, period, start, end)
                aligned.append(
                    StoredSeries(
                        s.metric_type,
                        s.metric_labels,
                        s.resource_type,
                        s.resource_labels,
                        kind,
                        value_type,
                        sorted(pts, key=lambda p: p.end),
                    )
                )
            selected = aligned
            if agg.cross_series_reducer != Reducer.REDUCE_NONE:
                selected = _reduce(selected, agg.cross_series_reducer, list(agg.group_by_fields))
        elif agg.cross_series_reducer != Reducer.REDUCE_NONE:
            raise Abort(grpc.StatusCode.INVALID_ARGUMENT, "A reducer needs a per-series aligner")
        else:
            selected = [
                StoredSeries(
                    s.metric_type,
                    s.metric_labels,
                    s.resource_type,
                    s.resource_labels,
                    s.kind,
                    s.value_type,
                    [p for p in s.points if start <= p.end <= end],
                )
                for s in selected
            ]
        answer = [s for s in selected if s.points]
        offset = int(req.page_token) if req.page_token else 0
        size = req.page_size or self.page_size
        page = answer[offset : offset + size]
        resp = _pb_response()
        for s in page:
            ts = resp.time_series.add()
            ts.metric.type = s.metric_type
            ts.metric.labels.update(s.metric_labels)
            ts.resource.type = s.resource_type
            ts.resource.labels.update(s.resource_labels)
            ts.metric_kind = s.kind
            for p in reversed(s.points):  # newest first, as the API answers
                pt = ts.points.add()
                _set_ts(pt.interval.end_time, p.end)
                _set_ts(pt.interval.start_time, p.start)
                if s.value_type == "distribution_value":
                    pt.value.distribution_value.CopyFrom(p.value)
                elif s.value_type == "int64_value":
                    pt.value.int64_value = int(p.value)
                elif s.value_type == "bool_value":
                    pt.value.bool_value = bool(p.value)
                else:
                    pt.value.double_value = float(p.value)
        if offset + size < len(answer):
            resp.next_page_token = str(offset + size)
        return resp

    # -- CreateTimeSeries -------------------------------------------------------------------------------
    def _create(self, req: Any) -> Any:
        project = self._project(req.name)
        if not req.time_series:
            raise Abort(grpc.StatusCode.INVALID_ARGUMENT, "At least one TimeSeries is required")
        if len(req.time_series) > MAX_SERIES_PER_WRITE:
            raise Abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"Field timeSeries had an invalid value: at most {MAX_SERIES_PER_WRITE} TimeSeries a request",
            )
        staged: list[tuple[StoredSeries, StoredPoint]] = []
        seen: set[tuple[Any, ...]] = set()
        errors: list[str] = []
        for i, ts in enumerate(req.time_series):
            try:
                staged.append(self._check_write(i, ts, project, seen))
            except Abort as exc:
                errors.append(exc.message)
        if errors:
            raise Abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                "One or more TimeSeries could not be written: " + "; ".join(errors[:5]),
            )
        for stored, point in staged:
            s = self.series.setdefault(stored.key(), stored)
            s.points.append(point)
        return empty_pb2.Empty()

    def _check_write(
        self, i: int, ts: Any, project: str, seen: set[tuple[Any, ...]]
    ) -> tuple[StoredSeries, StoredPoint]:
        where = f"timeSeries[{i}]"
        metric_type = ts.metric.type
        if not metric_type.startswith("custom.googleapis.com/"):
            raise Abort(grpc.StatusCode.INVALID_ARGUMENT, f"{where}: {metric_type!r} is not a custom metric")
        needed = RESOURCE_LABELS.get(ts.resource.type)
        if needed is None:
            raise Abort(grpc.StatusCode.INVALID_ARGUMENT, f"{where}: resource type {ts.resource.type!r}")
        missing = [k for k in needed if not ts.resource.labels.get(k)]
        extra = [k for k in ts.resource.labels if k not in needed]
        if missing or extra:
            raise Abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"{where}: resource labels missing {missing} extra {extra}"
            )
        if ts.resource.labels["project_id"] != project:
            raise Abort(grpc.StatusCode.INVALID_ARGUMENT, f"{where}: resource project_id is not {project}")
        if len(ts.points) != 1:
            raise Abort(grpc.StatusCode.INVALID_ARGUMENT, f"{where}: exactly one point per TimeSeries")
        descriptor = self.descriptors.get(metric_type)
        if descriptor is not None:
            allowed = {label.key for label in descriptor.labels}
            unknown = [k for k in ts.metric.labels if k not in allowed]
            if unknown:
                raise Abort(
                    grpc.StatusCode.INVALID_ARGUMENT, f"{where}: labels {unknown} not in the descriptor"
                )
        point = ts.points[0]
        end = _epoch(point.interval.end_time)
        which = point.value.WhichOneof("value")
        stored = StoredSeries(
            metric_type,
            dict(ts.metric.labels),
            ts.resource.type,
            dict(ts.resource.labels),
            MetricKind.GAUGE,
            which or "double_value",
        )
        key = stored.key()
        if key in seen:
            raise Abort(grpc.StatusCode.INVALID_ARGUMENT, f"{where}: Duplicate TimeSeries encountered")
        seen.add(key)
        previous = self.series.get(key)
        if previous is not None and previous.points:
            last = previous.points[-1].end
            if end <= last:
                raise Abort(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"{where}: Points must be written in order; one or more points is older than "
                    "the most recent point",
                )
            if end - last < MIN_WRITE_INTERVAL_S:
                raise Abort(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"{where}: One or more points were written more frequently than the maximum "
                    "sampling period configured for the metric",
                )
        value: Any = getattr(point.value, which) if which else 0.0
        return stored, StoredPoint(end, end, value)

    # -- descriptors ------------------------------------------------------------------------------------
    def _create_descriptor(self, req: Any) -> Any:
        self._project(req.name)
        d = req.metric_descriptor
        if not d.type.startswith("custom.googleapis.com/"):
            raise Abort(grpc.StatusCode.INVALID_ARGUMENT, f"{d.type!r} is not a custom metric type")
        for label in d.labels:
            if not re.fullmatch(r"[a-z][a-z0-9_]{0,99}", label.key):
                raise Abort(grpc.StatusCode.INVALID_ARGUMENT, f"label key {label.key!r} is invalid")
        previous = self.descriptors.get(d.type)
        merged = type(d)()
        merged.CopyFrom(d)
        if previous is not None:  # labels are never removed
            keys = {label.key for label in d.labels}
            for label in previous.labels:
                if label.key not in keys:
                    merged.labels.add().CopyFrom(label)
        merged.name = f"{req.name}/metricDescriptors/{d.type}"
        self.descriptors[d.type] = merged
        return merged

    def _get_descriptor(self, req: Any) -> Any:
        type_ = req.name.partition("/metricDescriptors/")[2]
        found = self.descriptors.get(type_)
        if found is None:
            raise Abort(grpc.StatusCode.NOT_FOUND, f"Could not find descriptor for metric {type_!r}")
        return found


# -- synthetic Cloud SQL / Cloud Run data --------------------------------------------------------------


def latency_distribution(samples_ms: Sequence[float], *, growth: float = 1.4, buckets: int = 40) -> Any:
    """A Cloud Run-shaped latency distribution (exponential buckets, scale 1 ms) of ``samples_ms``."""
    counts = [0] * (buckets + 2)
    for x in samples_ms:
        if x < 1.0:
            counts[0] += 1
            continue
        i = min(buckets + 1, 1 + math.floor(math.log(x) / math.log(growth)))
        counts[i] += 1
    while len(counts) > 1 and counts[-1] == 0:
        counts.pop()
    d = distribution_pb2.Distribution(
        count=len(samples_ms),
        mean=sum(samples_ms) / len(samples_ms) if samples_ms else 0.0,
        bucket_options=distribution_pb2.Distribution.BucketOptions(
            exponential_buckets=distribution_pb2.Distribution.BucketOptions.Exponential(
                num_finite_buckets=buckets, growth_factor=growth, scale=1.0
            )
        ),
    )
    d.bucket_counts.extend(counts)
    return d


def add_revision_traffic(
    fake: FakeMonitoring,
    revision: str,
    ends: Iterable[float],
    requests: int,
    errors: int,
    *,
    project: str,
    service: str = "ai-square",
) -> None:
    """Cloud Run's own points for ``revision``: per minute ending at each of ``ends``, ``requests``
    requests of which ``errors`` answered 503, latencies 20-65 ms (a tenth each of 20, 25, ... 65)."""
    res = {
        "project_id": project,
        "service_name": service,
        "revision_name": revision,
        "location": "asia-east1",
        "configuration_name": service,
    }
    ends = list(ends)
    for cls, code, n in (("2xx", "200", requests - errors), ("5xx", "503", errors)):
        if n:
            fake.add(
                "run.googleapis.com/request_count",
                [(t, n) for t in ends],
                metric_labels={"response_code_class": cls, "response_code": code, "route": "/"},
                resource_type="cloud_run_revision",
                resource_labels=res,
                kind="DELTA",
            )
    samples = [20.0 + (i % 10) * 5 for i in range(requests)]
    fake.add(
        "run.googleapis.com/request_latencies",
        [(t, latency_distribution(samples)) for t in ends],
        resource_type="cloud_run_revision",
        resource_labels=res,
        kind="DELTA",
    )


def populate(
    fake: FakeMonitoring,
    *,
    now: float,
    minutes: int = 15,
    instance: str = "demo-project:asia-east1:content-db",
    service: str = "ai-square",
    revisions: Mapping[str, tuple[int, int]] | None = None,
    cpu: float = 0.35,
    memory: float = 0.45,
) -> None:
    """Cloud SQL gauges for ``instance`` and Cloud Run traffic for ``service`` every minute up to ``now``:
    ``revisions`` maps a revision to (requests, 5xx) per minute."""
    parts = instance.split(":")
    project, region = parts[0], parts[1]
    db = {"project_id": project, "database_id": f"{project}:{parts[-1]}", "region": region}
    ends = [math.floor(now / 60) * 60 - 60 * k for k in range(minutes)]
    sql = "cloudsql.googleapis.com/database/"
    fake.add(
        sql + "cpu/utilization",
        [(t, cpu) for t in ends],
        resource_type="cloudsql_database",
        resource_labels=db,
    )
    fake.add(
        sql + "memory/utilization",
        [(t, memory) for t in ends],
        resource_type="cloudsql_database",
        resource_labels=db,
    )
    fake.add(
        sql + "disk/utilization",
        [(t, 0.21) for t in ends],
        resource_type="cloudsql_database",
        resource_labels=db,
    )
    fake.add(sql + "up", [(t, 1) for t in ends], resource_type="cloudsql_database", resource_labels=db)
    fake.add(
        sql + "replication/replica_lag",
        [(t, 0.4) for t in ends],
        resource_type="cloudsql_database",
        resource_labels=db,
    )
    for name, n in (("content", 12), ("postgres", 2)):
        fake.add(
            sql + "postgresql/num_backends",
            [(t, n) for t in ends],
            metric_labels={"database": name},
            resource_type="cloudsql_database",
            resource_labels=db,
        )
    for state, n in (("active", 3), ("idle", 10), ("idle_in_transaction", 1)):
        fake.add(
            sql + "postgresql/num_backends_by_state",
            [(t, n) for t in ends],
            metric_labels={"database": "content", "state": state},
            resource_type="cloudsql_database",
            resource_labels=db,
        )
    revs = (
        revisions
        if revisions is not None
        else {"ai-square-00041-abc": (950, 1), "ai-square-00042-def": (50, 4)}
    )
    for rev, (total, errors) in revs.items():
        res = {
            "project_id": project,
            "service_name": service,
            "revision_name": rev,
            "location": region,
            "configuration_name": service,
        }
        for cls, code, n in (("2xx", "200", total - errors - 10), ("4xx", "404", 10), ("5xx", "503", errors)):
            fake.add(
                "run.googleapis.com/request_count",
                [(t, n) for t in ends],
                metric_labels={"response_code_class": cls, "response_code": code, "route": "/"},
                resource_type="cloud_run_revision",
                resource_labels=res,
                kind="DELTA",
            )
        slow = 400.0 if errors > 2 else 80.0
        samples = [20.0 + (i % 10) * 5 for i in range(total - 20)] + [slow] * 20
        fake.add(
            "run.googleapis.com/request_latencies",
            [(t, latency_distribution(samples)) for t in ends],
            resource_type="cloud_run_revision",
            resource_labels=res,
            kind="DELTA",
        )


def main(argv: Sequence[str]) -> int:
    """``python tests/gcp_fake_monitoring.py [AHEAD_S]``: serve synthetic data from 30 minutes ago to
    ``AHEAD_S`` seconds from now (for a caller whose clock runs ahead), print the endpoint, stop at EOF."""
    ahead = float(argv[0]) if argv else 0.0
    fake = FakeMonitoring(project="demo-project")
    populate(fake, now=time.time() + ahead, minutes=30 + math.ceil(ahead / 60))
    print(fake.start(), flush=True)
    try:
        sys.stdin.read()
    finally:
        fake.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

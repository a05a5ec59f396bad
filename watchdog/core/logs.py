"""Structured logs: one JSON object per line with ``severity`` and ``message`` (what Cloud Logging and
most log shippers read without parsing rules).

Two shapes. ``json`` (the default off Google Cloud): ``time``, ``severity``, ``message``, ``logger`` and the
record's extras as fields. ``cloud``: the shape Cloud Run's logging agent turns into a LogEntry (its
"special JSON fields"): ``severity`` on Cloud Logging's scale, ``message``, ``time`` (RFC 3339, UTC),
``logging.googleapis.com/labels`` (the record's string extras: instance, probe, alert, incident...),
``logging.googleapis.com/trace``/``spanId``/``trace_sampled`` when a request's trace is known
(``trace_context``), ``logging.googleapis.com/sourceLocation``, ``httpRequest`` (an ``http_request`` extra)
and an exception's traceback in ``stack_trace``, where Error Reporting finds it. Neither imports anything
Google: the cloud shape is plain JSON.
"""

from __future__ import annotations

import contextvars
import json
import logging
import math
import re
import sys
import traceback
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

from pythonjsonlogger.json import JsonFormatter

from watchdog.core.results import ProbeResult

LogFormat = Literal["json", "cloud"]

TRACE_FIELD = "logging.googleapis.com/trace"
SPAN_FIELD = "logging.googleapis.com/spanId"
SAMPLED_FIELD = "logging.googleapis.com/trace_sampled"
LABELS_FIELD = "logging.googleapis.com/labels"
SOURCE_FIELD = "logging.googleapis.com/sourceLocation"

_NOISY = ("apscheduler", "uvicorn.access", "httpx", "httpcore", "aiohttp.access")

_STANDARD = {"message", "asctime", "taskName", "color_message"}
_RECORD_ATTRS = frozenset(vars(logging.makeLogRecord({}))) | _STANDARD
"""What every LogRecord has; everything else on a record came from ``extra=``."""

_SPECIAL_EXTRAS = frozenset({"http_request", "trace", "span_id", "trace_sampled", "labels"})
"""Extras the cloud shape moves to LogEntry fields instead of keeping as payload fields."""

MAX_LABEL_CHARS = 1024
"""A label value longer than this stays a payload field (labels are for filtering, not for text)."""


def cloud_severity(levelno: int) -> str:
    """Python's level number on Cloud Logging's LogSeverity scale (NOTICE for a custom level 25)."""
    if levelno <= logging.NOTSET:
        return "DEFAULT"
    if levelno < logging.INFO:
        return "DEBUG"
    if levelno < 25:
        return "INFO"
    if levelno < logging.WARNING:
        return "NOTICE"
    if levelno < logging.ERROR:
        return "WARNING"
    if levelno < logging.CRITICAL:
        return "ERROR"
    return "CRITICAL"


# -- the trace of the request being served --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TraceContext:
    trace_id: str
    """32 hex digits."""
    span_id: str = ""
    """16 hex digits, or empty."""
    sampled: bool = False


_TRACE: contextvars.ContextVar[TraceContext | None] = contextvars.ContextVar("watchdog_trace", default=None)

_TRACEPARENT = re.compile(r"^\s*([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(?:-.*)?\s*$")
_CLOUD_TRACE = re.compile(r"^\s*([0-9a-fA-F]{32})(?:/(\d+))?(?:;o=([01]))?\s*$")


def parse_trace_headers(traceparent: str | None, cloud_trace_context: str | None) -> TraceContext | None:
    """The trace of a request: W3C ``traceparent`` first, then ``X-Cloud-Trace-Context``
    (``TRACE_ID/SPAN_ID;o=1``, the span id in decimal); None when neither is valid."""
    if traceparent:
        m = _TRACEPARENT.match(traceparent)
        if m and m.group(1) != "ff" and set(m.group(2)) != {"0"} and set(m.group(3)) != {"0"}:
            return TraceContext(m.group(2), m.group(3), bool(int(m.group(4), 16) & 1))
    if cloud_trace_context:
        m = _CLOUD_TRACE.match(cloud_trace_context)
        if m and set(m.group(1)) != {"0"}:
            span = int(m.group(2)) if m.group(2) else 0
            span_id = f"{span:016x}" if 0 < span < 2**64 else ""
            return TraceContext(m.group(1).lower(), span_id, m.group(3) == "1")
    return None


@contextmanager
def trace_context(trace: TraceContext | None) -> Iterator[None]:
    """Log records made inside (in this task, and in tasks and loop callbacks it starts) carry ``trace``."""
    token = _TRACE.set(trace)
    try:
        yield
    finally:
        _TRACE.reset(token)


def current_trace() -> TraceContext | None:
    return _TRACE.get()


# -- helpers for callers -------------------------------------------------------------------------------


def duration_text(seconds: float) -> str:
    """A protobuf Duration in JSON (``"0.123456s"``), as ``httpRequest.latency`` takes it."""
    return f"{max(0.0, seconds):.6f}s"


def probe_http_request(result: ProbeResult) -> dict[str, Any] | None:
    """``httpRequest`` for an HTTP probe's result: the URL it requested, the status it got (when it got
    one) and how long it took; None for results that are not an HTTP request."""
    if not result.target.startswith(("http://", "https://")):
        return None
    request: dict[str, Any] = {"requestUrl": result.target, "latency": duration_text(result.latency_s)}
    for observation in result.observations:
        if observation.name == "http_status_code" and math.isfinite(observation.value):
            request["status"] = int(observation.value)
    return request


# -- formatters ----------------------------------------------------------------------------------------


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _RECORD_ATTRS and not k.startswith("_")}


def _rfc3339(created: float) -> str:
    return datetime.fromtimestamp(created, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _label_value(value: object) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str) and value and len(value) <= MAX_LABEL_CHARS:
        return value
    return None


class CloudJsonFormatter(logging.Formatter):
    """One LogEntry per line in the shape Cloud Run's (and GKE's) logging agent reads: see the module
    docstring. ``project`` makes trace ids resource names (``projects/P/traces/T``; without it no trace
    is written); ``labels`` go on every entry (a record's own win). ``traceback_field``: where an
    exception's traceback goes; ``stack_trace`` makes Error Reporting group it from the log, another name
    (``traceback``) keeps it readable without Error Reporting counting it (when it gets it through its API).
    """

    def __init__(
        self,
        project: str = "",
        labels: Mapping[str, str] | None = None,
        traceback_field: str = "stack_trace",
    ) -> None:
        super().__init__()
        self.project = project
        self.labels = dict(labels or {})
        self.traceback_field = traceback_field

    def entry(self, record: logging.LogRecord) -> dict[str, Any]:
        """The LogEntry fields and the JSON payload of one record, as a dict."""
        entry: dict[str, Any] = {
            "severity": cloud_severity(record.levelno),
            "message": record.getMessage(),
            "time": _rfc3339(record.created),
            "logger": record.name,
        }
        extras = _extras(record)
        labels = dict(self.labels)
        nested = extras.get("labels")
        if isinstance(nested, Mapping):  # a probe result's aggregation labels: cohort, step, lang
            for key, value in nested.items():
                text = _label_value(value)
                if text is not None:
                    labels.setdefault(str(key), text)
        for key, value in extras.items():
            if key in _SPECIAL_EXTRAS:
                continue
            text = _label_value(value)
            if text is not None:
                labels[key] = text
            elif value is not None:
                entry[f"extra_{key}" if key in entry else key] = value  # never over severity, time...
        if labels:
            entry[LABELS_FIELD] = labels
        trace = current_trace()
        trace_id = extras.get("trace") or (trace.trace_id if trace else "")
        if trace_id and self.project:
            entry[TRACE_FIELD] = f"projects/{self.project}/traces/{trace_id}"
            span = extras.get("span_id") or (trace.span_id if trace else "")
            if span:
                entry[SPAN_FIELD] = span
            entry[SAMPLED_FIELD] = bool(extras.get("trace_sampled", trace.sampled if trace else False))
        entry[SOURCE_FIELD] = {"file": record.pathname, "line": record.lineno, "function": record.funcName}
        http_request = extras.get("http_request")
        if isinstance(http_request, Mapping) and http_request:
            entry["httpRequest"] = dict(http_request)
        if record.exc_info and record.exc_info[0] is not None:
            if not record.exc_text:
                record.exc_text = self.formatException(record.exc_info)
            entry[self.traceback_field] = record.exc_text
        elif record.stack_info:
            entry[self.traceback_field] = record.stack_info
        return entry

    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(self.entry(record), ensure_ascii=False, default=str)


def format_exception_text(exc: BaseException) -> str:
    """``Traceback (most recent call last): ...`` for an exception, as logging writes it."""
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)).rstrip("\n")


class _WatchdogJsonFormatter(JsonFormatter):
    def add_fields(
        self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        super().add_fields(log_data, record, message_dict)
        log_data["severity"] = record.levelname
        log_data["logger"] = record.name
        log_data.pop("levelname", None)
        log_data.pop("color_message", None)  # uvicorn's ANSI-coloured copy of the message


def json_formatter() -> logging.Formatter:
    return _WatchdogJsonFormatter(
        "{asctime}{levelname}{message}",
        style="{",
        rename_fields={"asctime": "time"},
        datefmt="%Y-%m-%dT%H:%M:%S%z",
        json_ensure_ascii=False,
    )


def configure_logging(
    level: str = "INFO",
    stream: TextIO | None = None,
    *,
    fmt: LogFormat = "json",
    formatter: logging.Formatter | None = None,
) -> logging.Handler:
    """Replace the root logger's handlers with one writing ``fmt`` lines (``formatter`` when given) to
    ``stream`` (default: stderr for ``json``, stdout for ``cloud``, where Cloud Run's agent reads them).
    Returns that handler; add others (``logging.getLogger().addHandler``) after this call."""
    if stream is None:
        stream = sys.stdout if fmt == "cloud" else sys.stderr
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter or (CloudJsonFormatter() if fmt == "cloud" else json_formatter()))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Third-party chatter at INFO would drown the probe log lines.
    for noisy in _NOISY:
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return handler

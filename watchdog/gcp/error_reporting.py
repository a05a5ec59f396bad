"""The watchdog's own errors in Error Reporting: exceptions (unhandled job errors, ``log.exception``),
ERROR log records (a failed rollback among them) and anything logged with an ``error_cause`` extra.

``ErrorReportingHandler`` sits on the root logger at ERROR and turns each record into a report;
``ErrorReporter`` sends the reports with google-cloud-error-reporting's ``ReportErrorsServiceClient``
(``projects.events.report``), from a thread of its own:

- **Never blocking, never raising.** ``submit`` puts the report on a bounded queue and returns; when the
  queue is full the report is dropped and counted. Whatever the API answers is counted, not raised.
- **Rate-limited per cause.** At most one report per cause per ``per_cause_every`` (10 min by default); the
  rest are counted as suppressed. The cause is the ``error_cause`` extra when a record has one, else the
  exception's type and where it was raised, else the logger and the line that logged it.
- **Retries that help.** UNAVAILABLE, DEADLINE_EXCEEDED and INTERNAL are retried with backoff within
  ``retry_deadline_s``; RESOURCE_EXHAUSTED (quota) is not retried: the sender pauses ``quota_pause_s``
  instead, and what arrives meanwhile waits in the queue.

The message of an exception's report is its traceback exactly as ``traceback.format_exc()`` writes it (the
form Error Reporting parses for Python); a record without an exception is reported with its message and
the place that logged it (``context.reportLocation``). ``google_cloud.endpoints["clouderrorreporting"]``
may name another endpoint: ``http://HOST:PORT`` is a plaintext gRPC channel without credentials (a server
on loopback in tests), anything else a TLS endpoint with Application Default Credentials.

Google's handwritten ``google.cloud.error_reporting.Client`` is not used: its ``report()`` takes the
location from its caller's frame (here: this handler), and it cannot be given a transport.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import grpc  # type: ignore[import-untyped]
from google.api_core import exceptions as gexc
from google.api_core.retry import Retry, if_exception_type
from google.cloud.errorreporting_v1beta1 import (
    ErrorContext,
    HttpRequestContext,
    ReportedErrorEvent,
    ReportErrorsServiceClient,
    ServiceContext,
    SourceLocation,
)
from google.cloud.errorreporting_v1beta1.services.report_errors_service.transports import (
    ReportErrorsServiceGrpcTransport,
)

_log = logging.getLogger(__name__)

ENDPOINT_KEY = "clouderrorreporting"
"""The key of ``google_cloud.endpoints`` this module reads."""

MAX_CAUSES = 10_000
"""Causes remembered for rate limiting; past it, the ones whose window has passed are forgotten."""

MAX_MESSAGE_CHARS = 60_000
"""Error Reporting truncates messages past about 64 KB; a longer traceback keeps its head and its tail
(the exception line)."""

_RETRIED = (gexc.ServiceUnavailable, gexc.DeadlineExceeded, gexc.InternalServerError)


@dataclass(frozen=True, slots=True)
class ErrorReport:
    cause: str
    """What rate limiting counts by."""
    message: str
    event_time: float
    """Epoch seconds."""
    file: str = ""
    line: int = 0
    function: str = ""
    http_request: Mapping[str, Any] | None = None
    """A LogEntry ``httpRequest`` (requestMethod, requestUrl, status, userAgent, remoteIp, referer)."""


@dataclass(frozen=True, slots=True)
class ReporterStats:
    submitted: int = 0
    """Reports offered (before rate limiting)."""
    sent: int = 0
    suppressed: int = 0
    """Not sent: their cause was reported less than ``per_cause_every`` ago."""
    dropped: int = 0
    """Not sent: the queue was full, or still held them at close."""
    failed: int = 0
    """Sent and refused, or not answered within the retry deadline."""
    retried: int = 0
    """Attempts that failed with a retried status before a later one went through or gave up."""
    failures: Mapping[str, int] = field(default_factory=dict)
    """``failed`` by status (``ResourceExhausted``, ``PermissionDenied``...)."""


_STOP = object()


def build_client(endpoint: str = "") -> ReportErrorsServiceClient:
    """The Error Reporting client for ``endpoint`` (see the module docstring); raises what
    Application Default Credentials raise when there are none."""
    if endpoint.startswith("http://"):
        channel = grpc.insecure_channel(endpoint.removeprefix("http://").rstrip("/"))
        return ReportErrorsServiceClient(transport=ReportErrorsServiceGrpcTransport(channel=channel))
    if endpoint:
        return ReportErrorsServiceClient(
            client_options={"api_endpoint": endpoint.removeprefix("https://").rstrip("/")}
        )
    return ReportErrorsServiceClient()


class ErrorReporter:
    """Sends ``ErrorReport``s to Error Reporting from a background thread (see the module docstring).
    ``clock``: monotonic seconds, for the rate limit."""

    def __init__(
        self,
        client: ReportErrorsServiceClient,
        project: str,
        service: str,
        version: str = "",
        *,
        per_cause_every: float = 600.0,
        queue_size: int = 100,
        send_timeout_s: float = 10.0,
        retry_deadline_s: float = 30.0,
        retry_initial_s: float = 0.5,
        quota_pause_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._project_name = f"projects/{project}"
        self._service_context = ServiceContext(service=service, version=version)
        self._per_cause_every = per_cause_every
        self._send_timeout_s = send_timeout_s
        self._retry = Retry(
            predicate=if_exception_type(*_RETRIED),
            initial=retry_initial_s,
            maximum=max(retry_initial_s, 5.0),
            multiplier=2.0,
            timeout=retry_deadline_s,
            on_error=self._on_retried,
        )
        self._quota_pause_s = quota_pause_s
        self._clock = clock
        self._queue: queue.Queue[object] = queue.Queue(maxsize=queue_size)
        self._lock = threading.Lock()
        self._last_sent: dict[str, float] = {}
        self._counts = {"submitted": 0, "sent": 0, "suppressed": 0, "dropped": 0, "failed": 0, "retried": 0}
        self._failures: dict[str, int] = {}
        self._closed = False
        self._sending = False
        self._thread = threading.Thread(target=self._run, name="watchdog-error-reporting", daemon=True)
        self._thread.start()

    # -- any thread --------------------------------------------------------------------------------------
    def submit(self, report: ErrorReport) -> bool:
        """Queue ``report`` unless its cause was reported recently or the queue is full; True when queued.
        Never blocks, never raises."""
        now = self._clock()
        with self._lock:
            self._counts["submitted"] += 1
            if self._closed:
                self._counts["dropped"] += 1
                return False
            last = self._last_sent.get(report.cause)
            if last is not None and now - last < self._per_cause_every:
                self._counts["suppressed"] += 1
                return False
            try:
                self._queue.put_nowait(report)
            except queue.Full:
                self._counts["dropped"] += 1
                return False
            if len(self._last_sent) >= MAX_CAUSES:
                self._forget_old(now)
            self._last_sent[report.cause] = now
            return True

    @property
    def stats(self) -> ReporterStats:
        with self._lock:
            return ReporterStats(**self._counts, failures=dict(self._failures))

    def in_sender_thread(self) -> bool:
        """True on the sender's own thread: what it logs is never reported (no report about a report)."""
        return threading.current_thread() is self._thread

    def close(self, timeout_s: float = 5.0) -> ReporterStats:
        """Send what is queued within ``timeout_s``, then stop; what is left is counted as dropped."""
        with self._lock:
            self._closed = True
        deadline = time.monotonic() + timeout_s
        try:
            self._queue.put(_STOP, timeout=timeout_s)
        except queue.Full:
            _log.warning("Error Reporting: the sender did not drain its queue within %g s", timeout_s)
        self._thread.join(max(0.0, deadline - time.monotonic()))
        left = 1 if self._sending else 0  # a report still being sent (retried) when the time ran out
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            left += item is not _STOP
        with self._lock:
            self._counts["dropped"] += left
        return self.stats

    # -- the sender thread ---------------------------------------------------------------------------------
    def _forget_old(self, now: float) -> None:
        for cause, at in list(self._last_sent.items()):
            if now - at >= self._per_cause_every:
                del self._last_sent[cause]

    def _on_retried(self, _exc: Exception) -> None:
        with self._lock:
            self._counts["retried"] += 1

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            assert isinstance(item, ErrorReport)
            self._sending = True
            self._send(item)
            self._sending = False

    def _send(self, report: ErrorReport) -> None:
        try:
            self._client.report_error_event(
                project_name=self._project_name,
                event=self._event(report),
                retry=self._retry,
                timeout=self._send_timeout_s,
            )
        except Exception as exc:  # counted, never raised: the daemon must not notice
            kind = type(exc).__name__
            with self._lock:
                self._counts["failed"] += 1
                first = kind not in self._failures
                self._failures[kind] = self._failures.get(kind, 0) + 1
            if first:
                _log.warning("Error Reporting refused a report (%s): %s", kind, exc)
            if isinstance(exc, gexc.ResourceExhausted):
                time.sleep(self._quota_pause_s)  # quota: wait before the next report instead of retrying
            return
        with self._lock:
            self._counts["sent"] += 1

    def _event(self, report: ErrorReport) -> ReportedErrorEvent:
        context = ErrorContext()
        if report.file:
            context.report_location = SourceLocation(
                file_path=report.file, line_number=report.line, function_name=report.function
            )
        if report.http_request:
            context.http_request = _http_context(report.http_request)
        return ReportedErrorEvent(
            event_time=datetime.fromtimestamp(report.event_time, UTC),
            service_context=self._service_context,
            message=_bounded(report.message),
            context=context,
        )


def _bounded(message: str) -> str:
    if len(message) <= MAX_MESSAGE_CHARS:
        return message
    half = MAX_MESSAGE_CHARS // 2
    return f"{message[:half]}\n  ... ({len(message) - 2 * half} characters left out) ...\n{message[-half:]}"


def _http_context(request: Mapping[str, Any]) -> HttpRequestContext:
    status = request.get("status")
    return HttpRequestContext(
        method=str(request.get("requestMethod", "")),
        url=str(request.get("requestUrl", "")),
        user_agent=str(request.get("userAgent", "")),
        referrer=str(request.get("referer", "")),
        response_status_code=int(status) if isinstance(status, int) else 0,
        remote_ip=str(request.get("remoteIp", "")),
    )


def report_from_record(record: logging.LogRecord) -> ErrorReport:
    """The report for a log record: its traceback when it carries an exception (cause: the exception's
    type and where it was raised), else its message (cause: the logger and the line that logged it); an
    ``error_cause`` extra names the cause instead."""
    http_request = getattr(record, "http_request", None)
    base: dict[str, Any] = {
        "event_time": record.created,
        "file": record.pathname,
        "line": record.lineno,
        "function": record.funcName,
        "http_request": http_request if isinstance(http_request, Mapping) else None,
    }
    explicit = getattr(record, "error_cause", None)
    exc = record.exc_info[1] if record.exc_info else None
    if exc is not None:
        frames = traceback.extract_tb(exc.__traceback__)
        raised = (frames[-1].filename, frames[-1].lineno) if frames else (record.pathname, record.lineno)
        where = f"{raised[0]}:{raised[1]}"
        cause = str(explicit) if explicit else f"{type(exc).__module__}.{type(exc).__qualname__}@{where}"
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        return ErrorReport(cause=cause, message=text, **base)
    cause = str(explicit) if explicit else f"{record.name}@{record.pathname}:{record.lineno}"
    return ErrorReport(cause=cause, message=record.getMessage(), **base)


class ErrorReportingHandler(logging.Handler):
    """Reports every record at ``level`` (ERROR) and above through ``reporter``. Records logged by the
    reporter's own thread are skipped, so a failing Error Reporting is logged, not reported."""

    def __init__(self, reporter: ErrorReporter, level: int = logging.ERROR) -> None:
        super().__init__(level)
        self.reporter = reporter

    @property
    def stats(self) -> ReporterStats:
        return self.reporter.stats

    def emit(self, record: logging.LogRecord) -> None:
        if self.reporter.in_sender_thread():
            return
        try:
            self.reporter.submit(report_from_record(record))
        except Exception:  # a record that cannot be turned into a report must not break logging
            self.handleError(record)

    def close(self) -> None:
        self.reporter.close()
        super().close()

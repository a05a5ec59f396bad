"""The watchdog's log written to Cloud Logging through its API (``google_cloud.logging: api``), for hosts
where no agent reads stdout (on Cloud Run and GKE, ``log_format: cloud`` on stdout is the better way: no
API calls, no credentials).

``CloudLoggingApiHandler`` is google-cloud-logging's ``CloudLoggingHandler`` with two changes:

- each record becomes the entry of the stdout ``cloud`` shape (``watchdog.core.logs.CloudJsonFormatter``):
  its labels, trace, source location, ``httpRequest`` and payload fields, so both ways read alike;
- ``BoundedTransport`` instead of the library's ``BackgroundThreadTransport``, whose queue has no bound (an
  API that hangs would grow it for as long as the daemon logs): at most ``QUEUE_SIZE`` entries wait, batches
  of up to ``BATCH_SIZE`` go out from one thread, and what is dropped or refused is counted (``stats``), never
  raised. What the transport itself logs is never sent through it.

``google_cloud.endpoints["logging"]`` may name another endpoint: ``http://HOST:PORT`` is the REST (JSON)
API without credentials (a server on loopback in tests), anything else a gRPC endpoint with Application
Default Credentials. The monitored resource is ``cloud_run_revision`` where ``K_SERVICE`` is set, else
``global``; it is built from the config and the environment, never from the metadata server.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import google.cloud.logging
from google.auth.credentials import AnonymousCredentials
from google.cloud.logging.handlers import CloudLoggingHandler
from google.cloud.logging.handlers.transports import Transport
from google.cloud.logging_v2.resource import Resource

from watchdog.core.logs import (
    LABELS_FIELD,
    SAMPLED_FIELD,
    SOURCE_FIELD,
    SPAN_FIELD,
    TRACE_FIELD,
    CloudJsonFormatter,
)

_log = logging.getLogger(__name__)

ENDPOINT_KEY = "logging"
"""The key of ``google_cloud.endpoints`` this module reads."""

QUEUE_SIZE = 10_000
BATCH_SIZE = 500
"""Entries per ``entries.write`` call (the API takes up to 10 MB a call; our entries are ~1 KB)."""
MAX_LATENCY_S = 1.0
"""How long an entry waits for others to fill its batch."""
CLOSE_TIMEOUT_S = 5.0
_FLUSH = "flush"

_NOT_SENT = (
    "google.cloud",
    "google.auth",
    "google.api_core",
    "google_auth_httplib2",
    "grpc",
    "urllib3",
    __name__,
)
"""Loggers whose records never go through the API handler: the client's own (a failing write would log
about itself forever) and this module's."""


@dataclass(frozen=True, slots=True)
class TransportStats:
    sent: int
    dropped: int
    """Entries not queued: the queue was full, or it still held them at close."""
    failed: int
    """Entries in batches the API refused or did not answer."""


def build_client(project: str, endpoint: str = "") -> google.cloud.logging.Client:
    if endpoint.startswith("http://"):
        return google.cloud.logging.Client(  # type: ignore[no-untyped-call]
            project=project,
            credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
            _use_grpc=False,
            client_options={"api_endpoint": endpoint.rstrip("/")},
        )
    if endpoint:
        return google.cloud.logging.Client(  # type: ignore[no-untyped-call]
            project=project, client_options={"api_endpoint": endpoint.removeprefix("https://").rstrip("/")}
        )
    return google.cloud.logging.Client(project=project)  # type: ignore[no-untyped-call]


def monitored_resource(project: str, region: str, env: Mapping[str, str]) -> Resource:
    """``cloud_run_revision`` on Cloud Run (its ``K_*`` variables), else ``global``."""
    if env.get("K_SERVICE"):
        return Resource(
            type="cloud_run_revision",
            labels={
                "project_id": project,
                "service_name": env.get("K_SERVICE", ""),
                "revision_name": env.get("K_REVISION", ""),
                "configuration_name": env.get("K_CONFIGURATION", ""),
                "location": region,
            },
        )
    return Resource(type="global", labels={"project_id": project})


class BoundedTransport(Transport):
    """Batches entries to ``entries.write`` from one thread; see the module docstring."""

    def __init__(self, client: google.cloud.logging.Client, name: str, **kwargs: Any) -> None:
        self._logger = client.logger(name, resource=kwargs.get("resource"))  # type: ignore[no-untyped-call]
        self._queue: queue.Queue[dict[str, Any] | str | None] = queue.Queue(maxsize=QUEUE_SIZE)
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._in_flight = 0
        self._counts = {"sent": 0, "dropped": 0, "failed": 0}
        self._failures_logged: set[str] = set()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="watchdog-cloud-logging", daemon=True)
        self._thread.start()

    @property
    def stats(self) -> TransportStats:
        with self._lock:
            return TransportStats(**self._counts)

    def in_sender_thread(self) -> bool:
        return threading.current_thread() is self._thread

    def send(self, record: logging.LogRecord, message: Any, **kwargs: Any) -> None:
        entry = {"message": message, **kwargs}
        with self._lock:
            if self._closed:
                self._counts["dropped"] += 1
                return
            try:
                self._queue.put_nowait(entry)
                self._in_flight += 1
            except queue.Full:
                self._counts["dropped"] += 1

    def flush(self, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
        """Wait (at most ``timeout_s``) until everything queued so far was written or refused."""
        deadline = time.monotonic() + timeout_s
        with contextlib.suppress(queue.Full):  # full: the batch fills and goes without waiting anyway
            self._queue.put_nowait(_FLUSH)  # the batch being gathered goes now
        with self._idle:
            while self._in_flight and (left := deadline - time.monotonic()) > 0:
                self._idle.wait(left)

    def close(self) -> None:
        self.flush()
        with self._lock:
            if self._closed:
                return
            self._closed = True
        # Full: the thread is stuck in a write; it is a daemon thread and what it holds is counted below.
        with contextlib.suppress(queue.Full):
            self._queue.put(None, timeout=CLOSE_TIMEOUT_S)
        self._thread.join(CLOSE_TIMEOUT_S)
        with self._lock:
            self._counts["dropped"] += self._in_flight
            self._in_flight = 0

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            if first is _FLUSH:
                continue
            assert isinstance(first, dict)
            batch = [first]
            deadline = time.monotonic() + MAX_LATENCY_S
            stop = False
            while len(batch) < BATCH_SIZE:
                try:
                    item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                if item is _FLUSH:
                    break
                assert isinstance(item, dict)
                batch.append(item)
            self._write(batch)
            if stop:
                return

    def _write(self, entries: list[dict[str, Any]]) -> None:
        ok = True
        try:
            batch = self._logger.batch()
            for entry in entries:
                message = entry.pop("message")
                batch.log(message, **entry)
            batch.commit()
        except Exception as exc:  # counted, never raised
            ok = False
            kind = type(exc).__name__
            if kind not in self._failures_logged:
                self._failures_logged.add(kind)
                _log.warning("Cloud Logging refused %d entries (%s): %s", len(entries), kind, exc)
        with self._idle:
            self._counts["sent" if ok else "failed"] += len(entries)
            self._in_flight -= len(entries)
            self._idle.notify_all()


class CloudLoggingApiHandler(CloudLoggingHandler):
    """google-cloud-logging's handler, writing the ``cloud`` shape's entries through ``BoundedTransport``."""

    def __init__(
        self,
        client: google.cloud.logging.Client,
        *,
        name: str,
        resource: Resource,
        formatter: CloudJsonFormatter,
    ) -> None:
        super().__init__(client, name=name, transport=BoundedTransport, resource=resource)
        assert isinstance(self.transport, BoundedTransport)
        self.bounded = self.transport
        self.filters.clear()  # CloudLoggingFilter's work is done by ``formatter.entry``
        self.entries = formatter

    @property
    def stats(self) -> TransportStats:
        return self.bounded.stats

    def flush(self) -> None:
        """Wait (bounded) until what was logged so far is written or refused."""
        self.bounded.flush()

    def close(self) -> None:
        """Write what is queued (bounded by ``CLOSE_TIMEOUT_S``), then stop the transport's thread."""
        self.bounded.close()
        logging.Handler.close(self)

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith(_NOT_SENT) or self.bounded.in_sender_thread():
            return
        try:
            entry = self.entries.entry(record)
            kwargs: dict[str, Any] = {
                "severity": entry.pop("severity"),
                "timestamp": datetime.fromtimestamp(record.created, UTC),
                "resource": self.resource,
                "labels": entry.pop(LABELS_FIELD, None),
                "source_location": entry.pop(SOURCE_FIELD, None),
                "http_request": entry.pop("httpRequest", None),
                "trace": entry.pop(TRACE_FIELD, None),
                "span_id": entry.pop(SPAN_FIELD, None),
                "trace_sampled": entry.pop(SAMPLED_FIELD, None),
            }
            entry.pop("time", None)
            # A Struct payload holds JSON values only: anything else as its text, as the stdout shape does.
            payload = json.loads(json.dumps(entry, ensure_ascii=False, default=str))
            self.bounded.send(record, payload, **{k: v for k, v in kwargs.items() if v is not None})
        except Exception:
            self.handleError(record)

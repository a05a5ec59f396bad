"""The reference service's own ``/metrics``: requests and latency per cohort, as a real service exports them.

Each app has its own ``CollectorRegistry`` (several services share one process in tests and in
``watchdog demo``; the watchdog's registry is another). Series:

* ``http_requests_total{cohort, route, status_class, selection}``: every request but ``/metrics``.
  ``cohort`` is the data path that served it, ``yaml`` or ``db`` (the ``X-Data-Source`` header), or
  ``none`` for routes that read no content (health, auth, the control plane, a 429, a 503 before the flag
  was asked). ``selection`` says who chose the cohort: ``flag`` (the OpenFeature evaluation: real users),
  ``pinned`` (``?source=``: probes) or ``none``. ``route`` is the route's path, ``other`` for unknown paths.
* ``http_request_duration_seconds{cohort, route}``: histogram, whole request inside the app; the buckets
  hold 0.05 s and 0.2 s, the database-query and API P95 limits, so those ratios are exact.
* ``content_db_query_duration_seconds{kind, outcome}``: each database call (``content`` queries and the
  health ``ping``), injected latency included; ``outcome`` ``ok`` or ``error``.
* ``feature_flag_evaluations_total{flag_key, value, reason}``: each flag evaluation, with the provider's
  reason (``TARGETING_MATCH``, ``DEFAULT``, ``DISABLED``, ``ERROR``…), so a broken flag file shows.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, MutableMapping
from typing import Any, Literal

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0)
"""Seconds; 0.05 (DB query P95) and 0.2 (API P95) are edges, so "share under the limit" is exact."""
METRICS_PATH = "/metrics"
EXPOSITION_CONTENT_TYPE = CONTENT_TYPE_LATEST

Cohort = Literal["yaml", "db", "none"]
Selection = Literal["flag", "pinned", "none"]
STATE_COHORT = "data_source"
"""``request.state`` attribute the content endpoints set to ``yaml``/``db`` once the data path is chosen."""
STATE_SELECTION = "data_source_selection"
"""``request.state`` attribute: ``flag`` or ``pinned``."""


class ServiceMetrics:
    """The service's collectors in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "http_requests",
            "HTTP requests served, by data-path cohort (yaml|db|none), route, status class and who chose "
            "the cohort (flag|pinned|none).",
            ("cohort", "route", "status_class", "selection"),
            registry=self.registry,
        )
        self.duration = Histogram(
            "http_request_duration_seconds",
            "Time to serve a request inside the app, by data-path cohort and route.",
            ("cohort", "route"),
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.db_queries = Histogram(
            "content_db_query_duration_seconds",
            "Database calls of the DB path (content queries, health ping), injected latency included.",
            ("kind", "outcome"),
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.flag_evaluations = Counter(
            "feature_flag_evaluations",
            "Flag evaluations through the OpenFeature client, by value and the provider's reason.",
            ("flag_key", "value", "reason"),
            registry=self.registry,
        )

    def observe_request(self, cohort: str, route: str, status: int, selection: str, elapsed_s: float) -> None:
        status_class = f"{status // 100}xx" if 100 <= status <= 599 else "5xx"
        self.requests.labels(cohort, route, status_class, selection).inc()
        self.duration.labels(cohort, route).observe(elapsed_s)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Pure ASGI, outermost: counts every response (429s and unhandled errors included) and times it."""

    def __init__(self, app: ASGIApp, *, metrics: ServiceMetrics, routes: Iterable[str]) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = frozenset(routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] == METRICS_PATH:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        # The endpoints write the chosen cohort into request.state, which is this dict.
        state: MutableMapping[str, Any] = scope.setdefault("state", {})
        status = 500  # an exception before the response started is a server error

        async def send_and_note_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_note_status)
        finally:
            path = scope["path"]
            self.metrics.observe_request(
                str(state.get(STATE_COHORT, "none")),
                path if path in self.routes else "other",
                status,
                str(state.get(STATE_SELECTION, "none")),
                time.perf_counter() - started,
            )

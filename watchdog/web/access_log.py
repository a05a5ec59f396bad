"""One log line per request to the watchdog's HTTP face, carrying the request's trace.

The trace comes from ``traceparent`` (W3C) or ``X-Cloud-Trace-Context`` (what Cloud Run's front end
adds): every record logged while the request is handled (here, and on the daemon's loop through
``run_coroutine_threadsafe``, which carries the context across) gets it, so the ``cloud`` log shape links
them to the request in Cloud Logging. The access line itself has ``httpRequest`` (method, path without the
query, which may hold ``?auth_token=``, status, size, latency, user agent, remote address).

/healthz, /readyz and /metrics are asked every few seconds by probes and scrapers: their lines are DEBUG
unless they fail (5xx); the others (Slack buttons, the incident API, alert receivers) are INFO.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from watchdog.core.logs import duration_text, parse_trace_headers, trace_context

_log = logging.getLogger("watchdog.web.access")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

QUIET_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


class AccessLog:
    """ASGI middleware: see the module docstring."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", ())}
        trace = parse_trace_headers(headers.get("traceparent"), headers.get("x-cloud-trace-context"))
        started = time.perf_counter()
        response = {"status": 0, "size": 0}

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                response["status"] = int(message["status"])
            elif message["type"] == "http.response.body":
                response["size"] += len(message.get("body", b""))
            await send(message)

        with trace_context(trace):
            try:
                await self.app(scope, receive, counting_send)
            finally:
                self._log(scope, headers, response, time.perf_counter() - started)

    @staticmethod
    def _log(scope: Scope, headers: dict[str, str], response: dict[str, int], elapsed_s: float) -> None:
        path = str(scope.get("path", ""))
        status = response["status"] or 500  # no response started: the app raised
        level = logging.DEBUG if path in QUIET_PATHS and status < 500 else logging.INFO
        if not _log.isEnabledFor(level):
            return
        method = str(scope.get("method", ""))
        client = scope.get("client")
        request: dict[str, Any] = {
            "requestMethod": method,
            "requestUrl": path,
            "status": status,
            "responseSize": str(response["size"]),
            "latency": duration_text(elapsed_s),
            "protocol": f"HTTP/{scope.get('http_version', '1.1')}",
        }
        if headers.get("user-agent"):
            request["userAgent"] = headers["user-agent"]
        if client:
            request["remoteIp"] = str(client[0])
        _log.log(level, "%s %s %d", method, path, status, extra={"http_request": request})

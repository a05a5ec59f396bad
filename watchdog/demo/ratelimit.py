"""Per-instance rate limits of the watched service: auth 10/min, everything else 100/min.

The health routes and ``/api/auth/check`` are exempt, as in production; so are the reference service's
own control routes (``/_faults``, ``/_flag``) and ``/metrics``. Fixed one-minute windows per client, like
the app's in-memory limiter; the client is the first ``X-Forwarded-For`` hop (Cloud Run sits behind a
proxy) or the peer address. The service has no AI routes, so the contract's 20/min AI class has nothing to
limit.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

EXEMPT_PATHS = frozenset(
    {"/api/health", "/api/monitoring/health", "/api/simple-health", "/api/auth/check", "/metrics"}
)


@dataclass(frozen=True, slots=True)
class RateLimits:
    enabled: bool = True
    auth_per_minute: int = 10
    default_per_minute: int = 100
    window_seconds: float = 60.0


def bucket_for(path: str) -> str | None:
    """Which limit applies to ``path``; None when exempt."""
    if path in EXEMPT_PATHS or path.startswith("/_"):
        return None
    if path.startswith("/api/auth/"):
        return "auth"
    return "default"


class RateLimitMiddleware:
    def __init__(self, app: ASGIApp, limits: RateLimits, clock: Callable[[], float] = time.monotonic) -> None:
        self.app = app
        self.limits = limits
        self._clock = clock
        self._window_start = clock()
        self._counts: dict[tuple[str, str], int] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.limits.enabled:
            await self.app(scope, receive, send)
            return
        bucket = bucket_for(scope["path"])
        if bucket is None:
            await self.app(scope, receive, send)
            return
        now = self._clock()
        if now - self._window_start >= self.limits.window_seconds:
            # One shared window start keeps the bookkeeping to a single dict that is dropped each minute.
            elapsed_windows = math.floor((now - self._window_start) / self.limits.window_seconds)
            self._window_start += elapsed_windows * self.limits.window_seconds
            self._counts = {}
        limit = self.limits.auth_per_minute if bucket == "auth" else self.limits.default_per_minute
        key = (_client(scope), bucket)
        count = self._counts.get(key, 0) + 1
        self._counts[key] = count
        reset = max(1, math.ceil(self._window_start + self.limits.window_seconds - now))
        if count > limit:
            await _too_many(send, limit, reset)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [
                    (b"x-ratelimit-limit", str(limit).encode()),
                    (b"x-ratelimit-remaining", str(max(0, limit - count)).encode()),
                    (b"x-ratelimit-reset", str(reset).encode()),
                ]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _client(scope: Scope) -> str:
    for name, value in scope.get("headers", []):
        if name == b"x-forwarded-for":
            first: str = value.decode("latin-1").split(",")[0].strip()
            if first:
                return first
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


async def _too_many(send: Send, limit: int, retry_after: int) -> None:
    body = json.dumps(
        {"success": False, "error": "Too many requests, please try again later.", "retryAfter": retry_after}
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 429,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"retry-after", str(retry_after).encode()),
                (b"x-ratelimit-limit", str(limit).encode()),
                (b"x-ratelimit-remaining", b"0"),
                (b"x-ratelimit-reset", str(retry_after).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})

"""FlagBackend over a generic HTTP webhook: your own flag service, speaking a small JSON protocol.

``GET <url>`` answers the state, optionally with an ``ETag``::

    {"db_percent": 5, "updated_at": 1767225600.0, "updated_by": "alice", "reason": "canary start",
     "idempotency_key": "rollout-42"}

(``updated_at``: epoch seconds or an ISO 8601 string; every field but ``db_percent`` may be missing.)

``PUT <url>`` (or ``POST``, per config) sets it, with the JSON body
``{"db_percent": 0, "reason": "…", "updated_by": "sre-watchdog", "idempotency_key": "inc-7"}`` and the
headers ``Idempotency-Key`` (IETF httpapi draft), ``If-Match: <etag>`` when the GET gave one, and
``Authorization: Bearer <token>`` when a token is configured. The answers it understands:

- 2xx: applied; with ``Idempotent-Replayed: true``, applied earlier under the same key (a no-op);
- 412: the state changed since our GET (``If-Match`` failed): read again and plan again;
- 409: a request with the same key is still in flight: retried;
- 422: the key was already used for a different value: refused (FlagError "already used");
- 408, 425, 429, 5xx: retried with backoff within the deadline; any other status: FlagError at once.

After a write the state is read back and must show our value and key (or the server said "replayed").
A state the watchdog cannot read is never overwritten, except by a rollback (0 %), which says so in the log.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any, TypeVar

import httpx

from watchdog.core.clock import Clock, SystemClock
from watchdog.core.redact import redact_url
from watchdog.flags._remote import (
    DEFAULT_DEADLINE_S,
    DEFAULT_TIMEOUT_S,
    CorruptDocument,
    Transient,
    bounded,
    excerpt,
    mismatch,
    same_change,
)
from watchdog.flags.base import FlagError, FlagState
from watchdog.flags.flagd_file import normalize_percent

T = TypeVar("T")

log = logging.getLogger("watchdog.flags")

RETRYABLE_STATUS = frozenset({408, 409, 412, 425, 429, 500, 502, 503, 504})
"""Statuses worth another attempt: timeouts, lost races (412 for If-Match, 409 for a key in flight),
rate limits and server errors. Everything else 4xx/5xx is reported at once."""


def check_status(response: httpx.Response, what: str) -> None:
    """Raise for a non-2xx answer: Transient when retrying can help, FlagError when it cannot."""
    if response.is_success:
        return
    detail = f"{what}: HTTP {response.status_code}: {excerpt(response.text)}"
    if response.status_code in RETRYABLE_STATUS or response.status_code >= 500:
        raise Transient(detail)
    raise FlagError(detail)


def transport_guard(what: str, attempt: Callable[[], Awaitable[T]]) -> Callable[[], Awaitable[T]]:
    """Network trouble (refused, reset, timed out) is retried."""

    async def guarded() -> T:
        try:
            return await attempt()
        except httpx.TransportError as exc:
            raise Transient(f"{what}: {type(exc).__name__}: {excerpt(str(exc)) or 'no details'}") from exc

    return guarded


def parse_state(body: bytes, where: str) -> FlagState:
    """The webhook's GET answer as a FlagState; CorruptDocument when it is not one."""
    try:
        document = json.loads(body)
    except ValueError as exc:
        raise CorruptDocument(
            f"{where} did not answer JSON: {exc}: {excerpt(body.decode('utf-8', 'replace'))}"
        ) from exc
    if not isinstance(document, Mapping):
        raise CorruptDocument(f"{where} must answer a JSON object, got {type(document).__name__}")
    percent = document.get("db_percent")
    if isinstance(percent, bool) or not isinstance(percent, int | float) or not math.isfinite(percent):
        raise CorruptDocument(f"{where}: db_percent must be a number, got {percent!r}")
    if not 0 <= percent <= 100:
        raise CorruptDocument(f"{where}: db_percent must be within 0..100, got {percent}")
    strings = {}
    for field in ("updated_by", "reason", "idempotency_key"):
        value = document.get(field, "")
        if not isinstance(value, str):
            raise CorruptDocument(f"{where}: {field} must be a string, got {value!r}")
        strings[field] = value
    return FlagState(db_percent=float(percent), updated_at=_epoch(document.get("updated_at")), **strings)


def _epoch(value: Any) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return 0.0
    return 0.0


class HttpFlagBackend:
    """FlagBackend over the webhook protocol in the module docstring."""

    def __init__(
        self,
        url: str,
        *,
        method: str = "PUT",
        token: str | None = None,
        clock: Clock | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        deadline: float = DEFAULT_DEADLINE_S,
    ) -> None:
        self.url = url
        self.method = method
        self._token = token
        self._clock: Clock = clock or SystemClock()
        self._timeout = timeout
        self._deadline = deadline
        self.name = f"http:{redact_url(url)}"

    @classmethod
    def from_config(cls, config: Any, env: Mapping[str, str], clock: Clock) -> HttpFlagBackend:
        token = None
        if config.token_env is not None:
            token = env.get(config.token_env, "")
            if not token:
                raise FlagError(f"{config.token_env} is not set: the http flag backend's token_env names it")
        return cls(
            config.url,
            method=config.method,
            token=token,
            clock=clock,
            timeout=config.timeout,
            deadline=config.deadline,
        )

    async def get(self) -> FlagState:
        async def attempt() -> FlagState:
            async with self._client() as client:
                state, _ = await self._read(client)
            return state

        return await bounded(f"reading {self.name}", self._clock, self._deadline, self._guard(attempt))

    async def set(self, db_percent: float, reason: str, updated_by: str, idempotency_key: str) -> FlagState:
        percent = normalize_percent(db_percent)
        body = {
            "db_percent": percent,
            "reason": reason,
            "updated_by": updated_by,
            "idempotency_key": idempotency_key,
        }

        async def attempt() -> FlagState:
            async with self._client() as client:
                headers: dict[str, str] = {}
                try:
                    current, etag = await self._read(client)
                except CorruptDocument as exc:
                    if percent != 0.0:
                        raise FlagError(
                            f"{exc}; refusing to overwrite a flag state the watchdog cannot read "
                            "(only a rollback to 0 % may replace it)"
                        ) from exc
                    log.warning("rollback replaces an unreadable flag state at %s: %s", self.name, exc)
                else:
                    if idempotency_key and current.idempotency_key == idempotency_key:
                        if not math.isclose(current.db_percent, percent, abs_tol=1e-9):
                            raise FlagError(
                                f"idempotency key {idempotency_key!r} was already used for "
                                f"db_percent={current.db_percent}, refusing to reuse it for {percent}"
                            )
                        return current
                    if etag:
                        headers["If-Match"] = etag
                if idempotency_key:
                    headers["Idempotency-Key"] = idempotency_key
                response = await client.request(self.method, self.url, json=body, headers=headers)
                if response.status_code == 422:
                    raise FlagError(
                        f"{self.name}: idempotency key {idempotency_key!r} was already used for another "
                        "value, "
                        f"refusing to reuse it for {percent} (HTTP 422: {excerpt(response.text)})"
                    )
                check_status(response, f"{self.method} {self.name}")
                replayed = response.headers.get("Idempotent-Replayed", "").strip().lower() == "true"
                try:
                    written, _ = await self._read(client)
                except FlagError as exc:
                    raise FlagError(f"read-back failed on {self.name}: {exc}") from exc
            if same_change(written, percent, idempotency_key) or replayed:
                return written
            raise mismatch(self.name, percent, idempotency_key, written)

        return await bounded(f"setting {self.name}", self._clock, self._deadline, self._guard(attempt))

    def _client(self) -> httpx.AsyncClient:
        headers = {"Accept": "application/json", "User-Agent": "sre-watchdog"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        return httpx.AsyncClient(timeout=self._timeout, headers=headers, follow_redirects=False)

    async def _read(self, client: httpx.AsyncClient) -> tuple[FlagState, str]:
        response = await client.get(self.url)
        check_status(response, f"GET {self.name}")
        return parse_state(response.content, self.name), response.headers.get("ETag", "")

    def _guard(self, attempt: Callable[[], Awaitable[T]]) -> Callable[[], Awaitable[T]]:
        return transport_guard(self.name, attempt)

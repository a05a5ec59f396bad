"""Webhook intake: other systems' alerts into the same escalation chain.

``POST /api/v1/alerts/alertmanager`` takes Alertmanager's webhook JSON (a ``webhook_configs`` receiver),
``POST /api/v1/alerts/cloud-monitoring`` a Google Cloud Monitoring webhook notification channel's. Each
needs an ``intake`` of its kind in the config (else 404) and the token in its ``token_env`` (unset: 503,
the receiver is closed rather than open to anyone). Requests carry the token as ``Authorization: Bearer``;
Cloud Monitoring cannot set headers, so there ``?auth_token=`` and the password of HTTP basic auth work too.

Answers, so that the sender retries exactly when retrying can help: 200 ``{"status": "ok", "incident",
"event"}`` (``fired``, ``updated``, ``resolved`` or ``unchanged``); 400 with the reason for a malformed
payload and 413 past ``MAX_BODY`` (retrying cannot fix either); 401 for a wrong or missing token; 503 when
the daemon does not answer within the deadline or the state store fails (Alertmanager retries 5xx).

The incident work runs on the daemon's loop (``home``) under a deadline that never cancels it (a store call
cut off halfway can hang as well; the compare-and-set makes a late finish harmless), and at most
``MAX_IN_FLIGHT`` such calls wait at once: past that the answer is 503 at once, nothing piles up.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import json
import logging
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any, Protocol, TypeVar

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from watchdog.config.alerts import Intake
from watchdog.incidents.intake import (
    ExternalAlert,
    IntakeError,
    alertmanager_spec,
    cloud_monitoring_spec,
)
from watchdog.incidents.manager import IncidentManager, Transition

_log = logging.getLogger(__name__)

T = TypeVar("T")

ALERTMANAGER_PATH = "/api/v1/alerts/alertmanager"
CLOUD_MONITORING_PATH = "/api/v1/alerts/cloud-monitoring"
MAX_BODY = 1024 * 1024
"""Bytes of JSON one notification may carry (an Alertmanager group of thousands of alerts fits)."""
DEADLINE_S = 5.0
"""How long a request waits for the daemon before answering 503 (the sender retries)."""
BODY_DEADLINE_S = 10.0
"""A sender gets this long to send its body once the head has arrived (408 after it)."""
MAX_IN_FLIGHT = 16
"""Intake calls waiting on the daemon at once; more are refused with 503 until some finish."""

_EVENTS = {"fired": "fired", "refired": "fired", "note": "updated", "resolved": "resolved"}


class IncidentsView(Protocol):
    """What the intake needs of the daemon (``web.app.DaemonView`` is one)."""

    @property
    def incidents(self) -> IncidentManager: ...


class HomeRunner(Protocol):
    """Runs a coroutine on the daemon's loop (``web.app``'s ``_Home`` is one)."""

    async def run(self, make: Callable[[], Coroutine[Any, Any, T]]) -> T: ...


Parser = Callable[[Intake, Any, Callable[[str], str]], ExternalAlert]


def intake_routes(
    daemon: IncidentsView,
    home: HomeRunner,
    intakes: Sequence[Intake],
    env: Mapping[str, str],
    *,
    deadline_s: float = DEADLINE_S,
    max_body: int = MAX_BODY,
    max_in_flight: int = MAX_IN_FLIGHT,
    body_deadline_s: float = BODY_DEADLINE_S,
) -> list[Route]:
    """The two intake routes, for ``create_app``: ``Starlette(routes=[..., *intake_routes(daemon, on_home,
    config.intake, os.environ)])``. ``env`` is read at each request (a token set later is seen)."""
    receiver = _Receiver(daemon, home, env, deadline_s, max_body, max_in_flight, body_deadline_s)

    def route(path: str, kind: str, parser: Parser) -> Route:
        intake = next((i for i in intakes if i.kind == kind), None)

        async def endpoint(request: Request) -> Response:
            return await receiver.handle(request, kind, intake, parser)

        return Route(path, endpoint, methods=["POST"], name=f"intake-{kind}")

    return [
        route(ALERTMANAGER_PATH, "alertmanager", alertmanager_spec),
        route(CLOUD_MONITORING_PATH, "cloud_monitoring", cloud_monitoring_spec),
    ]


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _Receiver:
    def __init__(
        self,
        daemon: IncidentsView,
        home: HomeRunner,
        env: Mapping[str, str],
        deadline_s: float,
        max_body: int,
        max_in_flight: int,
        body_deadline_s: float,
    ) -> None:
        self._daemon = daemon
        self._home = home
        self._env = env
        self._deadline_s = deadline_s
        self._max_body = max_body
        self._max_in_flight = max_in_flight
        self._body_deadline_s = body_deadline_s
        self._in_flight = 0

    async def handle(self, request: Request, kind: str, intake: Intake | None, parser: Parser) -> Response:
        if intake is None:
            return _error(404, f"no {kind} intake is configured (add one under intake: in alerts/*.yaml)")
        token = self._env.get(intake.token_env, "")
        if not token:
            return _error(503, f"intake {intake.name} has no token: set {intake.token_env}")
        if not _authorized(request, token, allow_query=intake.kind == "cloud_monitoring"):
            _log.info("intake %s: request without the right token refused", intake.name)
            return _error(
                401, "missing or wrong token", headers={"WWW-Authenticate": 'Bearer realm="watchdog"'}
            )
        try:
            raw = await _read_body(request, self._max_body, self._body_deadline_s)
        except _Refused as exc:
            return _error(exc.status, exc.message)
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError) as exc:  # JSONDecodeError, bad UTF-8, absurd nesting
            return _error(400, f"the body is not JSON: {_short(exc)}")
        try:
            alert = parser(intake, body, self._runbook_url)
        except IntakeError as exc:
            return _error(400, f"invalid {kind} payload: {exc}")
        if self._in_flight >= self._max_in_flight:
            return _error(503, "the daemon is busy with earlier notifications; retry")
        try:
            moved = await self._on_home(alert)
        except TimeoutError:
            _log.warning("intake %s: the daemon did not answer within %.3gs", intake.name, self._deadline_s)
            return _error(503, f"the daemon did not answer within {self._deadline_s:g} s; retry")
        except Exception as exc:  # the store failing: the sender retries
            _log.warning("intake %s: %s", intake.name, exc)
            return _error(503, f"the incident could not be recorded: {_short(exc)}; retry")
        event = _EVENTS.get(moved.event, moved.event) if moved is not None else "unchanged"
        return JSONResponse({"status": "ok", "incident": alert.spec.key, "event": event})

    def _runbook_url(self, alert: str) -> str:
        return self._daemon.incidents.runbook_url(alert)

    async def _on_home(self, alert: ExternalAlert) -> Transition | None:
        async def apply() -> Transition | None:
            manager = self._daemon.incidents
            if alert.firing:
                return await manager.fire(alert.spec, update_note=alert.note)
            return await manager.clear(alert.spec.key, alert.spec.summary)

        self._in_flight += 1
        task = asyncio.ensure_future(self._home.run(apply))
        task.add_done_callback(self._finished)
        # The deadline answers the sender; it never cancels the work (see the module's docstring).
        return await asyncio.wait_for(asyncio.shield(task), self._deadline_s)

    def _finished(self, task: asyncio.Future[Transition | None]) -> None:
        self._in_flight -= 1
        if not task.cancelled() and task.exception() is not None:
            _log.debug("intake call finished with %r", task.exception())


def _authorized(request: Request, token: str, *, allow_query: bool) -> bool:
    expected = token.encode("utf-8", "surrogateescape")
    offered: list[str] = []
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        offered.append(credentials.strip())
    elif scheme.lower() == "basic" and allow_query:
        try:
            decoded = base64.b64decode(credentials.strip(), validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            decoded = ""
        offered.append(decoded.partition(":")[2])
    if allow_query:
        offered.extend(request.query_params.getlist("auth_token"))
    # Every candidate is compared in constant time; a match anywhere is enough.
    ok = False
    for candidate in offered:
        ok |= hmac.compare_digest(candidate.encode("utf-8", "surrogateescape"), expected)
    return ok


async def _read_body(request: Request, limit: int, deadline_s: float) -> bytes:
    """At most ``limit`` bytes, counted as they arrive: a sender that lies in Content-Length (or sends
    none, chunked) cannot make the daemon hold more."""
    too_large = _Refused(413, f"the body is larger than {limit} bytes")
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.strip().isdigit():
            raise _Refused(400, f"Content-Length is not a number: {declared[:40]!r}")
        if int(declared) > limit:
            raise too_large
    chunks: list[bytes] = []
    received = 0
    try:
        async with asyncio.timeout(deadline_s):
            async for chunk in request.stream():
                received += len(chunk)
                if received > limit:
                    raise too_large
                chunks.append(chunk)
    except TimeoutError:
        raise _Refused(408, f"the body did not arrive within {deadline_s:g} s") from None
    return b"".join(chunks)


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 300 else text[:299] + "…"


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"status": "error", "error": message}, status_code=status, headers=headers)

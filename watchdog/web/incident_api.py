"""The incident API, behind a bearer token (``WATCHDOG_API_TOKEN``): what the Slack buttons and
``watchdog incidents`` do, for scripts and other tools.

```
GET    /api/v1/incidents[?state=firing,acknowledged]   {"incidents": [incident, ...]}
GET    /api/v1/incidents/{key}                         incident
POST   /api/v1/incidents/{key}/ack                     incident + {"action": {"status", "message"}}
POST   /api/v1/incidents/{key}/resolve                 same
POST   /api/v1/incidents/{key}/silence                 same; body {"duration": "1h", "reason": "..."}
GET    /api/v1/silences                                {"silences": [silence, ...]}
POST   /api/v1/silences                                {"silence": silence}; body {"matchers": {...},
                                                       "duration": "2h", "reason": "...", "author": "..."}
DELETE /api/v1/silences/{id}                           {"removed": id}
```

An incident is ``{"key", "state", "version", "data", "updated_at"}``. Keys hold ``:`` (and may hold ``@``
or ``/``): percent-encode them or not, the server decodes the path once. The actor recorded is ``api:`` +
the ``X-Watchdog-Actor`` header (``api:token`` without one); a silence's author is ``api:`` + its
``author`` field, or the actor.

Statuses: 200 done or unchanged (``action.status`` says which); 400 bad JSON, duration, matcher or state;
401 no or wrong token (``WWW-Authenticate: Bearer``); 404 unknown incident or silence; 409 conflict
(acknowledging a resolved incident); 413 body over 64 KiB; 503 without ``WATCHDOG_API_TOKEN`` (the API is
off), or when the daemon or its store does not answer in time (the action may still complete).

The token is compared in constant time. It travels in clear over plain HTTP: expose the API only behind TLS
(Cloud Run's front end) or on loopback.
"""

from __future__ import annotations

import hmac
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from watchdog.core.clock import Clock, SystemClock
from watchdog.core.durations import parse_duration
from watchdog.incidents.manager import OPEN_STATES, RESOLVED, ActionResult, IncidentManager
from watchdog.incidents.silences import MAX_SILENCE_S
from watchdog.store.base import StoreUnavailable
from watchdog.web.actions import (
    HomeRunner,
    IncidentActions,
    IncidentsView,
    RequestRefused,
    incident_json,
    json_object,
    read_body,
    silence_json,
)

_log = logging.getLogger(__name__)

PREFIX = "/api/v1"
TOKEN_ENV = "WATCHDOG_API_TOKEN"
ACTOR_HEADER = "x-watchdog-actor"
API_DEADLINE_S = 10.0
"""How long a request waits for the daemon; past it the answer is 503 and the action goes on."""
STATES = (*OPEN_STATES, RESOLVED)
MAX_REASON_CHARS = 1000
_NAME = re.compile(r"^[\w.@:+-]{1,64}$")
"""What an actor or author may be: printable, no spaces, short (it is shown in Slack threads and logs)."""

_Act = Callable[[IncidentManager, str, str], Awaitable[ActionResult]]
"""An incident action, its request body already checked: (manager, key, actor) -> result."""

_STATUS_CODES = {"done": 200, "unchanged": 200, "not_found": 404, "conflict": 409}


def incident_api_routes(
    daemon: IncidentsView,
    home: HomeRunner,
    env: Mapping[str, str],
    *,
    clock: Clock | None = None,
    deadline_s: float = API_DEADLINE_S,
) -> list[Route]:
    """The API's routes. ``env`` holds ``WATCHDOG_API_TOKEN``; ``clock`` says which silences are active."""
    token = env.get(TOKEN_ENV, "").strip().encode()
    actions = IncidentActions(daemon, home)
    now = (clock or SystemClock()).now
    if not token:
        _log.info("the incident API is off: %s is not set (%s/... answers 503)", TOKEN_ENV, PREFIX)

    def guarded(
        handler: Callable[[Request, str], Awaitable[Response]],
    ) -> Callable[[Request], Awaitable[Response]]:
        """Token first, then the handler; a refused request, a late daemon or a failing store become
        answers with a sentence, never a 500 with a stack trace."""

        async def endpoint(request: Request) -> Response:
            if not token:
                return _error(503, f"the incident API is off: set {TOKEN_ENV} for the watchdog")
            if not _authorized(request, token):
                return _error(
                    401,
                    "missing or wrong bearer token",
                    headers={"WWW-Authenticate": 'Bearer realm="watchdog"'},
                )
            try:
                actor = _actor(request)
                return await handler(request, actor)
            except RequestRefused as refused:
                return _error(refused.status, refused.message)
            except TimeoutError:
                return _error(
                    503, f"the daemon did not answer within {deadline_s:g} s; the action may still complete"
                )
            except StoreUnavailable as exc:
                return _error(503, f"the state store is unavailable: {exc}")

        return endpoint

    async def list_incidents(request: Request, _actor: str) -> Response:
        states = _states(request.query_params.get("state"))
        found = await actions.run(lambda m: m.list_incidents(states), deadline_s, "list incidents")
        return JSONResponse({"incidents": [incident_json(i) for i in found]})

    async def get_incident(request: Request, _actor: str) -> Response:
        key = request.path_params["key"]
        incident = await actions.run(lambda m: m.get(key), deadline_s, f"get {key}")
        if incident is None:
            return _error(404, f"no incident {key!r}", status="not_found")
        return JSONResponse(incident_json(incident))

    def incident_action(
        name: str, prepare: Callable[[Mapping[str, Any]], _Act]
    ) -> Callable[[Request, str], Awaitable[Response]]:
        async def handler(request: Request, actor: str) -> Response:
            key = request.path_params["key"]
            # The body is checked here, before anything reaches the daemon.
            act = prepare(json_object(await read_body(request)))
            result = await actions.run(
                lambda m: act(m, key, actor), deadline_s, f"API {name} on {key} by {actor}"
            )
            _log.info(
                "API %s on %s by %s: %s: %s",
                name,
                key,
                actor,
                result.status,
                result.message,
                extra={"incident": key, "action": name, "actor": actor, "status": result.status},
            )
            return _action_answer(result)

        return handler

    async def list_silences(_request: Request, _actor: str) -> Response:
        silences = await actions.run(lambda m: m.silences.all(), deadline_s, "list silences")
        at = now()
        ordered = sorted(silences, key=lambda s: (s.ends_at, s.id))
        return JSONResponse({"silences": [silence_json(s, at) for s in ordered]})

    async def add_silence(request: Request, actor: str) -> Response:
        body = json_object(await read_body(request))
        matchers = _matchers(body.get("matchers"))
        duration_s = _silence_duration(body.get("duration"))
        reason = _reason(body.get("reason"), required=True)
        author = body.get("author")
        if author is not None and not (isinstance(author, str) and _NAME.match(author)):
            raise RequestRefused(400, "author: up to 64 letters, digits or . @ : + - _")
        by = f"api:{author}" if author else actor
        try:
            silence = await actions.run(
                lambda m: m.add_silence(matchers, duration_s, by, reason), deadline_s, f"API silence by {by}"
            )
        except ValueError as exc:
            raise RequestRefused(400, str(exc)) from None
        _log.info("API silence %s by %s: %s", silence.id, by, dict(matchers), extra={"silence": silence.id})
        return JSONResponse({"silence": silence_json(silence, now())})

    async def remove_silence(request: Request, actor: str) -> Response:
        silence_id = request.path_params["silence_id"]
        removed = await actions.run(
            lambda m: m.remove_silence(silence_id), deadline_s, f"API unsilence {silence_id}"
        )
        if not removed:
            return _error(404, f"no silence {silence_id!r}", status="not_found")
        _log.info("API silence %s removed by %s", silence_id, actor, extra={"silence": silence_id})
        return JSONResponse({"removed": silence_id})

    incident = f"{PREFIX}/incidents/{{key:path}}"
    return [
        Route(f"{PREFIX}/incidents", guarded(list_incidents), methods=["GET"]),
        # Before the bare {key:path} route, which would read ".../ack" as part of the key.
        Route(f"{incident}/ack", guarded(incident_action("ack", _ack)), methods=["POST"]),
        Route(f"{incident}/resolve", guarded(incident_action("resolve", _resolve)), methods=["POST"]),
        Route(f"{incident}/silence", guarded(incident_action("silence", _silence)), methods=["POST"]),
        Route(incident, guarded(get_incident), methods=["GET"]),
        Route(f"{PREFIX}/silences", guarded(list_silences), methods=["GET"]),
        Route(f"{PREFIX}/silences", guarded(add_silence), methods=["POST"]),
        Route(f"{PREFIX}/silences/{{silence_id}}", guarded(remove_silence), methods=["DELETE"]),
    ]


def _authorized(request: Request, token: bytes) -> bool:
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), token)


def _actor(request: Request) -> str:
    name = request.headers.get(ACTOR_HEADER, "").strip()
    if not name:
        return "api:token"
    if not _NAME.match(name):
        raise RequestRefused(400, "X-Watchdog-Actor: up to 64 letters, digits or . @ : + - _")
    return f"api:{name}"


def _states(raw: str | None) -> list[str] | None:
    if raw is None or not raw.strip():
        return None
    states = [s.strip() for s in raw.split(",") if s.strip()]
    unknown = [s for s in states if s not in STATES]
    if unknown:
        raise RequestRefused(400, f"unknown state {unknown[0]!r}; states: {', '.join(STATES)}")
    return states


def _silence_duration(raw: Any) -> float:
    if raw is None:
        raise RequestRefused(400, 'duration is required, e.g. "1h"')
    try:
        seconds = parse_duration(raw)
    except ValueError as exc:
        raise RequestRefused(400, f"duration: {exc}") from None
    if seconds <= 0 or seconds > MAX_SILENCE_S:
        raise RequestRefused(400, "duration: a silence lasts more than 0 s and at most 30 days")
    return seconds


def _reason(raw: Any, *, required: bool) -> str:
    if raw is None or raw == "":
        if required:
            raise RequestRefused(400, "reason is required: say why nobody should be paged")
        return ""
    if not isinstance(raw, str) or len(raw) > MAX_REASON_CHARS:
        raise RequestRefused(400, f"reason: a string of at most {MAX_REASON_CHARS} characters")
    return raw.strip()


def _matchers(raw: Any) -> dict[str, str]:
    if not isinstance(raw, dict) or not all(
        isinstance(k, str) and k and isinstance(v, str) for k, v in raw.items()
    ):
        raise RequestRefused(400, 'matchers: an object of label names to values, e.g. {"alertname": "x"}')
    if not raw:
        # An empty matcher silences every alert: almost always a mistake, and a dangerous one.
        raise RequestRefused(400, "matchers: name at least one label (alertname, ...)")
    return dict(raw)


def _ack(_body: Mapping[str, Any]) -> _Act:
    return lambda manager, key, actor: manager.acknowledge(key, actor)


def _resolve(_body: Mapping[str, Any]) -> _Act:
    return lambda manager, key, actor: manager.resolve(key, actor)


def _silence(body: Mapping[str, Any]) -> _Act:
    duration_s = _silence_duration(body.get("duration"))
    reason = _reason(body.get("reason"), required=False)
    return lambda manager, key, actor: manager.silence_incident(key, duration_s, actor, reason)


def _action_answer(result: ActionResult) -> Response:
    status_code = _STATUS_CODES.get(result.status, 500)
    action = {"status": result.status, "message": result.message}
    if result.incident is None:
        return _error(status_code, result.message, status=result.status)
    return JSONResponse({**incident_json(result.incident), "action": action}, status_code=status_code)


def _error(
    status_code: int, message: str, *, status: str = "error", headers: Mapping[str, str] | None = None
) -> Response:
    return JSONResponse({"error": message, "status": status}, status_code=status_code, headers=headers)

"""What the Slack interactions and the incident API share: a bounded request body, incident actions run on
the daemon's loop with a deadline, and the JSON shape of an incident and a silence.

An action that misses its deadline is *not* cancelled: it goes on, on the daemon's loop, and the request is
answered without it. Cancelling an acknowledgement half-way (its compare-and-set may already have won) would
leave the person who clicked guessing; letting it finish makes the late click count, and the thread note the
incident manager posts says so.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any, Protocol, TypeVar

from starlette.requests import Request

from watchdog.incidents.manager import IncidentManager
from watchdog.incidents.silences import Silence
from watchdog.store.base import Incident

_log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_BODY_BYTES = 64 * 1024
"""Largest request body the action routes read (a Slack interaction payload is a few KiB)."""
BODY_DEADLINE_S = 10.0
"""A client gets this long to send its body once the head has arrived (the server bounds the head)."""


class HomeRunner(Protocol):
    """Runs a coroutine on the daemon's event loop (``web.app``'s ``_Home``), from the request's loop."""

    async def run(self, make: Callable[[], Coroutine[Any, Any, T]]) -> T: ...


class IncidentsView(Protocol):
    """The part of ``web.app.DaemonView`` the action routes use (so they need not import ``web.app``)."""

    @property
    def incidents(self) -> IncidentManager: ...


class RequestRefused(Exception):
    """A request refused before it reached the daemon: ``status`` and a sentence for the client."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


async def read_body(
    request: Request, limit: int = MAX_BODY_BYTES, deadline_s: float = BODY_DEADLINE_S
) -> bytes:
    """The request body, at most ``limit`` bytes; RequestRefused(413) past it, (408) when too slow.

    Read as a stream and counted, so a client that lies in Content-Length (or sends none, chunked) still
    cannot make the daemon hold more than ``limit``."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise RequestRefused(413, f"request body over {limit // 1024} KiB")
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(deadline_s):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise RequestRefused(413, f"request body over {limit // 1024} KiB")
                chunks.append(chunk)
    except TimeoutError:
        raise RequestRefused(408, f"request body not received within {deadline_s:g} s") from None
    return b"".join(chunks)


class IncidentActions:
    """Runs incident actions on the daemon's loop with a deadline (see the module docstring)."""

    def __init__(self, daemon: IncidentsView, home: HomeRunner) -> None:
        self._daemon = daemon
        self._home = home
        self._late: set[asyncio.Future[Any]] = set()
        """Actions that missed their deadline and still run: held so they are not garbage-collected."""

    async def run(
        self, use: Callable[[IncidentManager], Awaitable[T]], deadline_s: float, what: str = "action"
    ) -> T:
        """``use(manager)`` on the daemon's loop; TimeoutError after ``deadline_s`` (it goes on running)."""

        async def at_home() -> T:
            # Reads daemon.incidents on the daemon's loop, as DaemonView asks.
            return await use(self._daemon.incidents)

        task = asyncio.ensure_future(self._home.run(at_home))
        try:
            return await asyncio.wait_for(asyncio.shield(task), deadline_s)
        except TimeoutError:
            self._late.add(task)
            task.add_done_callback(lambda done: self._finished_late(done, what))
            raise

    def _finished_late(self, task: asyncio.Future[Any], what: str) -> None:
        self._late.discard(task)
        if task.cancelled():
            _log.warning("%s cancelled after its answer was sent", what)
        elif task.exception() is not None:
            _log.error("%s failed after its answer was sent: %r", what, task.exception())
        else:
            _log.info("%s finished after its answer was sent: %s", what, _describe(task.result()))


def _describe(result: Any) -> str:
    message = getattr(result, "message", None)
    return str(message) if message is not None else repr(result)


def incident_json(incident: Incident) -> dict[str, Any]:
    """An incident as the API and ``watchdog incidents --json`` show it."""
    return {
        "key": incident.key,
        "state": incident.state,
        "version": incident.version,
        "data": dict(incident.data),
        "updated_at": incident.updated_at,
    }


def silence_json(silence: Silence, now: float) -> dict[str, Any]:
    return {**silence.to_dict(), "active": silence.active(now)}


def json_object(body: bytes) -> Mapping[str, Any]:
    """A JSON object from a request body (an empty body is ``{}``); RequestRefused(400) otherwise."""
    if not body.strip():
        return {}
    try:
        value = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise RequestRefused(400, f"the body is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise RequestRefused(400, "the body must be a JSON object")
    return value

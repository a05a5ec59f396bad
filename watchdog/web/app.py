"""The routes: /metrics, /healthz, /readyz, a JSON status page, the Slack buttons
(``POST /slack/interactions``, ``web.slack_interactions``), the incident API (``/api/v1/incidents``,
``/api/v1/silences``: ``web.incident_api``) and the alert receivers (``/api/v1/alerts/...``: ``web.intake``);
``web.server`` serves them.

``web.server`` runs them on an event loop of their own, in their own thread, so that HTTP work never delays
a probe; whatever touches the daemon's state runs on the daemon's loop (``home``), called across with
``run_coroutine_threadsafe``. /metrics renders there at most once per ``min_render_interval_s`` and every
other scrape gets the bytes rendered last; /readyz is re-asked at most every ``READINESS_TTL_S``. Store
reads on these paths have deadlines (the daemon's ``SharedCall``): a hung store makes them answer, not hang.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from typing import Any, Generic, Protocol, TypeVar

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from watchdog import __version__
from watchdog.config.alerts import Intake
from watchdog.core.results import ProbeResult
from watchdog.core.shared_call import SharedCall
from watchdog.incidents.manager import IncidentManager
from watchdog.web.access_log import AccessLog
from watchdog.web.incident_api import incident_api_routes
from watchdog.web.intake import intake_routes
from watchdog.web.metrics import StoreSnapshotCollector, exposition
from watchdog.web.slack_interactions import slack_interaction_routes

_log = logging.getLogger(__name__)

T = TypeVar("T")

READINESS_TTL_S = 0.25
"""/readyz asks the daemon at most this often; requests in between get the last answer."""
RENDER_DEADLINE_S = 2.0
"""A scrape waits this long for a fresh render, then gets the previous one (its age is in the text)."""


class DaemonView(Protocol):
    """What the HTTP face reads from the daemon (``runtime.daemon.Daemon`` is one); web never imports it."""

    @property
    def registry(self) -> CollectorRegistry: ...

    @property
    def snapshot(self) -> StoreSnapshotCollector: ...

    @property
    def instance(self) -> str: ...

    async def refresh_snapshot(self, snapshot: StoreSnapshotCollector) -> None: ...

    async def readiness(self) -> dict[str, object]: ...

    async def latest_results(self) -> list[ProbeResult]:
        """The newest result of every series; raises when the store does not answer."""
        ...

    @property
    def incidents(self) -> IncidentManager:
        """Incidents and their actions; called on the daemon's loop (``home``)."""
        ...


class _Home:
    """Runs coroutines on the daemon's loop, from whichever loop serves the request."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    async def run(self, make: Callable[[], Coroutine[Any, Any, T]]) -> T:
        if asyncio.get_running_loop() is self.loop:
            return await make()
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(make(), self.loop))


def create_app(
    daemon: DaemonView,
    *,
    min_render_interval_s: float = 1.0,
    home: asyncio.AbstractEventLoop | None = None,
    env: Mapping[str, str] | None = None,
    intakes: Sequence[Intake] = (),
) -> Starlette:
    """``home``: the daemon's event loop (default: the loop running now, where the daemon was started).
    ``env``: ``SLACK_SIGNING_SECRET``, ``WATCHDOG_API_TOKEN`` and the intakes' tokens (default: the process
    environment). ``intakes``: the config's alert receivers (Alertmanager, Cloud Monitoring)."""
    env = os.environ if env is None else env
    on_home = _Home(home or asyncio.get_running_loop())
    cache = _RenderedMetrics(daemon, on_home, min_render_interval_s)
    readiness = _Recent(lambda: on_home.run(daemon.readiness), READINESS_TTL_S)

    async def metrics(_: Request) -> Response:
        try:
            return Response(await cache.get(), media_type=CONTENT_TYPE_LATEST)
        except TimeoutError:  # nothing rendered yet and the daemon does not answer
            return PlainTextResponse("the daemon did not render its metrics in time\n", status_code=503)

    async def healthz(_: Request) -> Response:
        return PlainTextResponse("ok\n")

    async def readyz(_: Request) -> Response:
        try:
            state = await readiness.get()
        except TimeoutError:
            answer = {"ready": False, "error": "the daemon did not answer in time"}
            return JSONResponse(answer, status_code=503)
        return JSONResponse(state, status_code=200 if state["ready"] else 503)

    async def status(_: Request) -> Response:
        try:
            latest = await on_home.run(daemon.latest_results)
        except TimeoutError:
            return JSONResponse({"error": "the state store is not answering"}, status_code=503)
        except Exception as exc:
            return JSONResponse({"error": f"store unavailable: {exc}"}, status_code=503)
        return JSONResponse(
            {
                "version": __version__,
                "instance": daemon.instance,
                "probes": [
                    r.to_dict() for r in sorted(latest, key=lambda r: (r.probe, sorted(r.labels.items())))
                ],
            }
        )

    return Starlette(
        routes=[
            Route("/metrics", metrics),
            Route("/healthz", healthz, methods=["GET", "HEAD"]),
            Route("/readyz", readyz),
            Route("/", status),
            *slack_interaction_routes(daemon, on_home, env),
            *incident_api_routes(daemon, on_home, env),
            *intake_routes(daemon, on_home, intakes, env),
        ],
        middleware=[Middleware(AccessLog)],
    )


class _RenderedMetrics:
    """The last /metrics text and when it was rendered; one render at a time, at most one per interval."""

    def __init__(self, daemon: DaemonView, home: _Home, min_interval_s: float) -> None:
        self._daemon = daemon
        self._home = home
        self._min_interval_s = min_interval_s
        self._body = b""
        self._rendered_at = -math.inf
        self._render = SharedCall(self._refresh)

    async def _render_at_home(self) -> bytes:
        # On the daemon's loop: the collectors read state the probes change there. refresh_snapshot bounds
        # its own store read; rendering is from memory.
        await self._daemon.refresh_snapshot(self._daemon.snapshot)
        return exposition(self._daemon.registry)

    async def _refresh(self) -> bytes:
        self._body = await self._home.run(self._render_at_home)
        self._rendered_at = time.monotonic()
        return self._body

    async def get(self) -> bytes:
        if time.monotonic() - self._rendered_at < self._min_interval_s:
            return self._body
        try:
            return await self._render(RENDER_DEADLINE_S)
        except TimeoutError:
            return self._body if self._body else await self._render(RENDER_DEADLINE_S * 4)


class _Recent(Generic[T]):
    """An answer re-asked at most every ``ttl_s`` (one question in flight), so a flood of requests costs
    the daemon's loop one call per ``ttl_s``."""

    def __init__(self, ask: Callable[[], Awaitable[T]], ttl_s: float) -> None:
        self._ask = SharedCall(ask)
        self._ttl_s = ttl_s
        self._answer: T | None = None
        self._at = -math.inf

    async def get(self) -> T:
        if self._answer is not None and time.monotonic() - self._at < self._ttl_s:
            return self._answer
        self._answer = await self._ask(RENDER_DEADLINE_S * 2)
        self._at = time.monotonic()
        return self._answer

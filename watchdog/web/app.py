"""The routes: /metrics, /healthz, /readyz and a JSON status page (``web.server`` serves them).

/metrics renders at most once per ``min_render_interval_s`` and otherwise serves the bytes it rendered last:
a scraper hammering it costs an HTTP exchange per request, not a store read and a render, so it cannot
starve the probes that share the event loop. Store reads on these paths have deadlines (the daemon's
``SharedCall``): a hung store makes them answer, not hang.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Protocol

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from watchdog import __version__
from watchdog.core.results import ProbeResult
from watchdog.core.shared_call import SharedCall
from watchdog.web.metrics import StoreSnapshotCollector, exposition

_log = logging.getLogger(__name__)

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


def create_app(daemon: DaemonView, *, min_render_interval_s: float = 1.0) -> Starlette:
    cache = _RenderedMetrics(daemon, min_render_interval_s)

    async def metrics(_: Request) -> Response:
        return Response(await cache.get(), media_type=CONTENT_TYPE_LATEST)

    async def healthz(_: Request) -> Response:
        return PlainTextResponse("ok\n")

    async def readyz(_: Request) -> Response:
        state = await daemon.readiness()
        return JSONResponse(state, status_code=200 if state["ready"] else 503)

    async def status(_: Request) -> Response:
        try:
            latest = await daemon.latest_results()
        except TimeoutError:
            return JSONResponse({"error": "the state store is not answering"}, status_code=503)
        except Exception as exc:
            return JSONResponse({"error": f"store unavailable: {exc}"}, status_code=503)
        return JSONResponse(
            {
                "version": __version__,
                "instance": daemon.instance,
                "probes": [
                    r.to_dict()
                    for r in sorted(latest, key=lambda r: (r.probe, sorted(r.labels.items())))
                ],
            }
        )

    return Starlette(
        routes=[
            Route("/metrics", metrics),
            Route("/healthz", healthz, methods=["GET", "HEAD"]),
            Route("/readyz", readyz),
            Route("/", status),
        ]
    )


class _RenderedMetrics:
    """The last /metrics text and when it was rendered; one render at a time, at most one per interval."""

    def __init__(self, daemon: DaemonView, min_interval_s: float) -> None:
        self._daemon = daemon
        self._min_interval_s = min_interval_s
        self._body = b""
        self._rendered_at = -math.inf
        self._render = SharedCall(self._refresh)

    async def _refresh(self) -> bytes:
        # refresh_snapshot bounds its own store read; rendering is from memory.
        await self._daemon.refresh_snapshot(self._daemon.snapshot)
        self._body = exposition(self._daemon.registry)
        self._rendered_at = time.monotonic()
        return self._body

    async def get(self) -> bytes:
        if time.monotonic() - self._rendered_at < self._min_interval_s:
            return self._body
        try:
            return await self._render(RENDER_DEADLINE_S)
        except TimeoutError:
            return self._body if self._body else await self._render(RENDER_DEADLINE_S * 4)

"""/metrics, /healthz, /readyz and a JSON status page, served by uvicorn inside the daemon's loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterator
from typing import Protocol

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from watchdog import __version__
from watchdog.core.results import ProbeResult
from watchdog.web.metrics import StoreSnapshotCollector, exposition

_log = logging.getLogger("watchdog.web.app")


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


def create_app(daemon: DaemonView) -> Starlette:
    async def metrics(_: Request) -> Response:
        await daemon.refresh_snapshot(daemon.snapshot)
        return Response(exposition(daemon.registry), media_type=CONTENT_TYPE_LATEST)

    async def healthz(_: Request) -> Response:
        return PlainTextResponse("ok\n")

    async def readyz(_: Request) -> Response:
        state = await daemon.readiness()
        return JSONResponse(state, status_code=200 if state["ready"] else 503)

    async def status(_: Request) -> Response:
        try:
            latest = await daemon.latest_results()
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


class _InLoopServer(uvicorn.Server):
    """uvicorn without its own signal handling: the daemon owns SIGTERM/SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def parse_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.strip("[]") or "0.0.0.0", int(port)


class HttpServer:
    def __init__(self, app: Starlette, listen: str) -> None:
        self._host, self._port = parse_listen(listen)
        self._server = _InLoopServer(
            uvicorn.Config(
                app, host=self._host, port=self._port, log_config=None, access_log=False, lifespan="off"
            )
        )
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> str:
        # Bind here so "address in use" is an OSError for the caller; uvicorn would sys.exit() from
        # inside a task, which takes the whole event loop down.
        host, port = self._host, self._port
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        # IPPROTO_TCP so asyncio sets TCP_NODELAY on accepted sockets (no Nagle delay on small replies).
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            sock.close()
            raise OSError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
        sock.set_inheritable(True)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        while not self._server.started:
            if self._task.done():
                raise OSError(f"HTTP server failed to start: {self._task.exception() or 'see log'}")
            await asyncio.sleep(0.01)
        bound_host, bound_port = sock.getsockname()[:2]
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        return f"http://{shown}:{bound_port}"

    async def stop(self) -> None:
        if self._task is None:
            return
        self._server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(self._task, timeout=5)

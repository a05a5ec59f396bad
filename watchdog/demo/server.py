"""Running the reference service: embedded in an event loop (tests, ``watchdog demo``, benchmarks) or
standalone (``python -m watchdog.demo``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Generator
from types import TracebackType
from typing import Any

import uvicorn
from starlette.applications import Starlette

from watchdog.demo.app import ReferenceService, create_app
from watchdog.demo.faults import Faults

log = logging.getLogger(__name__)


class _EmbeddedUvicorn(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # The host process (pytest, the watchdog daemon) owns SIGINT/SIGTERM; an embedded server must
        # neither swallow them nor re-raise them when it stops.
        yield


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto must say TCP: asyncio only sets TCP_NODELAY on accepted sockets whose proto is IPPROTO_TCP,
    # and without it every response waits ~40 ms on Nagle + delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class ReferenceServer:
    """uvicorn serving ``create_app(**app_kwargs)`` inside the running event loop.

    ``port=0`` picks a free port; the socket is bound before uvicorn starts, so ``base_url`` is known
    without racing another process for the port::

        async with ReferenceServer(flag_path=path, rate_limits=False) as server:
            httpx.get(server.base_url + "/api/health")
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        log_level: str = "warning",
        faults: Faults | None = None,
        **app_kwargs: Any,
    ) -> None:
        self.host = host
        self.port = port
        self.faults = faults if faults is not None else Faults()
        self.app: Starlette = create_app(faults=self.faults, **app_kwargs)
        self._config = uvicorn.Config(
            self.app,
            log_level=log_level,
            lifespan="on",
            access_log=False,
            timeout_graceful_shutdown=2,
        )
        self._server: _EmbeddedUvicorn | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def service(self) -> ReferenceService:
        service: ReferenceService = self.app.state.service
        return service

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("server not started")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self) -> str:
        """Bind, run the app's startup (schema + seed) and begin serving; returns ``base_url``."""
        if self._task is not None:
            raise RuntimeError("server already started")
        sock = _bind(self.host, self.port)
        self.port = sock.getsockname()[1]
        server = _EmbeddedUvicorn(self._config)
        self._server = server
        self._task = asyncio.create_task(server.serve(sockets=[sock]), name=f"reference-server:{self.port}")
        while not server.started:
            if self._task.done():
                sock.close()
                self._server, task, self._task = None, self._task, None
                # uvicorn exits (SystemExit) when the app's startup fails; surface it as an error.
                exc = task.exception() if not task.cancelled() else None
                raise RuntimeError(f"reference server failed to start: {exc!r}") from exc
            await asyncio.sleep(0.01)
        log.info("reference service listening on %s", self.base_url)
        return self.base_url

    async def stop(self) -> None:
        """Stop accepting, finish in-flight requests (2 s grace), run the app's shutdown."""
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        try:
            await self._task
        finally:
            self._server = None
            self._task = None

    async def __aenter__(self) -> ReferenceServer:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()


async def serve(
    host: str = "127.0.0.1", port: int = 8080, *, log_level: str = "info", **app_kwargs: Any
) -> None:
    """Run the reference service until SIGINT/SIGTERM (standalone use: uvicorn owns the signals)."""
    config = uvicorn.Config(
        create_app(**app_kwargs), host=host, port=port, log_level=log_level, lifespan="on"
    )
    await uvicorn.Server(config).serve()

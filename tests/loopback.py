"""Loopback servers for tests: ``serve_asgi`` runs an ASGI app (Starlette) with uvicorn on a free loopback
port in the current event loop; ``hanging_server`` accepts connections and never answers; ``closed_port`` is
a port nothing listens on. Both servers are async context managers that stop everything they started."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, nullcontext, suppress
from pathlib import Path
from typing import Any


def _bound_socket() -> socket.socket:
    # proto must say TCP: asyncio sets TCP_NODELAY only on accepted sockets whose proto is IPPROTO_TCP;
    # without it small responses can wait ~40 ms (Nagle + delayed ACK) and skew latency.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def closed_port() -> int:
    """A loopback port nothing listens on (bound and released: connecting is refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@asynccontextmanager
async def serve_asgi(
    app: Any, *, certfile: str | Path | None = None, keyfile: str | Path | None = None
) -> AsyncIterator[str]:
    """Serve ``app`` with uvicorn on 127.0.0.1:<free port> in this event loop; yields the base URL."""
    import uvicorn

    sock = _bound_socket()
    config = uvicorn.Config(
        app,
        log_level="warning",
        lifespan="off",
        access_log=False,
        ssl_certfile=str(certfile) if certfile else None,
        ssl_keyfile=str(keyfile) if keyfile else None,
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    # Leave the test runner's / daemon's signal handlers alone: whoever started us stops us.
    server.capture_signals = nullcontext  # type: ignore[method-assign,assignment]
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()  # raises the startup error
                raise RuntimeError("uvicorn exited during startup")
            await asyncio.sleep(0.005)
        scheme = "https" if certfile else "http"
        yield f"{scheme}://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        with suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 5)
        sock.close()


@asynccontextmanager
async def hanging_server() -> AsyncIterator[str]:
    """A server that accepts connections, reads, and never answers; yields ``http://127.0.0.1:<port>``."""
    writers: list[asyncio.StreamWriter] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        with suppress(Exception):  # read and discard until the client goes away; never answer
            while True:
                if not await reader.read(65536):
                    break

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()
        for writer in writers:
            writer.transport.abort()
        await server.wait_closed()

"""uvicorn, hardened for a monitoring tool's HTTP face, on an event loop of its own in its own thread.

A scraper that misbehaves (or an attacker) must never make the probes fail or lie, so the server:
- runs in its own thread with its own event loop: parsing and answering requests never sits between a probe's
  response arriving and the probe reading it (measured: bench/scrape_load.py);
- holds at most ``max_connections`` connections; one more is closed at once (``limit_reached`` counts it),
  and the cap always leaves ``fd_reserve`` file descriptors of the process limit to the probes and the store;
- gives a client ``header_timeout_s`` to send a complete request head (slow-loris connections that trickle
  headers are closed; uvicorn's own keep-alive timer only starts after a first response);
- logs accept() failures once per cause per minute with a count, not once per attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any, ClassVar

import h11
import uvicorn
from starlette.applications import Starlette
from uvicorn.protocols.http.h11_impl import H11Protocol

from watchdog.config.types import parse_listen_address

_log = logging.getLogger(__name__)

DEFAULT_MAX_CONNECTIONS = 256
DEFAULT_HEADER_TIMEOUT_S = 5.0
LOG_EVERY_S = 60.0


class _GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a connection cap and a deadline for each request head."""

    max_connections: ClassVar[int] = DEFAULT_MAX_CONNECTIONS
    header_timeout_s: ClassVar[float] = DEFAULT_HEADER_TIMEOUT_S
    refused: ClassVar[list[int]] = [0]
    """Connections closed at once because the cap was reached (a one-element list: shared, mutable)."""

    _head_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if len(self.connections) >= self.max_connections:
            self.refused[0] += 1
            _rate_limited_log(
                "connection-limit",
                "HTTP connection limit (%d) reached: closing new connections",
                self.max_connections,
            )
            transport.abort()
            return
        super().connection_made(transport)
        self._arm_head_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is None:  # refused in connection_made: uvicorn never saw it
            return
        self._disarm_head_deadline()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            self._disarm_head_deadline()  # a whole request head arrived

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_head_deadline()  # the next request on this keep-alive connection gets the same

    def _arm_head_deadline(self) -> None:
        self._disarm_head_deadline()
        self._head_deadline = self.loop.call_later(self.header_timeout_s, self._head_timed_out)

    def _disarm_head_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_timed_out(self) -> None:
        self._head_deadline = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.abort()


def _protocol_class(max_connections: int, header_timeout_s: float) -> type[_GuardedH11Protocol]:
    # One subclass per server: the limits are class attributes because uvicorn builds the protocol itself.
    return type(
        "GuardedH11Protocol",
        (_GuardedH11Protocol,),
        {"max_connections": max_connections, "header_timeout_s": header_timeout_s, "refused": [0]},
    )


_last_logged: dict[str, tuple[float, int]] = {}


def _rate_limited_log(cause: str, message: str, *args: object) -> None:
    """Log ``message`` once per ``LOG_EVERY_S`` per cause, saying how often it happened meanwhile."""
    now = time.monotonic()
    last, suppressed = _last_logged.get(cause, (-LOG_EVERY_S, 0))
    if now - last < LOG_EVERY_S:
        _last_logged[cause] = (last, suppressed + 1)
        return
    _last_logged[cause] = (now, 0)
    suffix = f" ({suppressed} more since the last message)" if suppressed else ""
    _log.warning(message + suffix, *args, extra={"cause": cause, "suppressed": suppressed})


def _loop_exception_handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """asyncio reports accept() failures (EMFILE: too many open files) on every attempt; say it once."""
    exc = context.get("exception")
    message = str(context.get("message", ""))
    if "accept" in message or isinstance(exc, OSError):
        cause = f"{message}: {type(exc).__name__}: {getattr(exc, 'strerror', None) or exc}"
        _rate_limited_log(cause, "%s", cause)
        return
    loop.default_exception_handler(context)


def connection_budget(max_connections: int, fd_reserve: int) -> int:
    """The connection cap that leaves ``fd_reserve`` descriptors of the process limit free (at least 8)."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return max_connections
    return max(8, min(max_connections, soft - fd_reserve))


class _InLoopServer(uvicorn.Server):
    """uvicorn without its own signal handling: the daemon owns SIGTERM/SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class HttpServer:
    """``own_thread`` (default): serve from a dedicated thread and event loop; False serves on the caller's
    loop (for embedding where no thread is wanted)."""

    def __init__(
        self,
        app: Starlette,
        listen: str,
        *,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S,
        fd_reserve: int = 256,
        own_thread: bool = True,
    ) -> None:
        host, self._port = parse_listen_address(listen)  # ValueError for a bad one (config checks it first)
        self._host = host or "0.0.0.0"
        self.max_connections = connection_budget(max_connections, fd_reserve)
        self._protocol = _protocol_class(self.max_connections, header_timeout_s)
        self._server = _InLoopServer(
            uvicorn.Config(
                app,
                host=self._host,
                port=self._port,
                http=self._protocol,
                log_config=None,
                access_log=False,
                lifespan="off",
                timeout_keep_alive=5,
            )
        )
        self._own_thread = own_thread
        self._task: asyncio.Task[None] | None = None
        self._thread: threading.Thread | None = None
        self._thread_error: BaseException | None = None

    @property
    def refused_connections(self) -> int:
        return self._protocol.refused[0]

    @property
    def open_connections(self) -> int:
        return len(self._server.server_state.connections)

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
        if self._own_thread:
            self._thread = threading.Thread(
                target=self._serve_in_thread, args=(sock,), name="watchdog-http", daemon=True
            )
            self._thread.start()
            while not self._server.started:
                if not self._thread.is_alive():
                    raise OSError(f"HTTP server failed to start: {self._thread_error or 'see log'}")
                await asyncio.sleep(0.01)
        else:
            asyncio.get_running_loop().set_exception_handler(_loop_exception_handler)
            self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
            while not self._server.started:
                if self._task.done():
                    raise OSError(f"HTTP server failed to start: {self._task.exception() or 'see log'}")
                await asyncio.sleep(0.01)
        bound_host, bound_port = sock.getsockname()[:2]
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        return f"http://{shown}:{bound_port}"

    def _serve_in_thread(self, sock: socket.socket) -> None:
        loop = asyncio.new_event_loop()
        loop.set_exception_handler(_loop_exception_handler)
        try:
            loop.run_until_complete(self._server.serve(sockets=[sock]))
        except BaseException as exc:  # reported by start(); the daemon goes on without its HTTP face
            self._thread_error = exc
            _log.error("HTTP server stopped: %r", exc)
        finally:
            loop.close()

    async def stop(self) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            # uvicorn checks should_exit every 0.1 s, then closes its connections (5 s at most).
            await asyncio.to_thread(self._thread.join, 10)
            return
        if self._task is None:
            return
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(self._task, timeout=5)

"""Test doubles for probes: a scripted :class:`FakeProbe`, and loopback servers to probe against.

``FakeProbe`` honours the same contract as the real kinds (``tests/test_probe_contract.py``): an exception
in its script becomes a ``failed`` result with a ``Type: message`` reason, a delay longer than
``timeout_s`` becomes a ``failed`` result with a timeout reason, ``aclose`` is idempotent.

``serve_asgi`` runs an ASGI app (Starlette) with uvicorn on a free loopback port in the current event loop;
``hanging_server`` accepts connections and never answers. Both are async context managers that stop
everything they started.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager, nullcontext, suppress
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from watchdog.clock import Clock
from watchdog.probes._client import describe_error
from watchdog.results import Outcome, ProbeResult

ScriptItem = Outcome | ProbeResult | BaseException


class FakeProbe:
    """Returns scripted results in order, then sticks on the last item (or cycles, with ``cycle=True``).

    * an :class:`Outcome` becomes a result for this probe (reason ``"scripted <outcome>"`` unless ok),
    * a :class:`ProbeResult` is returned with ``started_at`` and ``latency_s`` from this run,
    * an exception becomes ``failed`` with the same ``Type: message`` reason a real probe gives.

    ``delay_s`` makes every run take that long (real time, bounded by ``timeout_s`` like a real probe),
    for testing timeouts and overlapping runs. ``calls`` counts runs.
    """

    def __init__(
        self,
        name: str,
        script: Sequence[ScriptItem],
        *,
        clock: Clock,
        kind: str = "fake",
        interval_s: float = 30.0,
        timeout_s: float = 10.0,
        delay_s: float = 0.0,
        cycle: bool = False,
        target: str | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> None:
        if not script:
            raise ValueError("a FakeProbe needs at least one scripted item")
        self.name = name
        self.kind = kind
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.delay_s = delay_s
        self.target = target if target is not None else f"fake://{name}"
        self.labels: Mapping[str, str] = MappingProxyType(dict(labels or {}))
        self.calls = 0
        self.closed = False
        self.close_calls = 0
        self._script = list(script)
        self._cycle = cycle
        self._clock = clock

    def _next(self) -> ScriptItem:
        index = self.calls - 1
        if self._cycle:
            return self._script[index % len(self._script)]
        return self._script[min(index, len(self._script) - 1)]

    async def run(self) -> list[ProbeResult]:
        self.calls += 1
        item = self._next()
        started_at = self._clock.now()
        started = self._clock.monotonic()
        try:
            async with asyncio.timeout(self.timeout_s):
                if self.delay_s > 0:
                    await asyncio.sleep(self.delay_s)
                if isinstance(item, BaseException):
                    raise item
        except Exception as exc:  # CancelledError is not an Exception: cancellation propagates
            return [self._result(Outcome.FAILED, describe_error(exc, self.timeout_s), started_at, started)]
        if isinstance(item, ProbeResult):
            return [replace(item, started_at=started_at, latency_s=self._clock.monotonic() - started)]
        reason = "" if item is Outcome.OK else f"scripted {item.value}"
        return [self._result(item, reason, started_at, started)]

    def _result(self, outcome: Outcome, reason: str, started_at: float, started: float) -> ProbeResult:
        return ProbeResult(
            probe=self.name,
            kind=self.kind,
            target=self.target,
            outcome=outcome,
            latency_s=self._clock.monotonic() - started,
            started_at=started_at,
            reason=reason,
            labels=self.labels,
        )

    async def aclose(self) -> None:
        self.close_calls += 1
        self.closed = True


# --- loopback servers ----------------------------------------------------------------------------------


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
        with suppress(Exception):
            while await reader.read(65536):
                pass

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()
        for writer in writers:
            writer.transport.abort()
        await server.wait_closed()

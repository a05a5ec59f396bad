"""The daemon's own HTTP face under abuse (issue 8): idle and slow-loris connections are capped and timed out
and never starve the probes of file descriptors; /metrics renders at most once a second however hard it is
scraped; a hung state store makes /readyz, /metrics and the status page answer, not hang."""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from loopback import serve_asgi
from pgcluster import PgCluster, PgNode
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from watchdog.config.loader import WatchdogConfig
from watchdog.config.settings import ProbeDefaults, Settings
from watchdog.core.clock import SystemClock
from watchdog.core.results import Outcome, ProbeResult
from watchdog.probes.fake import FakeProbe
from watchdog.runtime.daemon import Daemon
from watchdog.runtime.wiring import wire
from watchdog.store import PostgresStore, SqliteStore, StateStore
from watchdog.web.app import create_app
from watchdog.web.server import HttpServer

FAST = Settings(
    flush_interval=0.2, evaluation_interval=0.5, defaults=ProbeDefaults(interval=0.2, timeout=1.0, jitter=0)
)
PARTIAL_HEAD = b"GET /metrics HTTP/1.1\r\nHost: x\r\n"  # never finished: no blank line


@contextlib.asynccontextmanager
async def _daemon(
    tmp_path: Path, store: StateStore, **server: Any
) -> AsyncIterator[tuple[Daemon, HttpServer, str]]:
    clock = SystemClock()
    probes = [FakeProbe("always-ok", [Outcome.OK], clock=clock, interval_s=0.2)]
    daemon = Daemon(
        wire(WatchdogConfig(root=tmp_path, settings=FAST), store=store, clock=clock, probes=probes)
    )
    await daemon.start()
    http = HttpServer(create_app(daemon), "127.0.0.1:0", **server)
    url = await http.start()
    try:
        yield daemon, http, url
    finally:
        await http.stop()
        await daemon.stop()


def _open_partial(port: int, count: int) -> list[socket.socket]:
    socks = []
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(PARTIAL_HEAD)
        socks.append(s)
    return socks


def _closed_by_server(s: socket.socket) -> bool:
    s.settimeout(0.05)
    try:
        return s.recv(1) == b""
    except TimeoutError:
        return False
    except OSError:
        return True  # reset: closed by the server too


async def test_slow_loris_connections_are_capped_and_timed_out(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db")
    async with _daemon(tmp_path, store, max_connections=16, header_timeout_s=0.5) as (_, http, url):
        port = int(url.rsplit(":", 1)[1])
        socks = await asyncio.to_thread(_open_partial, port, 40)
        try:
            await asyncio.sleep(0.1)
            assert http.open_connections <= 16
            assert http.refused_connections >= 40 - 16
            await asyncio.sleep(0.8)  # past the head deadline
            assert all(await asyncio.to_thread(lambda: [_closed_by_server(s) for s in socks]))
            assert http.open_connections == 0
            async with httpx.AsyncClient(base_url=url) as client:
                assert (await client.get("/healthz")).status_code == 200
                # A keep-alive connection that then trickles its next request head is closed the same way.
                assert (await client.get("/readyz")).status_code == 200
        finally:
            for s in socks:
                s.close()


class _CountingStore:
    """Delegates to a real store and counts the reads /metrics makes (a test double, not a patch)."""

    def __init__(self, inner: StateStore) -> None:
        self.inner = inner
        self.latest_calls = 0

    async def latest(self, probe: str | None = None) -> list[ProbeResult]:
        self.latest_calls += 1
        return await self.inner.latest(probe)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def test_metrics_render_at_most_once_per_interval_however_hard_scraped(tmp_path: Path) -> None:
    counting = _CountingStore(SqliteStore(tmp_path / "s.db"))
    store: StateStore = counting
    async with _daemon(tmp_path, store) as (_, _http, url):
        async with httpx.AsyncClient(base_url=url) as client:
            before = counting.latest_calls
            t0 = time.monotonic()
            bodies = [(await client.get("/metrics")).text for _ in range(150)]
            elapsed = time.monotonic() - t0
        reads = counting.latest_calls - before
        assert all("watchdog_probe_success" in b for b in bodies)
        # One render a second at most (plus the first): 150 scrapes cost a handful of store reads.
        assert reads <= int(elapsed) + 2, (reads, elapsed)


def _stop_cluster(node: PgNode) -> list[int]:
    """SIGSTOP the postmaster and every backend of a throwaway cluster: the whole server freezes."""
    assert node.pid is not None
    pids = [node.pid]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == node.pid:
                    pids.append(int(entry.name))
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    return pids


@pytest.mark.postgres
@pytest.mark.slow
async def test_hung_postgres_store_readyz_metrics_and_status_answer(tmp_path: Path) -> None:
    with PgCluster(replica=False) as cluster:
        store = PostgresStore(cluster.primary.dsn(), connect_timeout_s=2)
        async with (
            _daemon(tmp_path, store) as (_, _http, url),
            httpx.AsyncClient(base_url=url, timeout=30) as client,
        ):
            await asyncio.sleep(0.6)
            assert (await client.get("/readyz")).status_code == 200
            assert "watchdog_store_up 1.0" in (await client.get("/metrics")).text
            stopped = _stop_cluster(cluster.primary)
            try:
                await asyncio.sleep(1.1)  # the cached /metrics text is older than its render interval
                t0 = time.monotonic()
                ready = await client.get("/readyz")
                ready_s = time.monotonic() - t0
                t0 = time.monotonic()
                metrics = (await client.get("/metrics")).text
                metrics_s = time.monotonic() - t0
                t0 = time.monotonic()
                status = await client.get("/")
                status_s = time.monotonic() - t0
                # Before: each of these hung for as long as the store did.
                assert ready.status_code == 503 and ready_s < 2.5, (ready.status_code, ready_s)
                assert "did not answer within 1 s" in ready.json()["store"]["error"]
                assert metrics_s < 3.5, metrics_s
                assert "watchdog_store_up 0.0" in metrics
                age = next(
                    float(line.split()[1])
                    for line in metrics.splitlines()
                    if line.startswith("watchdog_store_snapshot_age_seconds ")
                )
                assert age >= 1.0
                assert "watchdog_probe_success" in metrics  # the last snapshot is still served
                assert status.status_code == 503 and status_s < 2.5
                # Scraping again while the store still hangs does not pile up reads or block.
                t0 = time.monotonic()
                await asyncio.gather(*(client.get("/readyz") for _ in range(10)))
                assert time.monotonic() - t0 < 2.5
            finally:
                for pid in stopped:
                    os.kill(pid, signal.SIGCONT)
            deadline = time.monotonic() + 15
            while (await client.get("/readyz")).status_code != 200:
                assert time.monotonic() < deadline, "readiness did not recover after the store came back"
                await asyncio.sleep(0.2)


# -- the whole daemon under a connection flood with a low open-files limit --------------------------------


def _target_app() -> Starlette:
    async def ok(_: Request) -> Response:
        return JSONResponse({"status": "healthy"})

    return Starlette(routes=[Route("/api/health", ok)])


def _write_config(root: Path, target: str, listen: str) -> None:
    (root / "probes").mkdir()
    (root / "probes" / "api.yaml").write_text(
        textwrap.dedent(
            f"""
            probes:
              - name: api
                kind: http
                url: {target}/api/health
                interval: 0.5s
                timeout: 2s
            """
        )
    )
    (root / "watchdog.yaml").write_text(
        f"state: {root / 'state.db'}\nlisten: {listen}\nflush_interval: 0.2s\nevaluation_interval: 1s\n"
    )


@contextlib.contextmanager
def _nofile(limit: int) -> Iterator[None]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(limit, hard), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _flood(port: int, count: int, hold_s: float) -> tuple[int, int]:
    """Open ``count`` connections that send a partial request head, reopening the ones the server closes,
    for ``hold_s``; returns (opened, refused-or-closed)."""
    socks: list[socket.socket] = []
    opened = closed = 0
    deadline = time.monotonic() + hold_s
    while time.monotonic() < deadline:
        while len(socks) < count and time.monotonic() < deadline:
            try:
                s = socket.create_connection(("127.0.0.1", port), timeout=1)
                s.sendall(PARTIAL_HEAD)
                socks.append(s)
                opened += 1
            except OSError:
                closed += 1
                break
        alive = []
        for s in socks:
            if _closed_by_server(s):
                closed += 1
                s.close()
            else:
                alive.append(s)
        socks = alive
        time.sleep(0.05)
    for s in socks:
        s.close()
    return opened, closed


async def _results(db: Path) -> Sequence[ProbeResult]:
    store = SqliteStore(db)
    await store.open()
    try:
        return await store.recent("api", limit=10_000)
    finally:
        await store.close()


@pytest.mark.slow
async def test_connection_flood_at_1024_files_never_fails_a_probe(tmp_path: Path) -> None:
    """The reported attack: `ulimit -n 1024` and 1,100 connections that send a partial head and wait.
    Before: every probe failed with "Too many open files" and the log grew 61 MB in 15 s."""
    port = socket.socket()
    port.bind(("127.0.0.1", 0))
    listen = f"127.0.0.1:{port.getsockname()[1]}"
    port.close()
    async with serve_asgi(_target_app()) as target:
        _write_config(tmp_path, target, listen)
        env: Mapping[str, str] = {**os.environ, "PYTHONUNBUFFERED": "1"}
        log = (tmp_path / "daemon.log").open("wb")
        daemon = await asyncio.create_subprocess_exec(
            "prlimit",
            "--nofile=1024:1024",
            "--",
            sys.executable,
            "-m",
            "watchdog",
            "run",
            "--config",
            str(tmp_path),
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        try:
            async with httpx.AsyncClient(base_url=f"http://{listen}", timeout=2) as client:
                for _ in range(100):
                    with contextlib.suppress(httpx.HTTPError):
                        if (await client.get("/readyz")).status_code == 200:
                            break
                    await asyncio.sleep(0.1)
                else:
                    raise AssertionError(
                        "daemon did not become ready: " + (tmp_path / "daemon.log").read_text()
                    )
                flood_start = time.time()
                with _nofile(4096):
                    flood_port = int(listen.rsplit(":", 1)[1])
                    opened, closed = await asyncio.to_thread(_flood, flood_port, 1100, 8.0)
                flood_end = time.time()
                assert opened >= 300, opened  # the flood really reached the server
                assert closed > 0, closed  # and the server shed what it could not hold
                # Once the flood stops the daemon answers at once.
                assert (await client.get("/healthz")).status_code == 200
                await asyncio.sleep(1.0)
        finally:
            daemon.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(daemon.wait(), timeout=15)
            except TimeoutError:
                daemon.kill()
                await daemon.wait()
            log.close()
    during = [r for r in await _results(tmp_path / "state.db") if flood_start <= r.started_at <= flood_end]
    assert len(during) >= 10, len(during)  # the probe kept running every 0.5 s during the flood
    failed = [r.reason for r in during if r.outcome is Outcome.FAILED]
    assert not failed, failed[:3]
    log_size = (tmp_path / "daemon.log").stat().st_size
    assert log_size < 200_000, f"log grew {log_size} bytes during an 8 s flood"
    assert daemon.returncode == 0

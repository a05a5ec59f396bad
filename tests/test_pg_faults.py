"""Failure paths on a real small server: saturation, stopped and hung databases, bad credentials, unknown
hosts, missing sockets — each must come back as a clear, password-free reason within the timeout, without
piling up runs or connections."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import asyncpg
import pytest
from pgcluster import PgCluster, PgNode, free_port, wait_for

from watchdog.config.postgres import PostgresProbeConfig
from watchdog.config.settings import ProbeDefaults
from watchdog.core.clock import SystemClock
from watchdog.core.results import Outcome, ProbeResult
from watchdog.probes.postgres import PostgresProbe

NASTY = "p@ss:w/rd#?%&= 'x\"ü"


@pytest.fixture(scope="module")
def node() -> Iterator[PgNode]:
    hba = ["host all pwuser 127.0.0.1/32 scram-sha-256"]
    with PgCluster(replica=False, conf={"max_connections": "12"}, hba_prefix=hba) as c:
        c.primary.psql(f"CREATE ROLE pwuser LOGIN PASSWORD $pw${NASTY}$pw$ IN ROLE pg_monitor")
        c.primary.psql("CREATE ROLE mon LOGIN IN ROLE pg_monitor; CREATE ROLE filler LOGIN")
        yield c.primary


def probe_for(
    dsn: str | None = None, *, timeout: float = 5.0, env: dict[str, str] | None = None, **overrides: Any
) -> PostgresProbe:
    config = PostgresProbeConfig.model_validate({"kind": "postgres", "name": "db", "dsn": dsn, **overrides})
    return PostgresProbe(config, defaults=ProbeDefaults(timeout=timeout), clock=SystemClock(), env=env)


def by_check(results: list[ProbeResult] | Any) -> dict[str, ProbeResult]:
    return {r.labels["check"]: r for r in results}


def assert_no_secret(results: Any, *secrets: str) -> None:
    for r in results:
        text = r.target + r.reason + repr(r.observations)
        for s in secrets:
            assert s not in text and quote(s, safe="") not in text, (s, text)


async def run_once(probe: PostgresProbe) -> tuple[dict[str, ProbeResult], float]:
    t0 = time.monotonic()
    try:
        results = await probe.run()
    finally:
        await probe.aclose()
    return by_check(results), time.monotonic() - t0


async def test_special_character_password_in_every_spelling(node: PgNode) -> None:
    spellings = {
        "url-encoded": probe_for(
            f"postgresql://pwuser:{quote(NASTY, safe='')}@127.0.0.1:{node.port}/postgres"
        ),
        "url-raw": probe_for(f"postgresql://pwuser:{NASTY}@127.0.0.1:{node.port}/postgres"),
        "keyvalue": probe_for(
            "host=127.0.0.1 port={} dbname=postgres user=pwuser password='{}'".format(
                node.port, NASTY.replace("\\", "\\\\").replace("'", "\\'")
            )
        ),
        "env": probe_for(
            None,
            env={
                "DB_HOST": "127.0.0.1",
                "DB_PORT": str(node.port),
                "DB_NAME": "postgres",
                "DB_USER": "pwuser",
                "DB_PASSWORD": NASTY,
            },
        ),
        "dsn-env+DB_PASSWORD": probe_for(
            None,
            dsn_env="DATABASE_URL",
            env={"DATABASE_URL": f"postgresql://pwuser@127.0.0.1:{node.port}/postgres", "DB_PASSWORD": NASTY},
        ),
    }
    for name, probe in spellings.items():
        checks, _ = await run_once(probe)
        assert checks["connectivity"].outcome is Outcome.OK, (name, checks["connectivity"].reason)
        assert_no_secret(checks.values(), NASTY, "w/rd#")


async def test_wrong_password_is_named_and_never_echoed(node: PgNode) -> None:
    wrong = "wr0ng#P@ss/word"
    checks, elapsed = await run_once(probe_for(f"postgresql://pwuser:{wrong}@127.0.0.1:{node.port}/postgres"))
    c = checks["connectivity"]
    assert c.outcome is Outcome.FAILED
    assert c.reason == f"authentication failed for user 'pwuser' at 127.0.0.1:{node.port}: wrong password"
    assert checks["connections"].reason.startswith("not checked: authentication failed")
    assert all(r.outcome is Outcome.FAILED for r in checks.values())
    assert any(o.name == "pg_up" and o.value == 0 for o in c.observations)
    assert_no_secret(checks.values(), wrong)
    assert elapsed < 5


async def test_unknown_host_missing_socket_refused_port(node: PgNode) -> None:
    cases = {
        "postgresql://mon:s3cret@no-such-host.invalid:5432/postgres": (
            "cannot resolve host 'no-such-host.invalid'"
        ),
        "postgresql://mon:s3cret@/postgres?host=/cloudsql/proj:asia-east1:nope": (
            "Unix socket /cloudsql/proj:asia-east1:nope/.s.PGSQL.5432 does not exist"
        ),
        f"postgresql://mon:s3cret@127.0.0.1:{free_port()}/postgres": "connection refused at 127.0.0.1:",
        f"postgresql://mon:s3cret@127.0.0.1:{node.port}/no_such_db": "database 'no_such_db' does not exist",
    }
    for dsn, expected in cases.items():
        checks, elapsed = await run_once(probe_for(dsn, timeout=3))
        assert checks["connectivity"].outcome is Outcome.FAILED
        assert expected in checks["connectivity"].reason, (dsn, checks["connectivity"].reason)
        assert_no_secret(checks.values(), "s3cret")
        assert elapsed < 3.5


async def test_unix_socket_directory_works(node: PgNode) -> None:
    checks, _ = await run_once(
        probe_for(f"postgresql://mon@/postgres?host={node.socket_dir}&port={node.port}")
    )
    assert checks["connectivity"].outcome is Outcome.OK, checks["connectivity"].reason
    assert (
        checks["connectivity"].target == f"postgresql://mon@/postgres?host={node.socket_dir}&port={node.port}"
    )
    env_checks, _ = await run_once(
        probe_for(
            None,
            env={
                "DB_HOST": str(node.socket_dir),
                "DB_PORT": str(node.port),
                "DB_USER": "mon",
                "DB_NAME": "postgres",
            },
        )
    )
    assert env_checks["connectivity"].outcome is Outcome.OK


async def test_saturated_server_is_reported_and_degrades_clearly(node: PgNode) -> None:
    probe = probe_for(node.dsn("mon"), connections={"warn_ratio": 0.8, "fail_ratio": 0.95})
    fillers: list[Any] = []
    try:
        first = by_check(await probe.run())
        assert first["connections"].outcome is Outcome.OK
        available = int(
            next(o.value for o in first["connections"].observations if o.name == "pg_connections_available")
        )
        assert available == 9  # 12 - 3 superuser_reserved_connections
        with pytest.raises(asyncpg.TooManyConnectionsError):
            for _ in range(20):
                fillers.append(
                    await asyncpg.connect(
                        host="127.0.0.1", port=node.port, user="filler", database="postgres"
                    )
                )
        saturated = by_check(await probe.run())
        c = saturated["connections"]
        assert c.outcome is Outcome.FAILED
        assert c.reason.startswith("connections saturated: 9/9 connection slots in use (100%")
        assert next(o.value for o in c.observations if o.name == "pg_connections_usage_ratio") == 1.0
        # A checker that was not yet connected cannot get in and says exactly why.
        newcomer, elapsed = await run_once(probe_for(node.dsn("mon"), timeout=3))
        assert newcomer["connectivity"].outcome is Outcome.FAILED
        assert "connection slots exhausted" in newcomer["connectivity"].reason
        assert "max_connections is reached" in newcomer["connectivity"].reason
        assert elapsed < 3.5
    finally:
        for f in fillers:
            f.terminate()
        await probe.aclose()


async def test_statement_timeout_bounds_each_check_and_keeps_the_connection(node: PgNode) -> None:
    probe = probe_for(
        node.dsn("mon"), query="SELECT pg_sleep(5)", statement_timeout="300ms", checks=["locks"]
    )
    try:
        t0 = time.monotonic()
        checks = by_check(await probe.run())
        elapsed = time.monotonic() - t0
        c = checks["connectivity"]
        assert c.outcome is Outcome.FAILED
        assert "statement cancelled by statement_timeout" in c.reason
        assert elapsed < 1.5
        assert checks["locks"].outcome is Outcome.OK  # same connection, still usable
        await probe.run()
        assert probe.connection is not None and probe.connection.connects == 1
    finally:
        await probe.aclose()


def _count_ours(node: PgNode) -> int:
    return int(node.psql("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'sre-watchdog'"))


async def test_hung_database_never_piles_up_runs_or_connections(node: PgNode) -> None:
    probe = probe_for(node.dsn("mon"), timeout=0.8, connect_timeout="0.5s")
    assert node.pid is not None
    stopped: list[int] = []
    try:
        first = by_check(await probe.run())
        assert first["connectivity"].outcome is Outcome.OK
        assert probe.connection is not None and probe.connection.session is not None
        backend = probe.connection.session.pid
        for pid in (node.pid, backend):  # the whole server freezes: postmaster and our backend
            os.kill(pid, signal.SIGSTOP)
            stopped.append(pid)
        t0 = time.monotonic()
        concurrent = await asyncio.gather(*(probe.run() for _ in range(5)))
        elapsed = time.monotonic() - t0
        assert elapsed < 1.3
        reasons = [by_check(r)["connectivity"].reason for r in concurrent]
        assert sum("timed out" in r for r in reasons) == 1, reasons
        assert sum(r.startswith("skipped: the previous run") for r in reasons) == 4
        assert all(res.outcome is Outcome.FAILED for r in concurrent for res in r)
        assert probe.connection.connection is None  # dropped, not kept half-open
        # Later runs try one fresh connection each, bounded by the connect timeout.
        for _ in range(2):
            t1 = time.monotonic()
            c = by_check(await probe.run())["connectivity"]
            assert time.monotonic() - t1 < 1.0
            assert c.outcome is Outcome.FAILED and "no answer from 127.0.0.1" in c.reason, c.reason
    finally:
        for pid in stopped:
            os.kill(pid, signal.SIGCONT)
    try:
        wait_for(lambda: _count_ours(node) == 0, timeout=10)  # abandoned attempts went away
        recovered = by_check(await probe.run())
        assert recovered["connectivity"].outcome is Outcome.OK, recovered["connectivity"].reason
        assert _count_ours(node) == 1
    finally:
        await probe.aclose()


async def test_blackhole_server_connect_timeout_and_one_socket_at_a_time() -> None:
    accepted: list[socket.socket] = []
    peak = 0
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(32)
    server.setblocking(False)
    port = server.getsockname()[1]
    stop = asyncio.Event()

    async def acceptor() -> None:
        nonlocal peak
        loop = asyncio.get_running_loop()
        open_socks: set[socket.socket] = set()
        while not stop.is_set():
            with contextlib.suppress(BlockingIOError):
                conn, _ = server.accept()
                conn.setblocking(False)
                accepted.append(conn)
                open_socks.add(conn)
            for s in list(open_socks):
                try:
                    while data := s.recv(4096):  # swallow the startup/SSL request, never answer
                        del data
                    open_socks.discard(s)  # b"": the client closed it
                except BlockingIOError:
                    pass
                except OSError:
                    open_socks.discard(s)
            peak = max(peak, len(open_socks))
            await loop.run_in_executor(None, time.sleep, 0.01)

    task = asyncio.create_task(acceptor())
    probe = probe_for(
        f"postgresql://mon:s3cret@127.0.0.1:{port}/postgres", timeout=0.6, connect_timeout="0.4s"
    )
    try:
        for _ in range(3):
            t0 = time.monotonic()
            results = await asyncio.gather(probe.run(), probe.run())
            assert time.monotonic() - t0 < 1.0
            reasons = sorted(by_check(r)["connectivity"].reason for r in results)
            assert any("no answer from 127.0.0.1" in r and "within 0.4s" in r for r in reasons), reasons
            assert any(r.startswith("skipped") for r in reasons), reasons
            assert_no_secret([res for r in results for res in r], "s3cret")
    finally:
        stop.set()
        await task
        await probe.aclose()
        for s in accepted:
            s.close()
        server.close()
    assert len(accepted) == 3  # one connection attempt per run, never more
    assert peak <= 1


async def test_primary_stopped_fails_within_timeout(node: PgNode) -> None:
    probe = probe_for(node.dsn("mon"), timeout=2)
    try:
        assert by_check(await probe.run())["connectivity"].outcome is Outcome.OK
        node.stop("immediate")
        t0 = time.monotonic()
        lost = by_check(await probe.run())
        assert time.monotonic() - t0 < 2.0
        assert lost["connectivity"].outcome is Outcome.FAILED
        assert "lost" in lost["connectivity"].reason or "refused" in lost["connectivity"].reason
        t1 = time.monotonic()
        down = by_check(await probe.run())
        assert time.monotonic() - t1 < 2.0
        assert "connection refused at 127.0.0.1" in down["connectivity"].reason
        assert all(r.outcome is Outcome.FAILED for r in down.values())
    finally:
        if node.pid is None:
            node.start()
        await probe.aclose()
    back = by_check(await probe.run())
    assert back["connectivity"].outcome is Outcome.OK
    await probe.aclose()

"""Every check family against a real throwaway primary + streaming replica (pg_stat_statements loaded), with
real faults injected: replay paused, lock waits, long queries, idle transactions, deadlocks, archiver
failures, stale slots, missing privileges. Also the cross-check against prometheus-postgres-exporter."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from click.testing import CliRunner
from pgcluster import PgCluster, PgNode, free_port, wait_for
from prometheus_client import generate_latest

from watchdog.cli.db import db
from watchdog.config.postgres import PostgresProbeConfig
from watchdog.config.settings import ProbeDefaults
from watchdog.core.clock import SystemClock
from watchdog.core.results import Outcome, ProbeResult
from watchdog.probes.base import Probe
from watchdog.probes.postgres import PostgresProbe
from watchdog.store.memory import MemoryStore
from watchdog.web.metrics import build_registry

EXPORTER_QUERIES = Path("/usr/share/doc/prometheus-postgres-exporter/examples/queries.yaml")


@pytest.fixture(scope="module")
def cluster() -> Iterator[PgCluster]:
    with PgCluster(conf={"deadlock_timeout": "100ms", "track_io_timing": "on"}) as c:
        p = c.primary
        p.psql("CREATE EXTENSION pg_stat_statements")
        p.psql(
            "CREATE TABLE t (id int PRIMARY KEY, v int); "
            "INSERT INTO t SELECT g, g FROM generate_series(1, 1000) g"
        )
        p.psql("CREATE ROLE mon LOGIN IN ROLE pg_monitor; CREATE ROLE nomon LOGIN; CREATE ROLE app LOGIN")
        p.psql("GRANT ALL ON t TO app")
        # A hardened setup: statement statistics only for roles with pg_read_all_stats (pg_monitor has it).
        p.psql("REVOKE EXECUTE ON FUNCTION pg_stat_statements(boolean) FROM PUBLIC")
        p.psql("GRANT EXECUTE ON FUNCTION pg_stat_statements(boolean) TO pg_read_all_stats")
        p.psql("CREATE DATABASE noext")
        assert c.replica is not None
        wait_for(
            lambda: (
                c.replica is not None
                and c.replica.psql("SELECT count(*) FROM pg_roles WHERE rolname='app'") == "1"
            )
        )
        yield c


def make_probe(
    node: PgNode, user: str = "mon", database: str = "postgres", **overrides: Any
) -> PostgresProbe:
    config = PostgresProbeConfig.model_validate(
        {
            "kind": "postgres",
            "name": "db",
            "dsn": node.dsn(user, database),
            "labels": {"env": "test"},
            **overrides,
        }
    )
    return PostgresProbe(config, defaults=ProbeDefaults(timeout=5), clock=SystemClock())


def by_check(results: Sequence[ProbeResult]) -> dict[str, ProbeResult]:
    out = {r.labels["check"]: r for r in results}
    assert len(out) == len(results)
    return out


def obs(result: ProbeResult, name: str, **labels: str) -> float:
    for o in result.observations:
        if o.name == name and all(o.labels.get(k) == v for k, v in labels.items()):
            return o.value
    raise AssertionError(
        f"no observation {name}{labels} in {[(o.name, dict(o.labels)) for o in result.observations]}"
    )


@contextlib.asynccontextmanager
async def session(node: PgNode, user: str = "app", app: str = "test-client") -> AsyncIterator[Any]:
    """A client session; on exit its server backend is terminated too (a cancelled pg_sleep would go on)."""
    conn = await asyncpg.connect(
        host="127.0.0.1",
        port=node.port,
        user=user,
        database="postgres",
        server_settings={"application_name": app},
    )
    pid = await conn.fetchval("SELECT pg_backend_pid()")
    try:
        yield conn
    finally:
        conn.terminate()
        node.psql(f"SELECT pg_terminate_backend({pid})")
        wait_for(lambda: node.psql(f"SELECT count(*) FROM pg_stat_activity WHERE pid = {pid}") == "0")


async def test_probe_implements_the_protocol_and_all_ok_on_a_healthy_primary(cluster: PgCluster) -> None:
    probe = make_probe(cluster.primary, replication={"expected_standbys": 1})
    try:
        assert isinstance(probe, Probe)
        results = await probe.run()
        checks = by_check(results)
        assert set(checks) == {"connectivity", "connections", "queries", "locks", "replication", "vitals"}
        for r in results:
            assert r.outcome is Outcome.OK, (r.labels, r.reason)
            assert r.kind == "postgres" and r.probe == "db" and r.labels["env"] == "test"
        c = checks["connectivity"]
        assert obs(c, "pg_up") == 1.0 and 0 < obs(c, "pg_query_latency_seconds") < 0.05
        assert c.latency_s == obs(c, "pg_query_latency_seconds")
        assert obs(checks["connections"], "pg_connections", state="active") >= 1
        assert obs(checks["replication"], "pg_replication_streaming", standby="replica1") == 1.0
        assert obs(checks["replication"], "pg_replication_slot_active", slot="replica1_slot") == 1.0
        assert obs(checks["vitals"], "pg_cache_hit_ratio") > 0.5
        assert obs(checks["queries"], "pg_stat_statements_available") == 1.0
        # One connection, reused, with the safety settings on the server side.
        await probe.run()
        conn = probe.connection
        assert conn is not None and conn.connects == 1
        rows = await conn.connection.fetch(
            "SELECT current_setting('statement_timeout'), current_setting('lock_timeout'), "
            "current_setting('default_transaction_read_only'), application_name "
            "FROM pg_stat_activity WHERE pid = pg_backend_pid()"
        )
        assert tuple(rows[0]) == ("2s", "500ms", "on", "sre-watchdog")
        n = cluster.primary.psql(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'sre-watchdog'"
        )
        assert n == "1"
    finally:
        await probe.aclose()


async def test_replica_role_detected_and_idle_primary_is_not_lag(cluster: PgCluster) -> None:
    assert cluster.replica is not None
    cluster.primary.psql("INSERT INTO t VALUES (100001, 1) ON CONFLICT (id) DO UPDATE SET v = t.v + 1")
    wait_for(
        lambda: (
            cluster.replica is not None and cluster.replica.psql("SELECT v FROM t WHERE id = 100001") != ""
        )
    )
    await asyncio.sleep(
        1.2
    )  # the primary stays idle: the last replayed commit gets old, the replica is still current
    probe = make_probe(cluster.replica, replication={"lag_warn": "1s"})
    try:
        checks = by_check(await probe.run())
        rep = checks["replication"]
        assert rep.outcome is Outcome.OK, rep.reason
        assert "replica streaming" in rep.reason
        assert obs(rep, "pg_replication_is_replica") == 1.0
        assert obs(rep, "pg_replica_last_replay_age_seconds") >= 1.0
        assert obs(rep, "pg_replication_lag_seconds", standby="self") == 0.0
        assert obs(rep, "pg_replica_wal_receiver_up") == 1.0
        assert checks["connectivity"].reason.startswith("replica reachable")
    finally:
        await probe.aclose()


class Exporter:
    """prometheus-postgres-exporter on a free loopback port, stopped by pid."""

    def __init__(self, dsn: str, *, extend: bool = False) -> None:
        self.port = free_port()
        args = ["prometheus-postgres-exporter", f"--web.listen-address=127.0.0.1:{self.port}"]
        if extend:
            args.append(f"--extend.query-path={EXPORTER_QUERIES}")
        env = {**os.environ, "DATA_SOURCE_NAME": dsn + "?sslmode=disable"}
        self.proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(self._ready, timeout=15)

    def _ready(self) -> bool:
        try:
            return "pg_up 1" in httpx.get(f"http://127.0.0.1:{self.port}/metrics", timeout=2).text
        except httpx.HTTPError:
            return False

    def scrape(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        from prometheus_client.parser import text_string_to_metric_families

        text = httpx.get(f"http://127.0.0.1:{self.port}/metrics", timeout=10).text
        out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                out[(s.name, frozenset(s.labels.items()))] = s.value
        return out

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def exporter_sum(
    samples: Mapping[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return sum(
        v for (n, ls), v in samples.items() if n == name and all((k, val) in ls for k, val in labels.items())
    )


async def test_connection_states_agree_with_postgres_exporter(cluster: PgCluster) -> None:
    exporter = Exporter(cluster.primary.dsn("postgres"))
    probe = make_probe(cluster.primary, checks=["connections"])
    try:
        async with contextlib.AsyncExitStack() as stack:
            for _ in range(3):
                await stack.enter_async_context(session(cluster.primary))
            for _ in range(2):
                c = await stack.enter_async_context(session(cluster.primary))
                await c.execute("BEGIN; SELECT 1")
            sleeper = await stack.enter_async_context(session(cluster.primary, app="sleeper"))
            sleep_task = asyncio.create_task(sleeper.execute("SELECT pg_sleep(30)"))
            await asyncio.sleep(0.3)
            try:
                ours = by_check(await probe.run())["connections"]
                theirs = await asyncio.to_thread(exporter.scrape)
                ours_after = by_check(await probe.run())["connections"]
            finally:
                sleep_task.cancel()
                with contextlib.suppress(BaseException):
                    await sleep_task
        for state, tolerance in (
            ("idle", 1),  # each side sees the other's connection idle, itself active
            ("active", 1),
            ("idle in transaction", 0),
            ("idle in transaction (aborted)", 0),
        ):
            exp = exporter_sum(theirs, "pg_stat_activity_count", state=state)
            mine = {obs(ours, "pg_connections", state=state), obs(ours_after, "pg_connections", state=state)}
            assert any(abs(m - exp) <= tolerance for m in mine), (state, mine, exp)
        assert obs(ours, "pg_connections", state="idle in transaction") == 2
        assert obs(ours, "pg_connections", state="active") >= 2  # the sleeper and ourselves
        assert obs(ours, "pg_connections_by_application", application="test-client") == 5
    finally:
        exporter.stop()
        await probe.aclose()


async def test_replay_paused_lag_detected_and_agrees_with_exporter(cluster: PgCluster) -> None:
    replica = cluster.replica
    assert replica is not None
    replica_probe = make_probe(replica, replication={"lag_warn": "1s", "lag_fail": "1h"})
    primary_probe = make_probe(cluster.primary, replication={"bytes_warn": 1})
    exporter_replica = Exporter(replica.dsn("postgres"), extend=True)
    exporter_primary = Exporter(cluster.primary.dsn("postgres"))
    replica.psql("SELECT pg_wal_replay_pause()")
    try:
        cluster.primary.psql("UPDATE t SET v = v + 1 WHERE id = 1")
        wait_for(lambda: replica.psql("SELECT pg_get_wal_replay_pause_state()") == "paused")
        await asyncio.sleep(1.5)
        cluster.primary.psql("UPDATE t SET v = v + 1 WHERE id = 2")  # received, not replayed
        wait_for(
            lambda: replica.psql("SELECT pg_last_wal_receive_lsn() > pg_last_wal_replay_lsn()") == "t",
            timeout=10,
        )
        rep = by_check(await replica_probe.run())["replication"]
        theirs_replica = await asyncio.to_thread(exporter_replica.scrape)
        prim = by_check(await primary_probe.run())["replication"]
        theirs_primary = await asyncio.to_thread(exporter_primary.scrape)
    finally:
        replica.psql("SELECT pg_wal_replay_resume()")
        exporter_replica.stop()
        exporter_primary.stop()
        await replica_probe.aclose()
        await primary_probe.aclose()
    assert rep.outcome is Outcome.DEGRADED, rep.reason
    assert "replay is paused" in rep.reason and "replica replay delay" in rep.reason
    lag = obs(rep, "pg_replication_lag_seconds", standby="self")
    assert lag >= 1.5
    assert obs(rep, "pg_replica_replay_paused") == 1.0
    assert obs(rep, "pg_replication_lag_bytes", standby="self") > 0
    # Same moment, same number: the exporter's pg_replication_lag (now() - last replay timestamp).
    exp_lag = exporter_sum(theirs_replica, "pg_replication_lag")
    assert abs(exp_lag - lag) < 1.0, (exp_lag, lag)
    # On the primary: the standby is behind in bytes, equal to the exporter's pg_wal_lsn_diff.
    assert prim.outcome is Outcome.DEGRADED and "behind in replay" in prim.reason
    behind = obs(prim, "pg_replication_lag_bytes", standby="replica1")
    assert behind > 0
    # The exporter scrapes just after us and the primary may write a small WAL record in between
    # (bgwriter's running-xacts record), so theirs is ours plus at most one WAL page.
    theirs = exporter_sum(theirs_primary, "pg_stat_replication_pg_wal_lsn_diff", application_name="replica1")
    assert behind <= theirs < behind + 8192, (theirs, behind)


async def test_lock_waiter_and_its_blocker_detected(cluster: PgCluster) -> None:
    probe = make_probe(cluster.primary, locks={"blocked_warn": "200ms", "blocked_fail": "1h"})
    try:
        async with (
            session(cluster.primary, app="holder") as holder,
            session(cluster.primary, app="waiter") as waiter,
        ):
            holder_pid = await holder.fetchval("SELECT pg_backend_pid()")
            await holder.execute("BEGIN; UPDATE t SET v = v + 1 WHERE id = 10")
            waiting = asyncio.create_task(waiter.execute("UPDATE t SET v = v + 1 WHERE id = 10"))
            await asyncio.sleep(0.5)
            try:
                locks = by_check(await probe.run())["locks"]
                report = await probe.inspect()
            finally:
                await holder.execute("ROLLBACK")
                await asyncio.wait_for(waiting, 5)
        assert locks.outcome is Outcome.DEGRADED, locks.reason
        assert "1 session blocked" in locks.reason and f"root blocker pid {holder_pid}" in locks.reason
        assert obs(locks, "pg_blocked_sessions") == 1 and obs(locks, "pg_blocked_longest_seconds") >= 0.4
        details = report.family("locks")
        assert details is not None
        assert details.details["blocked"][0]["blocked_by"] == [holder_pid]
        assert details.details["blocked"][0]["application"] == "waiter"
        assert details.details["blockers"][0]["root"] is True
        assert "UPDATE t" in details.details["blockers"][0]["query"]
        after = by_check(await probe.run())["locks"]
        assert after.outcome is Outcome.OK and obs(after, "pg_blocked_sessions") == 0
    finally:
        await probe.aclose()


async def test_long_running_query_detected(cluster: PgCluster) -> None:
    warn = make_probe(
        cluster.primary, checks=["queries"], queries={"long_query": "1s", "long_query_fail": "1h"}
    )
    fail = make_probe(
        cluster.primary, checks=["queries"], queries={"long_query": "500ms", "long_query_fail": "1s"}
    )
    try:
        async with session(cluster.primary, app="sleeper") as conn:
            task = asyncio.create_task(conn.execute("SELECT pg_sleep(20)"))
            await asyncio.sleep(1.3)
            try:
                q_warn = by_check(await warn.run())["queries"]
                q_fail = by_check(await fail.run())["queries"]
            finally:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        assert q_warn.outcome is Outcome.DEGRADED, q_warn.reason
        assert "1 query running longer than 1.0 s" in q_warn.reason and "application sleeper" in q_warn.reason
        assert q_fail.outcome is Outcome.FAILED
        assert obs(q_warn, "pg_long_queries") == 1 and obs(q_warn, "pg_longest_query_seconds") >= 1.2
        assert "pg_sleep" not in q_warn.reason  # no query text in results (it may hold data)
    finally:
        await warn.aclose()
        await fail.aclose()


async def test_idle_in_transaction_detected(cluster: PgCluster) -> None:
    probe = make_probe(cluster.primary, checks=["connections"], connections={"idle_in_transaction": "500ms"})
    try:
        async with session(cluster.primary, app="forgetful") as conn:
            await conn.execute("BEGIN; SELECT 1")
            await asyncio.sleep(0.7)
            c = by_check(await probe.run())["connections"]
        assert c.outcome is Outcome.DEGRADED
        assert "idle in transaction for" in c.reason and "application forgetful" in c.reason
        assert obs(c, "pg_idle_in_transaction_longest_seconds") >= 0.6
    finally:
        await probe.aclose()


async def test_pg_stat_statements_top_n_deltas_and_cached_text(cluster: PgCluster) -> None:
    probe = make_probe(cluster.primary, checks=["queries"], queries={"top_statements": 3})
    try:
        first = by_check(await probe.run())["queries"]
        assert obs(first, "pg_stat_statements_available") == 1.0
        async with session(cluster.primary) as conn:
            for i in range(30):
                await conn.fetchval("SELECT count(*) FROM t WHERE v > $1", i)
            for _ in range(3):
                await conn.execute("SELECT pg_sleep(0.05) /* slowest */")
        report = await probe.inspect()
        st = report.family("queries")
        assert st is not None
        statements = st.details["statements"]
        assert statements["since"] == "previous run"
        mean_top = statements["top_by_mean"][0]
        assert "pg_sleep" in mean_top["query"] and mean_top["calls"] == 3 and mean_top["mean_ms"] >= 45
        counted = [r for r in statements["top_by_total"] if "count(*) FROM t" in r["query"]]
        assert counted == [] or counted[0]["calls"] == 30
        assert statements["calls"] >= 33
        qid = int(mean_top["queryid"])
        # Texts are cached: the next runs do not fetch them again for the same statements.
        assert qid in probe._memory.statement_texts
        text_calls = (
            "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements "
            "WHERE query LIKE '%pg_stat_statements(true)%'"
            " AND query NOT LIKE '%coalesce(sum(calls)%'"
        )
        before = int(cluster.primary.psql(text_calls))
        for _ in range(4):
            await probe.run()
        after = int(cluster.primary.psql(text_calls))
        assert after - before < 4
        q = by_check(await probe.run())["queries"]
        assert obs(q, "pg_statements_calls_delta") > 0
    finally:
        await probe.aclose()


async def test_pg_stat_statements_not_available_is_said_clearly(cluster: PgCluster) -> None:
    probe = make_probe(cluster.primary, database="noext", checks=["queries"])
    try:
        report = await probe.inspect()
        q = report.family("queries")
        assert q is not None and q.outcome is Outcome.OK
        assert "pg_stat_statements not available" in q.reason
        assert "CREATE EXTENSION pg_stat_statements" in q.details["statements"]["reason"]
        assert any(o.name == "pg_stat_statements_available" and o.value == 0 for o in q.observations)
    finally:
        await probe.aclose()


async def test_role_with_pg_monitor_sees_everything(cluster: PgCluster) -> None:
    probe = make_probe(cluster.primary, user="mon")
    try:
        async with session(cluster.primary, user="app") as conn:
            await conn.execute("BEGIN; SELECT 1")
            await probe.run()  # pg_stat_statements baseline
            results = await probe.run()
        for r in results:
            assert "pg_monitor" not in r.reason, r.reason
            assert r.outcome is Outcome.OK, (r.labels, r.reason)
        c = by_check(results)["connections"]
        assert obs(c, "pg_connections", state="idle in transaction") == 1
        assert all(o.labels.get("state") != "hidden" for o in c.observations)
        rep = by_check(results)["replication"]
        assert obs(rep, "pg_replication_lag_seconds", standby="replica1") >= 0
    finally:
        await probe.aclose()


async def test_role_without_pg_monitor_is_told_what_it_misses(cluster: PgCluster) -> None:
    probe = make_probe(cluster.primary, user="nomon")
    try:
        async with session(cluster.primary, user="app"):
            checks = by_check(await probe.run())
        c = checks["connections"]
        assert c.outcome is Outcome.DEGRADED
        assert "role 'nomon' lacks pg_monitor" in c.reason and "GRANT pg_monitor TO nomon" in c.reason
        assert obs(c, "pg_connections", state="hidden") >= 1
        q = checks["queries"]  # pg_stat_statements is restricted to pg_read_all_stats here
        assert q.outcome is Outcome.DEGRADED
        assert "permission denied for role 'nomon'" in q.reason and "GRANT pg_monitor TO nomon" in q.reason
        rep = checks["replication"]
        assert rep.outcome is Outcome.DEGRADED and "lacks pg_monitor" in rep.reason
        assert checks["connectivity"].outcome is Outcome.OK
    finally:
        await probe.aclose()


async def test_deadlock_counted_since_previous_run(cluster: PgCluster) -> None:
    probe = make_probe(cluster.primary, checks=["locks"])
    try:
        await probe.run()
        async with session(cluster.primary) as a, session(cluster.primary) as b:
            await a.execute("BEGIN; UPDATE t SET v = v + 1 WHERE id = 20")
            await b.execute("BEGIN; UPDATE t SET v = v + 1 WHERE id = 21")
            t1 = asyncio.create_task(a.execute("UPDATE t SET v = v + 1 WHERE id = 21"))
            await asyncio.sleep(0.05)
            t2 = asyncio.create_task(b.execute("UPDATE t SET v = v + 1 WHERE id = 20"))
            outcomes = await asyncio.gather(t1, t2, return_exceptions=True)
            assert any(isinstance(o, asyncpg.DeadlockDetectedError) for o in outcomes)
            await a.execute("ROLLBACK")
            await b.execute("ROLLBACK")
        seen = 0.0
        reasons = []
        deadline = time.monotonic() + 15
        while seen < 1 and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            r = by_check(await probe.run())["locks"]
            seen += obs(r, "pg_deadlocks_delta")
            reasons.append((r.outcome, r.reason))
        assert seen >= 1
        assert (Outcome.DEGRADED, "1 deadlock since the previous run") in reasons
    finally:
        await probe.aclose()


async def test_archiver_failure_and_backup_freshness(cluster: PgCluster) -> None:
    p = cluster.primary
    probe = make_probe(p, checks=["vitals"])
    stale = make_probe(p, checks=["vitals"], vitals={"archive_max_age": "1ms"})
    try:
        ok = by_check(await probe.run())["vitals"]
        assert ok.outcome is Outcome.OK and obs(ok, "pg_archiver_failing") == 0
        p.psql("ALTER SYSTEM SET archive_command = 'false'")
        p.reload()
        p.psql("INSERT INTO t VALUES (200000, 1) ON CONFLICT DO NOTHING")
        p.psql("SELECT pg_switch_wal()")
        wait_for(lambda: int(p.psql("SELECT failed_count FROM pg_stat_archiver")) > 0, timeout=15)
        bad = by_check(await probe.run())["vitals"]
        assert bad.outcome is Outcome.DEGRADED
        assert "WAL archiving is failing" in bad.reason and "backups are getting stale" in bad.reason
        assert obs(bad, "pg_archiver_failing") == 1
        old = by_check(await stale.run())["vitals"]
        assert "no WAL archived for" in old.reason
    finally:
        p.psql("ALTER SYSTEM RESET archive_command")
        p.reload()
        wait_for(
            lambda: (
                p.psql(
                    "SELECT last_archived_time > coalesce(last_failed_time, 'epoch') FROM pg_stat_archiver"
                )
                == "t"
            ),
            timeout=20,
        )
        await probe.aclose()
        await stale.aclose()


async def test_inactive_slot_retaining_wal(cluster: PgCluster) -> None:
    p = cluster.primary
    p.psql("SELECT pg_create_physical_replication_slot('stale_slot', true)")
    probe = make_probe(p, checks=["replication"], replication={"slot_retained_warn": 1})
    try:
        p.psql("INSERT INTO t SELECT g, g FROM generate_series(300000, 301000) g ON CONFLICT DO NOTHING")
        r = by_check(await probe.run())["replication"]
        assert r.outcome is Outcome.DEGRADED
        assert "inactive replication slot stale_slot retains" in r.reason
        assert obs(r, "pg_replication_slot_retained_bytes", slot="stale_slot") > 0
        assert obs(r, "pg_replication_slot_active", slot="stale_slot") == 0
    finally:
        p.psql("SELECT pg_drop_replication_slot('stale_slot')")
        await probe.aclose()


async def test_canary_query_slow_and_broken(cluster: PgCluster) -> None:
    slow = make_probe(cluster.primary, checks=["locks"], query="SELECT pg_sleep(0.08)")
    broken = make_probe(cluster.primary, checks=["locks"], query="SELECT * FROM no_such_table")
    try:
        s = by_check(await slow.run())
        assert (
            s["connectivity"].outcome is Outcome.DEGRADED and "canary query took" in s["connectivity"].reason
        )
        assert s["connectivity"].latency_s >= 0.08
        b = by_check(await broken.run())
        assert b["connectivity"].outcome is Outcome.FAILED
        assert (
            "canary query failed" in b["connectivity"].reason and "no_such_table" in b["connectivity"].reason
        )
        assert b["locks"].outcome is Outcome.OK  # the connection is fine, the other checks still run
    finally:
        await slow.aclose()
        await broken.aclose()


async def _delay_proxy(target_port: int, delay_s: float) -> tuple[asyncio.Server, int]:
    """A loopback TCP proxy adding ``delay_s`` each way: a database "in another region"."""

    async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                await asyncio.sleep(delay_s)
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection("127.0.0.1", target_port)
        await asyncio.gather(pump(client_r, server_w), pump(server_r, client_w))

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port: int = server.sockets[0].getsockname()[1]
    return server, port


async def test_sustained_cross_region_round_trip_is_flagged(cluster: PgCluster) -> None:
    server, port = await _delay_proxy(cluster.primary.port, 0.013)  # ≈ 26 ms round trip
    config = PostgresProbeConfig(
        kind="postgres",
        name="far",
        dsn=f"postgresql://mon@127.0.0.1:{port}/postgres",
        checks=["locks"],
        region_rtt_runs=3,
        slow_query="1s",
    )
    probe = PostgresProbe(config, defaults=ProbeDefaults(timeout=5), clock=SystemClock())
    try:
        outcomes = []
        for _ in range(3):
            c = by_check(await probe.run())["connectivity"]
            outcomes.append(c.outcome)
            assert obs(c, "pg_rtt_seconds") > 0.02
        assert outcomes[:2] == [Outcome.OK, Outcome.OK]
        assert outcomes[2] is Outcome.DEGRADED
        assert "another region" in c.reason and "Unix socket" in c.reason
    finally:
        await probe.aclose()
        server.close()
        await server.wait_closed()


async def test_results_reach_the_store_and_metrics_without_secrets(cluster: PgCluster) -> None:
    p = cluster.primary
    p.psql(
        "DO $$ BEGIN CREATE ROLE secretive LOGIN PASSWORD 'pa:ss@w/rd' IN ROLE pg_monitor; "
        "EXCEPTION WHEN duplicate_object THEN NULL; END $$"
    )
    config = PostgresProbeConfig(
        kind="postgres",
        name="db",
        dsn=f"postgresql://secretive:pa:ss@w/rd@127.0.0.1:{p.port}/postgres",
        labels={"env": "test"},
    )
    probe = PostgresProbe(config, defaults=ProbeDefaults(timeout=5), clock=SystemClock())
    store = MemoryStore()
    await store.open()
    try:
        results = await probe.run()
        assert all(r.outcome is not Outcome.FAILED for r in results), [r.reason for r in results]
        await store.record(results)
        latest = await store.latest("db")
        assert {r.labels["check"] for r in latest} == {
            "connectivity",
            "connections",
            "queries",
            "locks",
            "replication",
            "vitals",
        }
        minute = int(results[0].started_at // 60)
        rows = await store.observation_minutes(
            minute, minute + 1, probe="db", name="pg_connections", labels={"state": "active"}
        )
        assert rows and rows[0].last >= 1
        registry, _m, snapshot = build_registry()
        snapshot.update(latest, True, {})
        text = generate_latest(registry).decode()
        assert 'watchdog_pg_connections{check="connections",env="test",probe="db",state="idle"}' in text
        assert (
            'watchdog_pg_replication_lag_seconds{check="replication",env="test",probe="db",standby="replica1"}'
            in text
        )
        assert "watchdog_pg_query_latency_seconds" in text
        assert "pa:ss@w/rd" not in text and "w/rd" not in text
        for r in results:
            assert "w/rd" not in r.target + r.reason
        assert results[0].target == f"postgresql://secretive:***@127.0.0.1:{p.port}/postgres"
    finally:
        await probe.aclose()
        await store.close()


def test_cli_inspect_rich_and_json(cluster: PgCluster) -> None:
    runner = CliRunner()
    dsn = cluster.primary.dsn("mon")
    out = runner.invoke(db, ["inspect", dsn, "--json", "--host-metrics", "none"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert data["outcome"] in {"ok", "degraded"}
    assert set(data["checks"]) == {"connectivity", "connections", "queries", "locks", "replication", "vitals"}
    assert data["checks"]["replication"]["details"]["standbys"][0]["standby"] == "replica1"
    assert data["checks"]["queries"]["details"]["statements"]["since"] == "statistics reset"
    rich = runner.invoke(db, ["inspect", dsn, "--host-metrics", "proc"], terminal_width=200)
    assert rich.exit_code in {0, 1}, rich.output  # 1 only if this host's CPU is over the fail threshold
    for section in (
        "Checks",
        "Connections:",
        "Active queries",
        "Top statements by total time",
        "Blockers:",
        "Standbys",
        "Replication slots",
        "Vitals:",
        "Host (proc)",
    ):
        assert section in rich.output, section
    # Without a DSN the DB_* environment is used; the replica is detected as such.
    assert cluster.replica is not None
    env = {
        "DB_HOST": "127.0.0.1",
        "DB_PORT": str(cluster.replica.port),
        "DB_USER": "mon",
        "DB_NAME": "postgres",
    }
    rep = runner.invoke(db, ["inspect", "--json", "--host-metrics", "none"], env=env)
    assert rep.exit_code == 0, rep.output
    assert json.loads(rep.output)["checks"]["replication"]["details"]["role"] == "replica"
    dead = runner.invoke(
        db, ["inspect", f"postgresql://mon:hunter2@127.0.0.1:{free_port()}/x", "--timeout", "2s"]
    )
    assert dead.exit_code == 1
    assert "connection refused" in dead.output and "hunter2" not in dead.output

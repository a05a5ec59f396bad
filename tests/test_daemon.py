"""The daemon end to end on real parts: scheduler, store, HTTP server, Prometheus exposition."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import httpx
import pytest
from loopback import closed_port
from prometheus_client.parser import text_string_to_metric_families

from watchdog.config.loader import WatchdogConfig
from watchdog.config.settings import ProbeDefaults, Settings
from watchdog.core.clock import SystemClock
from watchdog.core.results import Observation, Outcome, ProbeResult
from watchdog.probes.base import Probe
from watchdog.probes.fake import FakeProbe
from watchdog.runtime.daemon import Daemon
from watchdog.runtime.wiring import latency_edges, wire
from watchdog.store import PostgresStore, SqliteStore, StoreUnavailable
from watchdog.web.app import create_app
from watchdog.web.server import HttpServer

FAST = Settings(
    flush_interval=0.2,
    evaluation_interval=0.5,
    defaults=ProbeDefaults(interval=0.2, timeout=1.0, jitter=0),
)


def _config(tmp_path: Path, settings: Settings = FAST) -> WatchdogConfig:
    return WatchdogConfig(root=tmp_path, settings=settings)


def _observed(clock: SystemClock) -> ProbeResult:
    return ProbeResult(
        probe="db-like",
        kind="fake",
        target="fake://db",
        outcome=Outcome.DEGRADED,
        latency_s=0.0,
        started_at=0.0,
        reason="connections at 85 %",
        labels={"check": "connections"},
        observations=(
            Observation("pg_connections", 42, {"state": "active"}),
            Observation("pg_connections", 3, {"state": "idle in transaction"}),
            Observation("pg_connection_usage_ratio", float("nan")),  # must never reach /metrics
        ),
    )


def _fakes(clock: SystemClock) -> list[Probe]:
    return [
        FakeProbe("always-ok", [Outcome.OK], clock=clock, interval_s=0.2, labels={"cohort": "yaml"}),
        FakeProbe("flapping", [Outcome.FAILED, Outcome.OK], clock=clock, interval_s=0.2, cycle=True),
        FakeProbe("raises", [RuntimeError("boom")], clock=clock, interval_s=0.2),
        FakeProbe("db-like", [_observed(clock)], clock=clock, interval_s=0.2),
    ]


async def _wait_for(predicate: object, timeout_s: float = 10.0) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not reached in time")


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[tuple[Daemon, str]]:
    clock = SystemClock()
    store = SqliteStore(tmp_path / "state.db")
    daemon = Daemon(
        wire(_config(tmp_path), store=store, clock=clock, probes=_fakes(clock), instance="test-1")
    )
    await daemon.start()
    server = HttpServer(create_app(daemon), "127.0.0.1:0")
    url = await server.start()
    try:
        yield daemon, url
    finally:
        await server.stop()
        await daemon.stop()


async def test_results_reach_the_store_and_metrics(running: tuple[Daemon, str]) -> None:
    daemon, url = running

    async def every_probe_recorded() -> bool:
        return {r.probe for r in await daemon.store.latest()} >= {
            "always-ok",
            "flapping",
            "raises",
            "db-like",
        }

    await _wait_for(every_probe_recorded)
    async with httpx.AsyncClient(base_url=url) as client:
        health = await client.get("/healthz")
        ready = await client.get("/readyz")
        text = (await client.get("/metrics")).text
        status = (await client.get("/")).json()
    assert health.status_code == 200
    assert ready.status_code == 200 and ready.json()["ready"] is True
    assert {p["probe"] for p in status["probes"]} >= {"always-ok", "raises"}
    # The status page speaks the one result shape (the store's and `check --json`'s).
    latest = {(r.probe, tuple(sorted(r.labels.items()))): r for r in await daemon.store.latest()}
    for shown in status["probes"]:
        result = ProbeResult.from_dict(shown)
        assert result == latest[(result.probe, tuple(sorted(result.labels.items())))]

    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert (
        samples[("watchdog_probe_success", (("cohort", "yaml"), ("kind", "fake"), ("probe", "always-ok")))]
        == 1
    )
    assert samples[("watchdog_probe_success", (("kind", "fake"), ("probe", "raises")))] == 0
    assert (
        samples[
            ("watchdog_probe_degraded", (("check", "connections"), ("kind", "fake"), ("probe", "db-like")))
        ]
        == 1
    )
    assert (
        samples[
            ("watchdog_pg_connections", (("check", "connections"), ("probe", "db-like"), ("state", "active")))
        ]
        == 42
    )
    assert not any(name == "watchdog_pg_connection_usage_ratio" for name, _ in samples)
    assert samples[("watchdog_store_up", ())] == 1
    assert any(name == "watchdog_build_info" for name, _ in samples)
    assert any(name == "watchdog_probe_latency_seconds_bucket" for name, _ in samples)
    assert any(
        name == "watchdog_probe_results_total" and dict(labels).get("outcome") == "failed"
        for name, labels in samples
    )
    assert samples[("watchdog_scheduler_lag_seconds_count", ())] > 0
    assert all(value == value for value in samples.values()), "NaN in exposition"

    promtool = shutil.which("promtool")
    assert promtool, "promtool (Debian package prometheus) is required; .ci/run installs it"
    proc = await asyncio.create_subprocess_exec(
        promtool,
        "check",
        "metrics",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate(text.encode())
    assert proc.returncode == 0, out.decode()


async def test_a_raising_probe_becomes_a_failed_result_with_the_reason(running: tuple[Daemon, str]) -> None:
    daemon, _ = running

    async def raised() -> bool:
        return any(r.probe == "raises" for r in await daemon.store.recent(limit=50))

    await _wait_for(raised)
    result = next(r for r in await daemon.store.recent(limit=50) if r.probe == "raises")
    assert result.outcome is Outcome.FAILED
    assert "RuntimeError" in result.reason and "boom" in result.reason
    assert daemon.scheduler.running, "the scheduler survives failing probes"


class _ExplodingProbe:
    """A third-party probe that breaks the contract by raising: the daemon must contain it."""

    name = "exploding"
    kind = "custom"
    interval_s = 1.0
    timeout_s = 0.2

    async def run(self) -> Sequence[ProbeResult]:
        raise ValueError("contract broken")

    async def aclose(self) -> None:
        return None


class _HangingProbe(_ExplodingProbe):
    name = "hanging"

    async def run(self) -> Sequence[ProbeResult]:
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")


async def test_contract_breaking_probes_are_contained(tmp_path: Path) -> None:
    daemon = Daemon(wire(_config(tmp_path), store=SqliteStore(tmp_path / "s.db"), probes=[]))
    exploded = await daemon.run_probe_once(_ExplodingProbe())
    assert exploded[0].outcome is Outcome.FAILED
    assert exploded[0].reason == "probe raised ValueError: contract broken"
    started = time.monotonic()
    hung = await daemon.run_probe_once(_HangingProbe())
    assert time.monotonic() - started < 3.0
    assert hung[0].outcome is Outcome.FAILED and "did not finish within its timeout" in hung[0].reason


async def test_slow_probe_runs_never_pile_up(tmp_path: Path) -> None:
    clock = SystemClock()
    slow = FakeProbe("slow", [Outcome.OK], clock=clock, interval_s=0.1, timeout_s=5, delay_s=0.5)
    daemon = Daemon(wire(_config(tmp_path), store=SqliteStore(tmp_path / "s.db"), clock=clock, probes=[slow]))
    await daemon.start()
    await asyncio.sleep(1.6)
    await daemon.stop()
    # 0.5 s per run, one at a time: at most 4 runs in 1.6 s even though 16 were due.
    assert 1 <= slow.calls <= 4
    text = _metrics_text(daemon)
    assert 'watchdog_probe_runs_skipped_total{probe="slow"}' in text


def _metrics_text(daemon: Daemon) -> str:
    from prometheus_client import generate_latest

    return generate_latest(daemon.registry).decode()


def test_latency_edges_include_every_configured_threshold() -> None:
    from watchdog.config import load_config

    config = load_config(Path(__file__).resolve().parent.parent)
    edges = latency_edges(config)
    assert 0.2 in edges and 0.05 in edges
    assert list(edges) == sorted(set(edges))


# -- store outage: results are kept and written later --------------------------------------------------

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


async def _admin(sql: str) -> None:
    import psycopg

    async with await psycopg.AsyncConnection.connect(PG_ADMIN, autocommit=True) as conn:
        await conn.execute(sql.encode())


@pytest.mark.postgres
async def test_store_outage_keeps_results_and_reports_not_ready(tmp_path: Path) -> None:
    db = f"watchdog_outage_{os.getpid()}"
    await _admin(f"DROP DATABASE IF EXISTS {db}")
    await _admin(f"CREATE DATABASE {db}")
    clock = SystemClock()
    store = PostgresStore(
        f"postgresql://postgres@127.0.0.1:5432/{db}", connect_timeout_s=1, reconnect_backoff_s=0.1
    )
    probe = FakeProbe("steady", [Outcome.OK], clock=clock, interval_s=0.1)
    daemon = Daemon(wire(_config(tmp_path), store=store, clock=clock, probes=[probe], instance="outage"))
    await daemon.start()
    server = HttpServer(create_app(daemon), "127.0.0.1:0")
    url = await server.start()
    try:
        await asyncio.sleep(0.5)
        await _admin(f"ALTER DATABASE {db} ALLOW_CONNECTIONS false")
        await _admin(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{db}'")
        async with httpx.AsyncClient(base_url=url) as client:

            async def not_ready() -> bool:
                return (await client.get("/readyz")).status_code == 503

            await _wait_for(not_ready)
            assert daemon.buffer.pending > 0 or not daemon.buffer.store_ok
            await asyncio.sleep(0.6)
            pending_during_outage = daemon.buffer.pending
            assert pending_during_outage > 0
            await _admin(f"ALTER DATABASE {db} ALLOW_CONNECTIONS true")

            async def ready() -> bool:
                return (await client.get("/readyz")).status_code == 200 and daemon.buffer.pending == 0

            await _wait_for(ready)
        await server.stop()
        await daemon.stop()
        # Every run was written, including those made while the store was down.
        reader = PostgresStore(f"postgresql://postgres@127.0.0.1:5432/{db}")
        await reader.open()
        recorded = sum(m.count for m in await reader.minutes(0, 2**40, probe="steady"))
        await reader.close()
    finally:
        await server.stop()
        await daemon.stop()
        await _admin(f"ALTER DATABASE {db} ALLOW_CONNECTIONS true")
        await _admin(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
    assert daemon.buffer.dropped == 0
    assert recorded == probe.calls


# -- the command: SIGTERM drains and exits 0; logs are JSON lines ---------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_run_command_serves_and_exits_zero_on_sigterm(tmp_path: Path) -> None:
    (tmp_path / "probes").mkdir()
    (tmp_path / "probes" / "p.yaml").write_text(
        f"probes:\n  - name: dead-target\n    kind: http\n    url: http://127.0.0.1:{closed_port()}/\n"
        "    interval: 1s\n    timeout: 1s\n"
    )
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "watchdog.cli.main",
            "run",
            "--config",
            str(tmp_path),
            "--listen",
            f"127.0.0.1:{port}",
            "--state",
            str(tmp_path / "state.db"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 15
        body = ""
        while time.monotonic() < deadline:
            try:
                body = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=1).text
                if 'probe="dead-target"' in body:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        assert 'watchdog_probe_success{kind="http",probe="dead-target"} 0.0' in body
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=10)
        assert time.monotonic() - started < 8
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr
    lines = [json.loads(line) for line in stderr.splitlines() if line.strip()]
    assert lines, "the daemon logs"
    assert all({"severity", "message"} <= set(line) for line in lines)
    messages = [line["message"] for line in lines]
    assert any("dead-target is failed" in m for m in messages), messages
    assert any(m == "watchdog stopped" for m in messages)


def test_run_command_reports_a_busy_port_and_bad_store(tmp_path: Path) -> None:
    (tmp_path / "watchdog.yaml").write_text("allow_no_probes: true\n")  # the point here is port and store
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "watchdog.cli.main",
                "run",
                "--config",
                str(tmp_path),
                "--listen",
                f"127.0.0.1:{port}",
                "--state",
                str(tmp_path / "state.db"),
            ],
            capture_output=True,
            text=True,
            timeout=20,
        )
    assert out.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in out.stderr
    # Listening comes first: a busy port stops the daemon before it touches the store or starts anything.
    assert not (tmp_path / "state.db").exists()
    assert "watchdog started" not in out.stderr
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "watchdog.cli.main",
            "run",
            "--config",
            str(tmp_path),
            "--listen",
            "127.0.0.1:0",
            "--state",
            "postgresql://watchdog:s3cr3t@127.0.0.1:" + str(closed_port()) + "/x",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert bad.returncode == 1
    assert "cannot open the state store" in bad.stderr
    assert "s3cr3t" not in bad.stderr


def test_store_unavailable_is_an_exception_type() -> None:
    assert issubclass(StoreUnavailable, Exception)


async def test_stop_lets_running_probes_finish(tmp_path: Path) -> None:
    clock = SystemClock()
    slow = FakeProbe("slow", [Outcome.OK], clock=clock, interval_s=10, timeout_s=5, delay_s=0.6)
    store = SqliteStore(tmp_path / "s.db")
    daemon = Daemon(wire(_config(tmp_path), store=store, clock=clock, probes=[slow]))
    await daemon.start()

    async def running() -> bool:
        return slow.calls == 1

    await _wait_for(running)
    await daemon.stop()
    assert daemon.runs_completed == 1, "the run in flight finished and was recorded"
    reader = SqliteStore(tmp_path / "s.db")
    await reader.open()
    assert [r.probe for r in await reader.recent()] == ["slow"]
    await reader.close()


def test_probe_starts_fall_on_the_start_grid_within_their_spread() -> None:
    """Starts are grouped on a 100 ms grid (one scheduler wake-up per slot, bench/probe_cpu.py paced),
    never earlier than now and at most one grid step past the random phase."""
    from datetime import UTC, datetime, timedelta

    from watchdog.runtime.daemon import START_GRID_S, first_run_at

    now = datetime(2026, 12, 2, 3, 0, 0, 123_456, tzinfo=UTC)
    starts = [first_run_at(now, 10.0) for _ in range(2000)]
    for start in starts:
        assert now <= start <= now + timedelta(seconds=10.0 + START_GRID_S)
        assert (start.timestamp() / START_GRID_S) == pytest.approx(round(start.timestamp() / START_GRID_S))
    # 500 probes over a 10 s spread share ~100 slots: several starts per wake-up, spread over the interval.
    slots = {s.timestamp() for s in starts[:500]}
    assert 90 <= len(slots) <= 101
    assert first_run_at(now, 0.0) == datetime(2026, 12, 2, 3, 0, 0, 200_000, tzinfo=UTC)

"""Signals → incidents → outbox → notifiers, with two replicas on one store paging exactly once."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from watchdog.config import load_config
from watchdog.config.loader import WatchdogConfig
from watchdog.core.clock import FakeClock
from watchdog.core.results import Outcome, ProbeResult
from watchdog.incidents.manager import IncidentManager
from watchdog.notify.base import NotifyError, Page
from watchdog.notify.dispatch import Dispatcher
from watchdog.notify.log import LogNotifier
from watchdog.slo.model import AlertSignal, Severity
from watchdog.store import SqliteStore

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def config() -> WatchdogConfig:
    return load_config(REPO, environ={"TARGET_BASE_URL": "https://svc.example"})


def _signal(state: str, at: float, severity: Severity = "page") -> AlertSignal:
    return AlertSignal(
        slo="content-db-availability",
        severity=severity,
        state=state,  # type: ignore[arg-type]
        burn_rates={"1h": 20.0, "5m": 30.0},
        at=at,
        summary="burning at 20x",
    )


async def test_two_replicas_page_once_per_transition(tmp_path: Path, config: WatchdogConfig) -> None:
    clock = FakeClock()
    stores = [SqliteStore(tmp_path / "state.db"), SqliteStore(tmp_path / "state.db")]
    for store in stores:
        await store.open()
    managers = [IncidentManager(config, store, clock) for store in stores]
    firing = _signal("firing", clock.now())
    moved = await asyncio.gather(*(m.handle_slo_signals([firing]) for m in managers))
    assert sum(len(m) for m in moved) == 1, "exactly one replica wins the transition"
    # Critical: L1 and L3 at once.
    notifiers = [LogNotifier(), LogNotifier()]
    dispatchers = [
        Dispatcher(store, {"log": n}, clock, f"replica-{i}")
        for i, (store, n) in enumerate(zip(stores, notifiers, strict=True))
    ]
    await asyncio.gather(*(d.run_once() for d in dispatchers))
    pages = [p for n in notifiers for p in n.sent]
    assert sorted(p.level for p in pages) == ["L1", "L3"]
    assert all(p.state == "firing" and p.severity == "critical" for p in pages)
    assert pages[0].runbook_url.endswith("runbooks/content-db-burn.md")
    # The same signal again changes nothing; resolving pages once more.
    assert await managers[0].handle_slo_signals([firing]) == []
    clock.advance(600)
    resolved = await asyncio.gather(
        *(m.handle_slo_signals([_signal("resolved", clock.now())]) for m in managers)
    )
    assert sum(len(m) for m in resolved) == 1
    await asyncio.gather(*(d.run_once() for d in dispatchers))
    assert sorted(p.state for n in notifiers for p in n.sent) == ["firing", "firing", "resolved", "resolved"]
    # Both the firing and the resolved page say since when the incident fired (FakeClock: 2026-01-01).
    assert {p.since for n in notifiers for p in n.sent} == {"2026-01-01 00:00:00 UTC"}
    assert await dispatchers[0].run_once() == 0, "nothing is sent twice"
    assert await managers[1].open_slo_incidents() == []
    for store in stores:
        await store.close()


async def test_no_data_is_its_own_incident(tmp_path: Path, config: WatchdogConfig) -> None:
    clock = FakeClock()
    store = SqliteStore(tmp_path / "s.db")
    await store.open()
    manager = IncidentManager(config, store, clock)
    burn = _signal("firing", clock.now())
    silent = AlertSignal(
        slo="content-db-availability",
        severity="ticket",
        state="firing",
        burn_rates={},
        at=clock.now(),
        summary="no data for 2m",
        reason="no_data",
    )
    moved = await manager.handle_slo_signals([burn, silent])
    assert sorted(t.key for t in moved) == ["alert:content-db-burn", "alert:content-db-burn:no_data"]
    assert sorted(await manager.open_slo_incidents()) == [
        ("content-db-availability", "no_data"),
        ("content-db-availability", "page"),
    ]
    quiet_again = AlertSignal(
        slo="content-db-availability",
        severity="ticket",
        state="resolved",
        burn_rates={},
        at=clock.now(),
        summary="",
        reason="no_data",
    )
    moved = await manager.handle_slo_signals([quiet_again])
    assert [(t.key, t.state) for t in moved] == [("alert:content-db-burn:no_data", "resolved")]
    burning = await store.get_incident("alert:content-db-burn")
    assert burning is not None and burning.state == "firing", "no-data resolving leaves the burn firing"
    await store.close()


async def test_ticket_signals_only_reach_ticket_alerts(tmp_path: Path, config: WatchdogConfig) -> None:
    clock = FakeClock()
    store = SqliteStore(tmp_path / "s.db")
    await store.open()
    manager = IncidentManager(config, store, clock)
    assert await manager.handle_slo_signals([_signal("firing", clock.now(), severity="ticket")]) == []
    cpu = AlertSignal(slo="db-cpu", severity="ticket", state="firing", burn_rates={}, at=0, summary="")
    moved = await manager.handle_slo_signals([cpu])
    assert [t.key for t in moved] == ["alert:db-cpu-burn"]
    assert await manager.open_slo_incidents() == [("db-cpu", "ticket")]
    # A latency breach pages (issue 10: the seed's P95 limits must page); its ticket signal reaches no alert.
    def latency(severity: Severity) -> AlertSignal:
        return AlertSignal(
            slo="api-latency", severity=severity, state="firing", burn_rates={}, at=0, summary=""
        )

    assert await manager.handle_slo_signals([latency("ticket")]) == []
    assert [t.key for t in await manager.handle_slo_signals([latency("page")])] == ["alert:api-latency-burn"]
    await store.close()


def _result(outcome: Outcome, at: float, reason: str = "") -> ProbeResult:
    return ProbeResult(
        probe="liveness",
        kind="http",
        target="t",
        outcome=outcome,
        latency_s=0.01,
        started_at=at,
        reason=reason,
    )


async def test_probe_alert_needs_consecutive_failures_for_its_duration(
    tmp_path: Path, config: WatchdogConfig
) -> None:
    clock = FakeClock()
    store = SqliteStore(tmp_path / "s.db")
    await store.open()
    manager = IncidentManager(config, store, clock)  # app-down: for 1m, min_failures 3
    start = clock.now()
    await store.record([_result(Outcome.OK, start)])
    for i in range(1, 4):
        await store.record([_result(Outcome.FAILED, start + 15 * i, "connection refused")])
    clock.set(start + 50)
    assert await manager.evaluate_probe_alerts() == [], "3 failures but only 35 s of them"
    clock.set(start + 80)
    moved = await manager.evaluate_probe_alerts()
    assert [(t.key, t.state) for t in moved] == [("alert:app-down", "firing")]
    incident = await store.get_incident("alert:app-down")
    assert incident is not None
    assert "(3 in a row); the application itself is down: connection refused" in incident.data["summary"]
    await store.record([_result(Outcome.OK, start + 90)])
    clock.set(start + 95)
    assert [(t.state) for t in await manager.evaluate_probe_alerts()] == ["resolved"]
    await store.close()


class _BrokenChannel:
    name = "slack"

    def __init__(self, permanent: bool) -> None:
        self.permanent = permanent
        self.calls = 0

    async def send(self, page: Page) -> None:
        self.calls += 1
        raise NotifyError("channel_not_found" if self.permanent else "HTTP 500", permanent=self.permanent)


async def _enqueue_one(store: SqliteStore, clock: FakeClock) -> None:
    payload = {
        "key": "alert:x",
        "title": "x",
        "severity": "page",
        "state": "firing",
        "summary": "s",
        "targets": [{"type": "slack", "channel": "#oncall"}],
    }
    assert await store.enqueue("notify", payload, "alert:x:v1:L1", clock.now())


async def test_permanent_error_falls_back_to_the_next_channel(tmp_path: Path) -> None:
    clock = FakeClock()
    store = SqliteStore(tmp_path / "s.db")
    await store.open()
    await _enqueue_one(store, clock)
    broken, log = _BrokenChannel(permanent=True), LogNotifier()
    dispatcher = Dispatcher(store, {"slack": broken, "log": log}, clock, "w")
    assert await dispatcher.run_once() == 1
    assert broken.calls == 1 and [p.key for p in log.sent] == ["alert:x"]
    await store.close()


async def test_transient_error_retries_later_with_backoff(tmp_path: Path) -> None:
    clock = FakeClock()
    store = SqliteStore(tmp_path / "s.db")
    await store.open()
    await _enqueue_one(store, clock)
    broken, log = _BrokenChannel(permanent=False), LogNotifier()
    dispatcher = Dispatcher(store, {"slack": broken, "log": log}, clock, "w")
    assert await dispatcher.run_once() == 0
    assert not log.sent
    assert await dispatcher.run_once() == 0 and broken.calls == 1, "not retried before its backoff"
    clock.advance(3)
    await dispatcher.run_once()
    assert broken.calls == 2
    await store.close()

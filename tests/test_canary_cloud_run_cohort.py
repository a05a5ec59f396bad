"""Canary cohorts from Cloud Run's real traffic per revision (issue 12 part 1): the real canary guard on a
real store and an injected clock, its cohorts read through the real google-cloud-monitoring client from the
loopback MetricService (``gcp_fake_monitoring``). A revision answering 5xx is rolled back with the evidence, a
healthy one continues; the counts cover the whole minutes from the stage's start to the newest complete
minute (Cloud Monitoring runs ~3.5 min behind) and that delay is never taken for silence; a restarted guard
carries on from the store; config errors are refused."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc  # type: ignore[import-untyped]
import pytest
from gcp_fake_monitoring import FakeMonitoring, add_revision_traffic
from pydantic import ValidationError

from watchdog.canary import cohorts
from watchdog.canary.cohorts import RUN_RECORD_KIND, MetricCohorts
from watchdog.canary.guard import CanaryGuard, Decision
from watchdog.config.gcp import GoogleCloud
from watchdog.config.loader import ConfigError, load_config
from watchdog.config.rollouts import Rollout
from watchdog.core.clock import FakeClock
from watchdog.flags.flagd_file import write_initial
from watchdog.flags.memory import MemoryFlagBackend
from watchdog.incidents.manager import IncidentManager
from watchdog.runtime.wiring import build_guards
from watchdog.sources.cloud_monitoring import COMPLETE_AFTER_S
from watchdog.store.memory import MemoryStore

START = 1_767_225_600.0  # 2026-01-01 00:00:00 UTC, a minute boundary
BEGIN = START + 20.0  # the stage begins 20 s into a minute
PROJECT = "demo-project"
SERVICE = f"projects/{PROJECT}/locations/asia-east1/services/ai-square"
CANARY, STABLE = "ai-square-00042-def", "ai-square-00041-abc"
RUNBOOKS = ("canary-rolled-back", "canary-rollback-failed", "canary-held")
ESCALATION = (
    "escalation:\n  - name: default\n    levels:\n"
    "      - {level: L1, who: dev team, notify: [{type: slack, channel: '#l1'}], ack_within: 30m}\n"
    "      - {level: L2, who: lead, notify: [{type: slack, channel: '#l2'}]}\n"
)


def minute(k: int) -> float:
    """The end of the k-th minute after START (minute 1 is the first whole minute of the stage)."""
    return START + 60.0 * k


def traffic(
    fake: FakeMonitoring,
    revision: str,
    ends: Iterable[float],
    requests: int,
    errors: int,
    service: str = "ai-square",
) -> None:
    add_revision_traffic(fake, revision, ends, requests, errors, project=PROJECT, service=service)


def _rollout(**overrides: Any) -> Rollout:
    spec: dict[str, Any] = {
        "name": "content-db",
        "flag": {"backend": "flagd_file", "path": "/unused/flags.json"},
        "canary": {"cloud_run": {"revision": CANARY}},
        "baseline": {"cloud_run": {"service": SERVICE, "revision": STABLE}},
    }
    spec.update(overrides)
    return Rollout.model_validate(spec)


def _config_dir(root: Path, settings: str = "", rollouts: str = "") -> Path:
    for folder in ("probes", "alerts", "runbooks"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    (root / "probes" / "p.yaml").write_text(
        "probes:\n  - {name: content-db, kind: http, url: 'http://127.0.0.1:9/'}\n"
    )
    (root / "alerts" / "e.yaml").write_text(ESCALATION + rollouts)
    (root / "watchdog.yaml").write_text(settings)
    for alert in RUNBOOKS:
        (root / "runbooks" / f"{alert}.md").write_text(f"# {alert}\n")
    return root


@pytest.fixture(scope="module")
def server() -> Iterator[FakeMonitoring]:
    fake = FakeMonitoring(project=PROJECT)
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def fake(server: FakeMonitoring) -> FakeMonitoring:
    server.reset()
    return server


def _settings(fake: FakeMonitoring) -> GoogleCloud:
    return GoogleCloud(project=PROJECT, cloud_run_service=SERVICE, endpoints={"monitoring": fake.endpoint})


@dataclass
class Rig:
    clock: FakeClock
    store: MemoryStore
    flag: MemoryFlagBackend
    manager: IncidentManager
    fake: FakeMonitoring
    guard: CanaryGuard

    async def check_at(self, now: float) -> Decision:
        """A check at ``now``, with Cloud Monitoring showing only points at least 3 min old (its ingestion
        delay)."""
        self.clock.set(now)
        self.fake.visible_until = now - 180.0
        return await self.guard.check()

    def reads(self, metric: str = "request_count") -> list[Any]:
        return [r for r in self.fake.calls("ListTimeSeries") if f"run.googleapis.com/{metric}" in r.filter]

    def restart(self) -> None:
        """A restarted daemon: a new guard and reader on the same store."""
        self.guard = _guard(self.flag, self.store, self.manager, self.clock, self.fake)


def _guard(
    flag: MemoryFlagBackend,
    store: MemoryStore,
    manager: IncidentManager,
    clock: FakeClock,
    fake: FakeMonitoring,
) -> CanaryGuard:
    guard = CanaryGuard(_rollout(), flag, store, manager, clock)
    guard.observe_slos(())
    cohorts.use(guard, MetricCohorts(google_cloud=_settings(fake)))
    return guard


@pytest.fixture
async def rig(tmp_path: Path, fake: FakeMonitoring) -> AsyncIterator[Rig]:
    clock = FakeClock(BEGIN)
    store = MemoryStore()
    await store.open()
    flag = MemoryFlagBackend(5.0, clock=clock, updated_by="release-engineer", reason="canary start")
    manager = IncidentManager(load_config(_config_dir(tmp_path / "c")), store, clock)
    rig = Rig(clock, store, flag, manager, fake, _guard(flag, store, manager, clock, fake))
    try:
        yield rig
    finally:
        await cohorts.reader_of(rig.guard).aclose()


def _interval(req: Any) -> tuple[float, float]:
    i = req.interval
    return (i.start_time.seconds + i.start_time.nanos / 1e9, i.end_time.seconds + i.end_time.nanos / 1e9)


def _complete_until(now: float) -> float:
    return math.floor((now - COMPLETE_AFTER_S) / 60) * 60


# -- the guard on Cloud Run traffic ----------------------------------------------------------------------


async def test_a_revision_answering_5xx_is_rolled_back_with_the_evidence(rig: Rig) -> None:
    ends = [minute(k) for k in range(0, 12)]
    traffic(rig.fake, CANARY, ends, 50, 5)
    traffic(rig.fake, STABLE, ends, 950, 1)
    traffic(rig.fake, CANARY, ends, 40, 0, service="billing")  # another service's revision of that name
    first = await rig.check_at(BEGIN)
    assert first.action == "continue" and first.canary.events == 0
    assert rig.reads() == [], "no minute of the stage is complete yet: nothing to read"
    # 00:02:00 + 210 s: the stage's first whole minute (00:01-00:02) is complete; 00:02-00:03 is not.
    now = minute(2) + COMPLETE_AFTER_S + 5
    decision = await rig.check_at(now)
    assert decision.action == "rolled_back", decision
    assert (await rig.flag.get()).db_percent == 0.0
    canary_read = next(r for r in rig.reads() if CANARY in r.filter)
    assert canary_read.name == f"projects/{PROJECT}"
    assert canary_read.filter == (
        'metric.type="run.googleapis.com/request_count" AND resource.type="cloud_run_revision" '
        'AND resource.labels.service_name="ai-square" AND resource.labels.location="asia-east1" '
        f'AND resource.labels.revision_name="{CANARY}"'
    )
    assert _interval(canary_read) == (minute(1), minute(2))
    assert list(canary_read.aggregation.group_by_fields) == ["metric.label.response_code_class"]
    assert canary_read.aggregation.alignment_period.seconds == 60
    assert any(f'revision_name="{CANARY}"' in r.filter for r in rig.reads("request_latencies"))
    assert any(f'revision_name="{STABLE}"' in r.filter for r in rig.reads())
    # The evidence: 5 of the revision's 50 requests answered 5xx, counted from Cloud Monitoring up to the
    # newest complete minute (the other service's revision of the same name is not counted).
    assert "canary errors: 5 of 50 " in decision.evidence[0]
    assert any(
        f"Cloud Run revision {CANARY} (requests from 2026-01-01 00:01:00 UTC to 2026-01-01 00:02:00 UTC" in e
        and "3.5 min" in e
        for e in decision.evidence
    ), decision.evidence
    reason = rig.flag.history[-1].reason
    assert "5 of 50" in reason and CANARY in reason
    record = await rig.store.get_incident("canary:content-db")
    assert record is not None and record.data["cause"] == "errors"


async def test_a_healthy_revision_continues_reads_each_minute_once_and_the_delay_is_not_silence(
    rig: Rig,
) -> None:
    ends = [minute(k) for k in range(0, 9)]  # the canary serves until 00:08, then nothing
    traffic(rig.fake, CANARY, ends, 50, 0)
    traffic(rig.fake, STABLE, [minute(k) for k in range(0, 30)], 950, 1)
    assert (await rig.check_at(BEGIN)).action == "continue"
    decisions: list[tuple[float, Decision]] = []
    now = BEGIN
    while now < minute(8) + COMPLETE_AFTER_S + 30:  # every 5 s until 00:08 is complete, and a little more
        now += 5.0
        decisions.append((now, await rig.check_at(now)))
    assert all(d.action == "continue" for _, d in decisions), [d.reason for _, d in decisions]
    last_now, last = decisions[-1]
    # Minutes 00:01-00:08 counted: 7 minutes of 50, none failed, none slow.
    assert (last.canary.events, last.canary.failed, last.canary.slow) == (350, 0, 0)
    assert last.canary.as_of == _complete_until(last_now) == minute(8)
    assert last.canary.last_at == minute(8)
    assert last_now - last.canary.last_at >= 210 > _rollout().no_data_after, "3.5 min behind, not silent"
    assert last.reason == "within limits so far"
    assert any("Cloud Run revision" in e for e in last.evidence)
    # One read per newly complete minute (00:02 … 00:08), each of exactly that minute.
    canary_reads = [r for r in rig.reads() if CANARY in r.filter]
    assert [_interval(r) for r in canary_reads] == [(minute(k - 1), minute(k)) for k in range(2, 9)]
    assert len([r for r in rig.reads("request_latencies") if CANARY in r.filter]) == 7
    saved = await rig.store.get_record(RUN_RECORD_KIND, "content-db:canary")
    assert saved is not None and (saved["counted_to"], saved["requests"]) == (minute(8), 350)
    # The revision stops serving after 00:08: silence is two complete minutes without its traffic.
    quiet = await rig.check_at(minute(9) + COMPLETE_AFTER_S + 5)
    assert quiet.action == "continue", quiet
    held = await rig.check_at(minute(10) + COMPLETE_AFTER_S + 5)
    assert held.action == "hold" and "no new canary results since 2026-01-01 00:08:00 UTC" in held.reason
    assert rig.flag.history == []


async def test_the_count_ends_at_complete_data_and_a_restart_carries_on(rig: Rig) -> None:
    # The minute the stage began in (00:00-00:01) failed everything, before the canary's stage: not counted.
    traffic(rig.fake, CANARY, [minute(0), minute(1)], 30, 30)
    traffic(rig.fake, CANARY, [minute(2), minute(3)], 50, 0)
    # Minutes 00:03-00:05 fail: present in the fake already, but not complete at the first look.
    traffic(rig.fake, CANARY, [minute(4), minute(5)], 50, 50)
    traffic(rig.fake, STABLE, [minute(k) for k in range(0, 8)], 950, 0)
    assert (await rig.check_at(BEGIN)).action == "continue"
    now = START + 400.0  # 00:06:40: complete up to 00:03:00
    rig.clock.set(now)
    rig.fake.visible_until = None  # even what Cloud Monitoring shows of unfinished minutes is not read
    decision = await rig.guard.check()
    assert decision.action == "continue", decision
    read = next(r for r in rig.reads() if CANARY in r.filter)
    assert _interval(read) == (math.ceil(BEGIN / 60) * 60, _complete_until(now)) == (minute(1), minute(3))
    assert (decision.canary.events, decision.canary.failed) == (100, 0), "00:01-00:03 only"
    assert decision.canary.as_of == minute(3)
    await cohorts.reader_of(rig.guard).aclose()

    # A restarted daemon: a new guard and reader, the same store; it reads on from 00:03 only.
    rig.restart()
    rig.fake.reset()
    traffic(rig.fake, CANARY, [minute(4)], 50, 50)
    traffic(rig.fake, STABLE, [minute(4)], 950, 0)
    after = await rig.check_at(minute(4) + COMPLETE_AFTER_S + 1)
    (read,) = [r for r in rig.reads() if CANARY in r.filter]
    assert _interval(read) == (minute(3), minute(4))
    assert after.action == "rolled_back", after
    assert "canary errors: 50 of 150 " in after.evidence[0]


async def test_a_failing_cloud_monitoring_counts_nothing_and_holds_on_the_complete_data_clock(
    rig: Rig,
) -> None:
    rig.fake.fail("ListTimeSeries", grpc.StatusCode.PERMISSION_DENIED, "monitoring.timeSeries.list", 1000)
    assert (await rig.check_at(BEGIN)).action == "continue"
    for now in range(int(minute(2) + COMPLETE_AFTER_S), int(minute(3) + COMPLETE_AFTER_S), 1):
        decision = await rig.check_at(float(now))
        assert decision.action == "continue", decision
    # A failed read is retried 10 s later, not every check (the guard checks every second).
    assert len(rig.fake.calls("ListTimeSeries")) <= 2 * 10
    held = await rig.check_at(minute(3) + 20 + COMPLETE_AFTER_S)  # 2 min of complete data since the start
    assert held.action == "hold" and "no data: 0 canary results" in held.reason, held
    assert "until the canary has traffic" in held.reason and CANARY in held.reason


# -- config --------------------------------------------------------------------------------------------


def test_config_errors() -> None:
    run = {"cloud_run": {"revision": CANARY}}
    for canary, message in (
        ({"probe": "content-db", **run}, "exactly one of probe, prometheus or cloud_run"),
        (
            {"prometheus": {"url": "http://p:9090", "requests": "r", "errors": "e"}, **run},
            "exactly one of probe, prometheus or cloud_run",
        ),
        ({**run, "match": {"cohort": "db"}}, "match selects a probe's series"),
        (
            {"cloud_run": {"service": "ai-square", "revision": CANARY}},
            "service must be projects/PROJECT/locations/REGION/services/NAME",
        ),
        (
            {"cloud_run": {"service": "projects/p/services/ai-square", "revision": CANARY}},
            "service must be projects/PROJECT/locations/REGION/services/NAME",
        ),
        ({"cloud_run": {"revision": "Ai_Square"}}, "not a Cloud Run revision name"),
        ({"cloud_run": {}}, "revision"),
    ):
        with pytest.raises(ValidationError, match=message):
            _rollout(canary=canary)
    with pytest.raises(ValidationError, match="no_data_after must be at least 1m"):
        _rollout(no_data_after="30s")
    ok = _rollout(canary={"cloud_run": {"service": SERVICE, "revision": CANARY}}, limits={})
    assert ok.canary.cloud_run is not None and ok.canary.cloud_run.revision == CANARY
    assert ok.limits.latency is not None, "the latency limit needs nothing more: request_latencies"


async def test_the_daemon_wiring_reads_the_configured_service_and_endpoint(
    tmp_path: Path, fake: FakeMonitoring
) -> None:
    flag_path = tmp_path / "flags.json"
    write_initial(flag_path, 5.0, updated_by="release-engineer", reason="canary start", now=BEGIN)
    rollouts = (
        "rollouts:\n  - name: content-db\n"
        f"    flag: {{backend: flagd_file, path: '{flag_path}'}}\n"
        f"    canary: {{cloud_run: {{revision: {CANARY}}}}}\n"
    )
    settings = (
        f"state: {tmp_path / 'state.db'}\n"
        f"google_cloud:\n  project: {PROJECT}\n"
        f"  cloud_run_service: {SERVICE}\n  endpoints: {{monitoring: '{fake.endpoint}'}}\n"
    )
    root = _config_dir(tmp_path / "c", settings, rollouts)
    config = load_config(root)
    store = MemoryStore()
    await store.open()
    clock = FakeClock(BEGIN)
    (guard,) = build_guards(config, store, IncidentManager(config, store, clock), clock, {})
    traffic(fake, CANARY, [minute(k) for k in range(0, 4)], 50, 0)
    try:
        assert (await guard.check()).action == "continue"
        clock.set(minute(3) + COMPLETE_AFTER_S)
        decision = await guard.check()
        assert decision.canary.events == 100, decision
        assert all(SERVICE.rsplit("/", 1)[1] in r.filter for r in fake.calls("ListTimeSeries"))
    finally:
        await cohorts.reader_of(guard).aclose()
    # Without a service here or in google_cloud, the config is refused.
    (root / "watchdog.yaml").write_text(f"state: {tmp_path / 'state.db'}\n")
    with pytest.raises(ConfigError, match=r"rollouts\[0\].canary.cloud_run.service: no Cloud Run service"):
        load_config(root)

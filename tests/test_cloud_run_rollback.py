"""The Cloud Run traffic rollback (the seed's rollback step 2) with the real google-cloud-run async clients
against the Cloud Run Admin API v2 on loopback (tests/gcp_fake_run.py), driven by the canary guard with the
real flagd-file flag backend, a real store and an injected clock: after a verified flag rollback that did not
bring the canary's error rate back within ``after``, 100 % of the traffic goes to the previous serving
revision (the request sent, the long-running operation, the read-back), audited, paged, held until released;
a flag rollback that worked rolls nothing back; PERMISSION_DENIED pages critical at once without retrying;
UNAVAILABLE is retried; a concurrent change (ABORTED) is retried on later checks and pages once; the split
case and ``watchdog traffic``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc  # type: ignore[import-untyped]
import pytest
from click.testing import CliRunner
from gcp_fake_run import LATEST, REVISION, SERVICE, FakeCloudRun
from google.cloud.run_v2 import TrafficTarget

from watchdog.canary.cloud_run import (
    AUDIT_RECORD,
    FAILED,
    FAILED_AFTER,
    FAILED_ALERT,
    RECOVERED,
    RELEASED,
    ROLLED_BACK,
    ROLLED_BACK_ALERT,
    RevisionInfo,
    ServiceView,
    TrafficError,
    TrafficRollback,
    build_traffic_rollback,
    choose_previous,
    traffic_audit,
)
from watchdog.canary.guard import CanaryGuard
from watchdog.cli.main import main
from watchdog.config.loader import ConfigError, WatchdogConfig, load_config
from watchdog.config.rollouts import Rollout
from watchdog.core.clock import FakeClock
from watchdog.core.results import Outcome, ProbeResult
from watchdog.flags.flagd_file import FlagdFileBackend, write_initial
from watchdog.incidents.manager import IncidentManager
from watchdog.notify.dispatch import Dispatcher
from watchdog.notify.fake import RecordingNotifier
from watchdog.store.memory import MemoryStore

START = 1_767_225_600.0
OLD, NEW, NEWEST = "ai-square-00001-abc", "ai-square-00002-def", "ai-square-00003-ghi"
ESCALATION = (
    "escalation:\n  - name: default\n    levels:\n"
    "      - {level: L1, who: dev team, notify: [{type: slack, channel: '#l1'}], ack_within: 30m}\n"
    "      - {level: L2, who: lead, notify: [{type: slack, channel: '#l2'}], ack_within: 2h}\n"
    "      - {level: L3, who: CTO, notify: [{type: slack, channel: '#l3'}]}\n"
)
RUNBOOKS = (
    "canary-rolled-back",
    "canary-rollback-failed",
    "canary-held",
    "cloud-run-rolled-back",
    "cloud-run-rollback-failed",
)
PROBES = (
    "probes:\n  - {name: content-db, kind: http, url: 'http://127.0.0.1:9/', labels: {cohort: db}}\n"
    "  - {name: content-yaml, kind: http, url: 'http://127.0.0.1:9/', labels: {cohort: yaml}}\n"
)


def _config_dir(root: Path, settings: str = "", rollouts: str = "") -> Path:
    for folder in ("probes", "alerts", "runbooks"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    (root / "probes" / "p.yaml").write_text(PROBES)
    (root / "alerts" / "e.yaml").write_text(ESCALATION + rollouts)
    (root / "watchdog.yaml").write_text(settings)
    for alert in RUNBOOKS:
        (root / "runbooks" / f"{alert}.md").write_text(f"# {alert}\n")
    return root


def _rollout(flag_path: Path, **cloud_run: Any) -> Rollout:
    return Rollout.model_validate(
        {
            "name": "content-db",
            "flag": {"backend": "flagd_file", "path": str(flag_path)},
            "canary": {"probe": "content-db", "match": {"cohort": "db"}},
            "baseline": {"probe": "content-yaml", "match": {"cohort": "yaml"}},
            "cloud_run": {"service": SERVICE, "after": "2m", **cloud_run},
        }
    )


@pytest.fixture
def run() -> Iterator[FakeCloudRun]:
    """The service as a deploy leaves it: the new revision (30 min younger) serves 100 % as LATEST."""
    with FakeCloudRun() as fake:
        fake.add_revision(OLD, 0)
        fake.add_revision(NEW, 30)
        fake.set_traffic([TrafficTarget(type_=LATEST, percent=100)])
        yield fake


@dataclass
class Rig:
    clock: FakeClock
    store: MemoryStore
    flag: FlagdFileBackend
    guard: CanaryGuard
    traffic: TrafficRollback
    slack: RecordingNotifier
    dispatcher: Dispatcher

    async def results(self, outcomes: list[Outcome], cohort: str = "db", every_s: float = 1.0) -> None:
        batch = []
        for outcome in outcomes:
            self.clock.advance(every_s)
            batch.append(
                ProbeResult(
                    probe=f"content-{cohort}",
                    kind="http",
                    target="t",
                    outcome=outcome,
                    latency_s=0.02,
                    started_at=self.clock.now() - 0.02,
                    labels={"cohort": cohort},
                    reason="" if outcome is Outcome.OK else "status 500",
                )
            )
        await self.store.record(batch)

    async def deliver(self) -> list[Any]:
        while await self.dispatcher.run_once(limit=50):
            continue  # until a pass delivers nothing
        return list(self.slack.sent)

    async def flag_rolled_back(self) -> None:
        """A hard fault on the database path: the guard flips the flag to YAML and verifies it."""
        assert (await self.guard.check()).action == "continue"
        await self.results([Outcome.FAILED] * 5)
        assert (await self.guard.check()).action == "rolled_back"
        assert (await self.flag.get()).db_percent == 0.0


@pytest.fixture
async def rig(tmp_path: Path, run: FakeCloudRun) -> AsyncIterator[Rig]:
    clock = FakeClock(START)
    store = MemoryStore()
    await store.open()
    flag_path = tmp_path / "flags.json"
    write_initial(flag_path, 5.0, updated_by="release-engineer", reason="canary start", now=START)
    rollout = _rollout(flag_path)
    manager = IncidentManager(load_config(_config_dir(tmp_path / "c")), store, clock)
    traffic = build_traffic_rollback(rollout, "", {"run": run.endpoint}, store, manager, clock)
    assert traffic is not None
    flag = FlagdFileBackend(flag_path, clock=clock)
    guard = CanaryGuard(rollout, flag, store, manager, clock, traffic=traffic)
    slack = RecordingNotifier("slack")
    dispatcher = Dispatcher(store, {"slack": slack, "log": RecordingNotifier("log")}, clock, "w")
    yield Rig(clock, store, flag, guard, traffic, slack, dispatcher)
    await traffic.admin.close()
    await store.close()


async def test_a_flag_rollback_that_did_not_help_rolls_traffic_back_verified_audited_paged_held(
    rig: Rig, run: FakeCloudRun
) -> None:
    await rig.flag_rolled_back()
    armed = await rig.guard.check()
    assert armed.action == "rolled_back" and "armed" in armed.reason, armed
    rig.clock.advance(60)
    await rig.results([Outcome.FAILED] * 10)  # within `after`: the flag is still taking effect
    assert "armed" in (await rig.guard.check()).reason
    assert run.requests == [], "nothing asked of Cloud Run before `after`"
    rig.clock.advance(60)
    await rig.results([Outcome.FAILED] * 3)  # past `after`: still failing
    decision = await rig.guard.check()
    assert f"Cloud Run traffic rolled back to revision {OLD}" in decision.reason, decision

    (update,) = run.calls("UpdateService")
    sent = update.service
    assert [(t.type_, t.revision, t.percent) for t in sent.traffic] == [(REVISION, OLD, 100)]
    assert sent.etag == "etag-1", "sent with the etag read: a concurrent change would be ABORTED"
    assert sent.template.service_account.startswith("ai-square@"), "the whole service, template kept"
    assert run.calls("GetOperation"), "the long-running operation was awaited"
    methods = [m for m, _ in run.requests]
    assert methods[-1] == "GetService" and methods.index("UpdateService") < len(methods) - 1, "read back"
    assert run.served() == {OLD: 100}

    (audit,) = await traffic_audit(rig.store, "content-db")
    assert (audit["action"], audit["from"], audit["to"], audit["actor"], audit["verified"]) == (
        "rollback",
        f"{NEW} 100 %",
        f"{OLD} 100 %",
        "watchdog",
        True,
    )
    assert "did not bring the error rate back" in audit["reason"] and "3 of 3" in audit["evidence"][0]
    assert audit["at"] == rig.clock.now()
    pages = [p for p in await rig.deliver() if p.title == ROLLED_BACK_ALERT]
    assert [p.channel for p in pages] == ["#l1"]
    assert f"traffic rolled back to revision {OLD}" in pages[0].summary

    # Held: more failures, more checks, nothing more asked of Cloud Run until a person releases it.
    calls = len(run.requests)
    await rig.results([Outcome.FAILED] * 20)
    held = await rig.guard.check()
    assert "held (rolled_back) until `watchdog traffic release`" in held.reason
    assert len(run.requests) == calls
    await rig.guard.release("ana")  # the flag's rollout back to the guard: the traffic stays held
    record = await rig.traffic.record()
    assert record is not None and record.state == ROLLED_BACK
    assert "released by cli:ana" in await rig.traffic.release("cli:ana")
    record = await rig.traffic.record()
    assert record is not None and record.state == RELEASED
    actions = [a["action"] for a in await traffic_audit(rig.store, "content-db")]
    assert actions == ["rollback", "release"]
    assert len(run.calls("UpdateService")) == 1


async def test_a_flag_rollback_that_worked_rolls_nothing_back(rig: Rig, run: FakeCloudRun) -> None:
    await rig.flag_rolled_back()
    await rig.guard.check()
    rig.clock.advance(120)
    await rig.results([Outcome.OK] * 12_000, every_s=0.01)
    decision = await rig.guard.check()
    assert "not rolled back: the flag rollback brought the error rate back" in decision.reason, decision
    record = await rig.traffic.record()
    assert record is not None and record.state == RECOVERED
    await rig.results([Outcome.FAILED] * 5)
    assert "not rolled back" in (await rig.guard.check()).reason, "judged once per flag rollback"
    assert run.requests == []


async def test_permission_denied_pages_critical_at_once_and_does_not_retry(
    rig: Rig, run: FakeCloudRun
) -> None:
    run.script["UpdateService"] = [grpc.StatusCode.PERMISSION_DENIED]
    await rig.flag_rolled_back()
    await rig.guard.check()
    rig.clock.advance(121)
    await rig.results([Outcome.FAILED] * 3)
    decision = await rig.guard.check()
    assert "PERMISSION_DENIED" in decision.reason, decision
    record = await rig.traffic.record()
    assert record is not None and record.state == FAILED
    pages = [p for p in await rig.deliver() if p.title == FAILED_ALERT]
    assert sorted(p.channel for p in pages) == ["#l1", "#l3"], "critical: L1 and L3 at once"
    assert "will not work by retrying" in pages[0].summary
    for _ in range(5):
        rig.clock.advance(60)
        await rig.guard.check()
    assert len(run.calls("UpdateService")) == 1, "no retry storm"
    assert run.served() == {NEW: 100}


async def test_unavailable_is_retried_within_the_attempt(rig: Rig, run: FakeCloudRun) -> None:
    run.script["GetService"] = [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAVAILABLE]
    run.script["UpdateService"] = [grpc.StatusCode.UNAVAILABLE]
    await rig.flag_rolled_back()
    await rig.guard.check()
    rig.clock.advance(121)
    await rig.results([Outcome.FAILED] * 3)
    decision = await rig.guard.check()
    assert f"rolled back to revision {OLD}" in decision.reason, decision
    assert rig.traffic.admin.retries == 3
    assert len(run.calls("UpdateService")) == 2 and run.served() == {OLD: 100}


async def test_a_concurrent_change_is_retried_on_later_checks_and_pages_once(
    rig: Rig, run: FakeCloudRun
) -> None:
    run.script["UpdateService"] = [grpc.StatusCode.ABORTED] * FAILED_AFTER
    await rig.flag_rolled_back()
    await rig.guard.check()
    rig.clock.advance(121)
    await rig.results([Outcome.FAILED] * 3)
    for attempt in range(1, FAILED_AFTER + 1):
        decision = await rig.guard.check()
        assert "ABORTED" in decision.reason and f"attempt {attempt}" in decision.reason, decision
        assert "next attempt" in (await rig.guard.check()).reason, "backoff between attempts"
        rig.clock.advance(60)
    pages = [p for p in await rig.deliver() if p.title == FAILED_ALERT]
    assert sorted(p.channel for p in pages) == ["#l1", "#l3"], "after FAILED_AFTER attempts, once"
    decision = await rig.guard.check()
    assert f"rolled back to revision {OLD}" in decision.reason, decision
    failed = await rig.guard.store.get_incident(f"{rig.traffic.key}:{FAILED_ALERT}")
    assert failed is not None and failed.state == "resolved"


async def test_split_traffic_goes_to_the_older_serving_revision_and_keeps_tags(
    rig: Rig, run: FakeCloudRun
) -> None:
    run.add_revision(NEWEST, 60)
    run.set_traffic(
        [
            TrafficTarget(type_=REVISION, revision=NEW, percent=90),
            TrafficTarget(type_=REVISION, revision=NEWEST, percent=10, tag="canary"),
        ]
    )
    said = await rig.traffic.rollback_by_hand("cli:ana", "bad release")
    assert f"rolled back to revision {NEW} by cli:ana" in said
    (update,) = run.calls("UpdateService")
    assert [(t.revision, t.percent, t.tag) for t in update.service.traffic] == [
        (NEW, 100, ""),
        (NEWEST, 0, "canary"),
    ], "the split's older revision, not the revision before it; the canary's tag stays reachable"
    assert run.served() == {NEW: 100}
    assert len(run.calls("ListRevisions")) == 2, "three revisions, two per page: the pager follows"
    record = await rig.traffic.record()
    assert record is not None and record.state == ROLLED_BACK, "held after a rollback by hand too"
    (audit,) = await rig.store.list_records(AUDIT_RECORD)
    assert audit[1]["from"] == f"{NEW} 90 %, {NEWEST} 10 %" and audit[1]["actor"] == "cli:ana"


def test_which_revision_is_previous() -> None:
    def view(serving: dict[str, int], *revisions: tuple[str, float, bool]) -> ServiceView:
        return ServiceView(SERVICE, "e", serving, "", [RevisionInfo(*r) for r in revisions])

    revs = [("r1", 1.0, True), ("r2", 2.0, False), ("r3", 3.0, True), ("r4", 4.0, True)]
    assert choose_previous(view({"r4": 100}, *revs)) == ("r4", "r3")
    assert choose_previous(view({"r4": 100}, ("r1", 1.0, True), ("r3", 3.0, False), ("r4", 4.0, True))) == (
        "r4",
        "r1",
    ), "a revision that never became Ready never served"
    assert choose_previous(view({"r4": 10, "r1": 60, "r3": 30}, *revs)) == ("r4", "r1"), "largest share"
    assert choose_previous(view({"r4": 50, "r1": 25, "r3": 25}, *revs)) == ("r4", "r3"), "tie: the newer"
    with pytest.raises(TrafficError, match="nothing to roll back to") as caught:
        choose_previous(view({"r1": 100}, *revs))
    assert caught.value.permanent


def test_traffic_cli_and_config(tmp_path: Path, run: FakeCloudRun) -> None:
    flag_path = tmp_path / "flags.json"
    write_initial(flag_path, 0.0)
    rollout = (
        "rollouts:\n  - name: content-db\n"
        f"    flag: {{backend: flagd_file, path: '{flag_path}'}}\n"
        "    canary: {probe: content-db, match: {cohort: db}}\n"
        "    cloud_run: {after: 2m}\n"
    )
    settings = (
        f"state: {tmp_path / 'state.db'}\n"
        "google_cloud:\n  project: ai-square-prod\n"
        f"  cloud_run_service: {SERVICE}\n  endpoints: {{run: '{run.endpoint}'}}\n"
    )
    root = _config_dir(tmp_path / "c", settings, rollout)
    config: WatchdogConfig = load_config(root)
    assert config.rollouts[0].cloud_run is not None and config.rollouts[0].cloud_run.service == ""
    cli = CliRunner()
    status = cli.invoke(main, ["traffic", "status", "--config", str(root)])
    assert status.exit_code == 0, status.output
    assert f"serving: {NEW} 100 %" in status.output and f"sends 100 % to {OLD}" in status.output
    done = cli.invoke(main, ["traffic", "rollback", "--config", str(root), "--as", "ana", "--reason", "bad"])
    assert done.exit_code == 0 and f"rolled back to revision {OLD} by cli:ana" in done.output, done.output
    after = cli.invoke(main, ["traffic", "status", "--config", str(root)])
    assert "traffic rollback: rolled_back" in after.output and "by cli:ana: bad" in after.output
    released = cli.invoke(main, ["traffic", "release", "--config", str(root), "--as", "ana"])
    assert released.exit_code == 0 and "released by cli:ana" in released.output
    run.script["GetService"] = [grpc.StatusCode.PERMISSION_DENIED]
    denied = cli.invoke(main, ["traffic", "status", "--config", str(root)])
    assert denied.exit_code == 1 and "PERMISSION_DENIED" in denied.output

    (root / "watchdog.yaml").write_text(f"state: {tmp_path / 'state.db'}\n")
    with pytest.raises(ConfigError, match=r"rollouts\[0\].cloud_run.service: no Cloud Run service"):
        load_config(root)
    (root / "alerts" / "e.yaml").write_text(
        ESCALATION + rollout.replace("{after: 2m}", "{service: ai-square}")
    )
    with pytest.raises(ConfigError, match="service must be projects/PROJECT/locations/REGION/services/NAME"):
        load_config(root)

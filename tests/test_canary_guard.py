"""The canary guard on a real store with an injected clock: a hard fault flips the flag to YAML on the first
conclusive evidence (verified, audited, paged with the evidence), noise never does, a shared outage is not
the canary's fault, latency counts, no data holds, a person's change is respected, a failed flip pages
"rollback FAILED" (critical) and keeps retrying, two replicas flip once, staged promotion."""

from __future__ import annotations

import asyncio
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from watchdog.canary.guard import (
    AUDIT_RECORD,
    FAILED_AFTER,
    ROLLBACK_FAILED_ALERT,
    ROLLED_BACK_ALERT,
    CanaryGuard,
    audit_trail,
)
from watchdog.config.loader import WatchdogConfig, load_config
from watchdog.config.rollouts import Rollout
from watchdog.core.clock import FakeClock
from watchdog.core.results import Outcome, ProbeResult
from watchdog.flags.memory import MemoryFlagBackend
from watchdog.incidents.manager import IncidentManager
from watchdog.notify.dispatch import Dispatcher
from watchdog.notify.fake import RecordingNotifier
from watchdog.slo.engine import SloEngine
from watchdog.store.memory import MemoryStore

START = 1_767_225_600.0


def _config(root: Path, slos: str = "") -> WatchdogConfig:
    (root / "probes").mkdir(parents=True)
    if slos:
        (root / "slo").mkdir()
        (root / "slo" / "s.yaml").write_text(slos)
    (root / "alerts").mkdir()
    (root / "runbooks").mkdir()
    (root / "probes" / "p.yaml").write_text(
        "probes:\n  - {name: content-db, kind: http, url: 'http://127.0.0.1:9/', labels: {cohort: db}}\n"
        "  - {name: content-yaml, kind: http, url: 'http://127.0.0.1:9/', labels: {cohort: yaml}}\n"
    )
    (root / "alerts" / "e.yaml").write_text(
        "escalation:\n  - name: default\n    levels:\n"
        "      - {level: L1, who: dev team, notify: [{type: slack, channel: '#l1'}], ack_within: 30m}\n"
        "      - {level: L2, who: lead, notify: [{type: slack, channel: '#l2'}], ack_within: 2h}\n"
        "      - {level: L3, who: CTO, notify: [{type: slack, channel: '#l3'}]}\n"
    )
    for alert in (ROLLED_BACK_ALERT, ROLLBACK_FAILED_ALERT, "canary-held"):
        (root / "runbooks" / f"{alert}.md").write_text(f"# {alert}\n")
    return load_config(root)


def _rollout(**overrides: Any) -> Rollout:
    spec: dict[str, Any] = {
        "name": "content-db",
        "flag": {"backend": "flagd_file", "path": "/unused/flags.json"},
        "canary": {"probe": "content-db", "match": {"cohort": "db"}},
        "baseline": {"probe": "content-yaml", "match": {"cohort": "yaml"}},
    }
    spec.update(overrides)
    return Rollout.model_validate(spec)


@dataclass
class Rig:
    clock: FakeClock
    store: MemoryStore
    flag: MemoryFlagBackend
    guard: CanaryGuard
    manager: IncidentManager
    slack: RecordingNotifier
    dispatcher: Dispatcher

    async def results(
        self, probe: str, cohort: str, outcomes: list[Outcome], latency_s: float = 0.02, every_s: float = 1.0
    ) -> None:
        batch = []
        for outcome in outcomes:
            self.clock.advance(every_s)
            batch.append(
                ProbeResult(
                    probe=probe,
                    kind="http",
                    target="t",
                    outcome=outcome,
                    latency_s=latency_s,
                    started_at=self.clock.now() - latency_s,
                    labels={"cohort": cohort},
                    reason="" if outcome is Outcome.OK else "status 500",
                )
            )
        await self.store.record(batch)

    async def deliver(self) -> None:
        while await self.dispatcher.run_once(limit=50):
            continue  # until a pass delivers nothing


async def _rig(tmp_path: Path, rollout: Rollout, percent: float = 5.0, slos: str = "") -> Rig:
    clock = FakeClock(START)
    store = MemoryStore()
    await store.open()
    flag = MemoryFlagBackend(percent, clock=clock, updated_by="release-engineer", reason="canary start")
    manager = IncidentManager(_config(tmp_path / "c", slos), store, clock)
    slack = RecordingNotifier("slack")
    dispatcher = Dispatcher(store, {"slack": slack, "log": RecordingNotifier("log")}, clock, "w")
    guard = CanaryGuard(rollout, flag, store, manager, clock)
    if not slos:
        guard.observe_slos(())  # as the daemon does when no SLO is configured
    return Rig(clock, store, flag, guard, manager, slack, dispatcher)


async def test_a_hard_fault_flips_to_yaml_on_the_first_conclusive_evidence(tmp_path: Path) -> None:
    rig = await _rig(tmp_path, _rollout())
    assert (await rig.guard.check()).action == "continue"
    await rig.results("content-yaml", "yaml", [Outcome.OK] * 20)
    await rig.results("content-db", "db", [Outcome.OK] * 20)
    assert (await rig.guard.check()).action == "continue"
    await rig.results("content-db", "db", [Outcome.FAILED] * 2)
    first = await rig.guard.check()
    assert first.action == "continue", "2 failures in 22 is not yet conclusive at alpha 0.001"
    await rig.results("content-db", "db", [Outcome.FAILED] * 2)
    decision = await rig.guard.check()
    assert decision.action == "rolled_back", decision
    assert (await rig.flag.get()).db_percent == 0.0
    assert rig.flag.history[-1].updated_by == "sre-watchdog"
    # The restart begun before the failures judged them alone (the stage-long test held 4 of 24).
    assert re.search(r"canary errors in the last \d+ s: 4 of 4 ", rig.flag.history[-1].reason)
    (audit,) = await audit_trail(rig.store, "content-db")
    assert (audit["action"], audit["from_percent"], audit["to_percent"], audit["verified"]) == (
        "rollback",
        5.0,
        0.0,
        True,
    )
    await rig.deliver()
    (page,) = [p for p in rig.slack.sent if p.title == ROLLED_BACK_ALERT]
    assert page.channel == "#l1" and "Rolled back to YAML" in page.summary and "4 of 4 " in page.summary
    again = await rig.guard.check()
    assert again.action == "rolled_back" and len(rig.flag.history) == 1, "held: no second flip"


async def test_noise_under_the_limit_never_flips(tmp_path: Path) -> None:
    rig = await _rig(tmp_path, _rollout())
    rng = random.Random(11)
    for _ in range(40):  # 40 batches of 500: 20,000 canary results at 0.05 % errors
        outcomes = [Outcome.FAILED if rng.random() < 0.0005 else Outcome.OK for _ in range(500)]
        await rig.results("content-db", "db", outcomes, every_s=0.01)
        assert (await rig.guard.check()).action == "continue"
    assert rig.flag.history == []


async def test_a_shared_outage_is_not_the_canarys_fault(tmp_path: Path) -> None:
    rig = await _rig(tmp_path, _rollout())
    rng = random.Random(5)
    for _ in range(10):
        for probe, cohort in (("content-yaml", "yaml"), ("content-db", "db")):
            outcomes = [Outcome.FAILED if rng.random() < 0.05 else Outcome.OK for _ in range(50)]
            await rig.results(probe, cohort, outcomes, every_s=0.1)
        decision = await rig.guard.check()
        assert decision.action == "continue", decision
    assert any("the baseline fails" in e for e in decision.evidence)


async def test_slow_canary_is_rolled_back_for_latency(tmp_path: Path) -> None:
    rig = await _rig(tmp_path, _rollout())
    await rig.guard.check()  # the guard watches from its first look
    await rig.results("content-db", "db", [Outcome.OK] * 30, latency_s=0.02)
    # 12 of 42 over the limit: conclusive for the stage-long test at its α/3 (10 of 40 is not).
    await rig.results("content-db", "db", [Outcome.DEGRADED] * 12, latency_s=0.5)
    decision = await rig.guard.check()
    assert decision.action == "rolled_back", decision
    record = await rig.store.get_incident("canary:content-db")
    assert record is not None and record.data["cause"] == "latency"


async def test_no_data_holds_and_says_so(tmp_path: Path) -> None:
    rig = await _rig(tmp_path, _rollout(no_data_after="2m"))
    await rig.guard.check()
    rig.clock.advance(119)
    assert (await rig.guard.check()).action == "continue"
    rig.clock.advance(2)
    decision = await rig.guard.check()
    assert decision.action == "hold" and "no data" in decision.reason
    assert rig.flag.history == [], "no data is never read as healthy, nor as a fault"


async def test_a_person_changing_the_flag_is_respected(tmp_path: Path) -> None:
    rig = await _rig(tmp_path, _rollout())
    await rig.guard.check()
    await rig.flag.set(20.0, "going faster", "ana", "manual-1")
    decision = await rig.guard.check()
    assert decision.action == "held" and "by ana" in decision.reason
    await rig.results("content-db", "db", [Outcome.FAILED] * 10)
    assert (await rig.guard.check()).action == "held", "the guard does not fight people"
    assert (await rig.flag.get()).db_percent == 20.0
    released = await rig.guard.release("ana")
    assert released.action == "continue" and released.percent == 20.0
    await rig.results("content-db", "db", [Outcome.FAILED] * 3)
    assert (await rig.guard.check()).action == "rolled_back", "released: judged again, from the release on"


async def test_a_failed_flip_pages_critical_and_keeps_retrying(tmp_path: Path) -> None:
    rig = await _rig(tmp_path, _rollout())
    rig.flag.fail_writes = True
    await rig.guard.check()
    await rig.results("content-db", "db", [Outcome.FAILED] * 5)
    actions = []
    for _ in range(FAILED_AFTER + 2):
        actions.append((await rig.guard.check()).action)
        rig.clock.advance(60)
    assert set(actions) == {"retrying"}
    await rig.deliver()
    failed = [p for p in rig.slack.sent if p.title == ROLLBACK_FAILED_ALERT]
    assert sorted(p.channel for p in failed) == ["#l1", "#l3"], "critical: L1 and L3 at once, once"
    assert "Rollback FAILED" in failed[0].summary
    rig.flag.fail_writes = False
    assert (await rig.guard.check()).action == "rolled_back"
    incident = await rig.manager.get("rollout:content-db:failed")
    assert incident is not None and incident.state == "resolved"


async def test_two_replicas_flip_once(tmp_path: Path) -> None:
    rig = await _rig(tmp_path, _rollout())
    other = CanaryGuard(rig.guard.rollout, rig.flag, rig.store.sibling(), rig.manager, rig.clock)
    await rig.guard.check()
    await rig.results("content-db", "db", [Outcome.FAILED] * 5)
    decisions = await asyncio.gather(rig.guard.check(), other.check())
    assert len(rig.flag.history) == 1
    assert sorted(d.action for d in decisions) == ["rolled_back", "rolled_back"]
    assert len(await rig.store.list_records(AUDIT_RECORD)) == 1


async def test_staged_promotion_after_a_healthy_dwell(tmp_path: Path) -> None:
    rig = await _rig(tmp_path, _rollout(promote={"steps": [25, 50, 100], "dwell": "10m"}))
    await rig.guard.check()
    for _ in range(11):  # 550 s of clean results: the 10 min dwell is not over
        await rig.results("content-db", "db", [Outcome.OK] * 1000, every_s=0.05)
        assert (await rig.guard.check()).action == "continue"
    await rig.results("content-db", "db", [Outcome.OK] * 1100, every_s=0.05)
    decision = await rig.guard.check()
    assert decision.action == "promote" and decision.percent == 25.0, decision
    assert (await rig.flag.get()).db_percent == 25.0
    assert [a["action"] for a in await audit_trail(rig.store, "content-db")] == ["promote"]


async def test_promotion_waits_for_the_services_slos(tmp_path: Path) -> None:
    """The canary is clean, but the baseline (the service as a whole) burns its budget: a burn-rate alert
    firing, then too little budget left, each hold the promotion with the reason; healthy SLOs let it go."""
    slos = (
        "slos:\n  - name: site\n    objective: 99.9\n    window: {kind: rolling, length: 1d}\n"
        "    sli: {kind: availability, probe: content-yaml}\n"
    )
    rollout = _rollout(promote={"steps": [25], "dwell": "10m", "slos": ["site"], "min_budget_left": "50%"})
    rig = await _rig(tmp_path, rollout, slos=slos)
    config = _config(tmp_path / "c2", slos)
    engine = SloEngine(config.slos, rig.store, rig.clock)
    await rig.guard.check()
    await rig.results("content-db", "db", [Outcome.OK] * 12_000, every_s=0.01)
    await rig.results("content-yaml", "yaml", [Outcome.OK] * 100, every_s=0.01)
    await rig.results("content-yaml", "yaml", [Outcome.FAILED] * 40, every_s=0.01)
    await rig.results("content-db", "db", [Outcome.OK] * 50_000, every_s=0.01)  # past the dwell, clean
    decision = await rig.guard.check()
    assert decision.action == "hold" and decision.reason == "not promoting: no SLO evaluation yet", decision
    rig.guard.observe_slos((await engine.evaluate()).statuses)
    decision = await rig.guard.check()
    assert decision.action == "hold" and "SLO site has page alerts firing" in decision.reason, decision
    assert (await rig.flag.get()).db_percent == 5.0
    # Two days of healthy baseline: the alerts resolve and the 1-day window forgets the failures.
    await rig.results("content-yaml", "yaml", [Outcome.OK] * 2880, every_s=60.0)
    await engine.evaluate()  # the rules see the clear condition, and resolve once it has held
    await rig.results("content-db", "db", [Outcome.OK] * 600, every_s=0.5)
    rig.guard.observe_slos((await engine.evaluate()).statuses)
    decision = await rig.guard.check()
    assert decision.action == "promote" and decision.percent == 25.0, decision


async def test_promotion_needs_budget_left(tmp_path: Path) -> None:
    slos = (
        "slos:\n  - name: site\n    objective: 99.9\n    alerts: []\n"
        "    sli: {kind: availability, probe: content-yaml}\n"
    )
    rollout = _rollout(promote={"steps": [25], "dwell": "10m", "min_budget_left": "50%"})
    rig = await _rig(tmp_path, rollout, slos=slos)
    engine = SloEngine(_config(tmp_path / "c2", slos).slos, rig.store, rig.clock)
    await rig.guard.check()
    # 3 failures in 5000: 60 % of a 99.9 % budget spent, no alert configured.
    await rig.results("content-yaml", "yaml", [Outcome.FAILED] * 3 + [Outcome.OK] * 4997, every_s=0.01)
    await rig.results("content-db", "db", [Outcome.OK] * 62_000, every_s=0.01)
    rig.guard.observe_slos((await engine.evaluate()).statuses)
    decision = await rig.guard.check()
    assert decision.action == "hold", decision
    assert "SLO site has 40% of its error budget left (promotion needs 50%)" in decision.reason
    assert (await rig.flag.get()).db_percent == 5.0


def test_rollout_config_errors() -> None:
    with pytest.raises(ValueError, match="ascending"):
        _rollout(promote={"steps": [50, 25]})
    with pytest.raises(ValueError):
        _rollout(limits={"error_rate": "150%"})
    assert _rollout(limits={"error_rate": "0.1%"}).limits.error_rate == pytest.approx(0.001)


async def test_a_canary_gone_quiet_holds_instead_of_promoting_on_old_evidence(tmp_path: Path) -> None:
    rig = await _rig(tmp_path, _rollout(promote={"steps": [25], "dwell": "10m"}, no_data_after="2m"))
    await rig.guard.check()
    await rig.results("content-db", "db", [Outcome.OK] * 12_000, every_s=0.01)  # 120 s of clean results
    rig.clock.advance(600)  # then silence, past the dwell
    decision = await rig.guard.check()
    assert decision.action == "hold" and "no new canary results" in decision.reason, decision
    assert (await rig.flag.get()).db_percent == 5.0, "no promotion on evidence that stopped coming"
    await rig.results("content-db", "db", [Outcome.FAILED] * 50)  # 0.4 % of the stage: over the limit
    assert (await rig.guard.check()).action == "rolled_back", "faults still roll back"

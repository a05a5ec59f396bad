"""Escalation timelines with an injected clock, on a real store and the real dispatcher: L1 at 0, L2 at
30 min unacknowledged, L3 at 2 h 30; critical reaches L3 at 0; an ack stops it and, timed out, re-triggers;
repeats while unacknowledged; info never escalates. Then muting (silences, maintenance windows,
inhibition), grouping into one thread, the flap guard and the actions' bad input.

Pages are observed as delivered: the dispatcher runs after every step and RecordingNotifiers record what
each channel got (a parent, or a follow-up in a thread: ``thread_ref`` set).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from watchdog.config.loader import WatchdogConfig, load_config
from watchdog.core.clock import FakeClock
from watchdog.incidents.manager import AlertSpec, IncidentManager
from watchdog.notify.base import Page
from watchdog.notify.dispatch import Dispatcher
from watchdog.notify.fake import RecordingNotifier
from watchdog.store.memory import MemoryStore
from watchdog.store.sqlite import SqliteStore

MIN = 60.0
START = 1_767_225_600.0  # FakeClock's default start, 2026-01-01T00:00:00Z

ESCALATION = """
escalation:
  - name: default
    levels:
      - {level: L1, who: dev team, notify: [{type: slack, channel: "#l1", mention: [U0DEV]}], ack_within: 30m}
      - {level: L2, who: tech lead, notify: [{type: slack, channel: "#l2"}], ack_within: 2h}
      - {level: L3, who: CTO, notify: [{type: slack, channel: "#l3"}]}
    critical_pages_immediately: L3
    ack_timeout: 4h
    flap_window: 15m
  - name: nagging
    levels:
      - {level: L1, who: dev team, notify: [{type: slack, channel: "#l1"}], ack_within: 30m}
      - {level: L2, who: tech lead, notify: [{type: slack, channel: "#l2"}]}
    repeat_every: 10m
"""


def _write_config(root: Path, extra: str = "") -> WatchdogConfig:
    (root / "probes").mkdir(parents=True)
    (root / "alerts").mkdir()
    (root / "runbooks").mkdir()
    (root / "probes" / "p.yaml").write_text(
        "probes:\n  - {name: db, kind: http, url: 'http://127.0.0.1:9/'}\n"
        "  - {name: api, kind: http, url: 'http://127.0.0.1:9/api'}\n"
    )
    alerts = {
        "db-down": "probe: db",
        "api-errors": "probe: api",
        "content-slow": "probe: api",
    }
    lines = ["alerts:"]
    for name, what in alerts.items():
        lines.append(f"  - {{name: {name}, kind: probe, {what}, group: database}}")
        (root / "runbooks" / f"{name}.md").write_text(f"# {name}\n")
    (root / "alerts" / "a.yaml").write_text("\n".join(lines) + "\n" + ESCALATION + extra)
    return load_config(root)


@dataclass
class Rig:
    clock: FakeClock
    store: MemoryStore | SqliteStore
    manager: IncidentManager
    dispatcher: Dispatcher
    slack: RecordingNotifier
    log: RecordingNotifier

    async def at(self, minutes: float) -> None:
        """Move the clock to ``minutes`` after the start, tick, and deliver every page that is due."""
        self.clock.set(START + minutes * MIN)
        await self.manager.tick()
        await self.deliver()

    async def deliver(self) -> None:
        while await self.dispatcher.run_once(limit=100):
            continue  # until a pass delivers nothing

    def parents(self, channel: str) -> list[Page]:
        return [p for p in self.slack.sent if p.channel == channel and p.thread_ref is None]

    def replies(self, channel: str) -> list[Page]:
        return [p for p in self.slack.sent if p.channel == channel and p.thread_ref is not None]

    def timeline(self) -> list[tuple[str, str, str]]:
        """(channel, event, parent|reply) of every delivery, in order."""
        return [(p.channel, p.event, "reply" if p.thread_ref else "parent") for p in self.slack.sent]

    async def fire(self, alert: str = "db-down", severity: str = "warning", policy: str = "default",
                   group: str | None = None, labels: dict[str, str] | None = None) -> str:
        key = f"alert:{alert}"
        await self.manager.fire(
            AlertSpec(key=key, alert=alert, severity=severity, policy=policy, summary=f"{alert} is failing",
                      labels=labels or {}, group=group)
        )
        await self.deliver()
        return key


async def _rig(config: WatchdogConfig, store: MemoryStore | SqliteStore) -> Rig:
    clock = FakeClock(START)
    await store.open()
    slack, log = RecordingNotifier("slack"), RecordingNotifier("log")
    manager = IncidentManager(config, store, clock)
    dispatcher = Dispatcher(store, {"slack": slack, "log": log}, clock, "test-worker")
    return Rig(clock, store, manager, dispatcher, slack, log)


@pytest.fixture(params=["memory", "sqlite"])
def store_kind(request: pytest.FixtureRequest) -> Iterator[str]:
    yield str(request.param)


@pytest.fixture
async def rig(tmp_path: Path, store_kind: str) -> Rig:
    config = _write_config(tmp_path / "config")
    store = MemoryStore() if store_kind == "memory" else SqliteStore(tmp_path / "state.db")
    return await _rig(config, store)


async def test_warning_escalates_l1_then_l2_at_30_min_then_l3_at_2h30(rig: Rig) -> None:
    await rig.fire()
    assert [(p.channel, p.event, p.mentions) for p in rig.slack.sent] == [("#l1", "fired", ("U0DEV",))]
    await rig.at(29.9)
    assert len(rig.slack.sent) == 1, "nothing before 30 min"
    await rig.at(30)
    assert rig.timeline()[1:] == [("#l2", "escalated", "parent"), ("#l1", "note", "reply")]
    assert "escalated to L2 (tech lead): not acknowledged for 30m" in rig.replies("#l1")[0].note
    await rig.at(149.9)
    assert len(rig.parents("#l3")) == 0
    await rig.at(150)
    assert [p.event for p in rig.parents("#l3")] == ["escalated"]
    assert {p.channel for p in rig.slack.sent[-3:]} == {"#l1", "#l2", "#l3"}, "L1 and L2 threads hear of it"
    count = len(rig.slack.sent)
    await rig.at(24 * 60)
    assert len(rig.slack.sent) == count, "L3 is the last level: nothing more without a repeat"


async def test_critical_pages_l1_and_l3_at_once_then_l2_is_skipped_past(rig: Rig) -> None:
    await rig.fire(severity="critical")
    assert sorted((p.channel, p.event) for p in rig.slack.sent) == [("#l1", "fired"), ("#l3", "fired")]
    await rig.at(30)
    assert rig.parents("#l2") == [], "critical already reached L3: no escalation to a lower level"


async def test_ack_at_10_min_stops_escalation_and_a_timed_out_ack_pages_again(rig: Rig) -> None:
    key = await rig.fire()
    rig.clock.set(START + 10 * MIN)
    result = await rig.manager.acknowledge(key, "slack:U0ANA")
    await rig.deliver()
    assert result.status == "done" and result.incident is not None
    assert result.incident.state == "acknowledged" and result.incident.data["acked_by"] == "slack:U0ANA"
    (ack,) = rig.replies("#l1")
    assert ack.event == "acknowledged" and ack.update_parent and ack.thread_ref is not None
    assert ack.state == "acknowledged" and ack.acked_by == "slack:U0ANA"
    await rig.at(30)
    await rig.at(3 * 60)
    assert rig.parents("#l2") == [], "acknowledged: no escalation"
    await rig.at(10 + 4 * 60)  # the 4 h acknowledgement timed out
    reopened = rig.slack.sent[-1]
    assert (reopened.channel, reopened.event, reopened.state) == ("#l1", "reopened", "firing")
    assert "acknowledgement by slack:U0ANA timed out" in reopened.note
    assert reopened.mentions == ("U0DEV",), "a re-trigger calls people again"
    await rig.at(10 + 4 * 60 + 30)
    assert [p.event for p in rig.parents("#l2")] == ["escalated"], "escalation resumes 30 min later"


async def test_repeat_while_unacknowledged(rig: Rig) -> None:
    await rig.fire(policy="nagging")
    for minute in (10, 20):
        await rig.at(minute)
    assert [(p.channel, p.event) for p in rig.slack.sent] == [
        ("#l1", "fired"),
        ("#l1", "repeat"),
        ("#l1", "repeat"),
    ]
    assert all(p.thread_ref is not None for p in rig.slack.sent[1:]), "reminders go into the thread"
    await rig.at(30)  # escalation to L2 at 30 min; the L2 level is then repeated
    await rig.at(40)
    assert [(p.channel, p.event) for p in rig.parents("#l2")] == [("#l2", "escalated")]
    assert rig.replies("#l2")[-1].event == "repeat"
    await rig.manager.acknowledge("alert:db-down", "cli:ana")
    count = len(rig.slack.sent)
    await rig.at(41)
    await rig.at(60)
    assert all(p.event != "repeat" for p in rig.slack.sent[count:]), "no reminders once acknowledged"


async def test_info_is_posted_to_l1_and_never_escalates(rig: Rig) -> None:
    await rig.fire(severity="info")
    await rig.at(600)
    assert rig.timeline() == [("#l1", "fired", "parent")]


async def test_resolve_posts_to_every_level_paged_and_updates_each_parent(rig: Rig) -> None:
    key = await rig.fire()
    await rig.at(30)
    rig.clock.set(START + 31 * MIN)
    await rig.manager.clear(key, "passes again")
    await rig.deliver()
    resolved = [p for p in rig.slack.sent if p.event == "resolved"]
    assert sorted(p.channel for p in resolved) == ["#l1", "#l2"]
    assert all(p.thread_ref is not None and p.update_parent and p.state == "resolved" for p in resolved)
    assert all(not p.actions or p.state == "resolved" for p in resolved)
    incident = await rig.manager.get(key)
    assert incident is not None and incident.state == "resolved"
    assert incident.data["next_escalation_at"] is None
    await rig.at(200)
    assert rig.parents("#l3") == [], "a resolved incident does not escalate"


async def test_actions_bad_input_changes_nothing(rig: Rig) -> None:
    missing = await rig.manager.acknowledge("alert:nope", "x")
    assert (missing.status, missing.ok) == ("not_found", False)
    key = await rig.fire()
    first = await rig.manager.acknowledge(key, "slack:U1")
    second = await rig.manager.acknowledge(key, "slack:U2")  # a double click
    assert (first.status, second.status) == ("done", "unchanged")
    assert "already acknowledged by slack:U1" in second.message
    await rig.manager.resolve(key, "slack:U1")
    late = await rig.manager.acknowledge(key, "slack:U3")
    assert late.status == "conflict" and "already resolved" in late.message
    again = await rig.manager.resolve(key, "slack:U3")
    assert again.status == "unchanged"
    incident = await rig.manager.get(key)
    assert incident is not None and incident.data["acked_by"] == "slack:U1"
    assert incident.data["resolved_by"] == "slack:U1"


async def test_silence_mutes_and_its_removal_pages(rig: Rig) -> None:
    silence = await rig.manager.add_silence({"alertname": "db-down"}, 3600, "ana", "migrating the DB")
    key = await rig.fire()
    incident = await rig.manager.get(key)
    assert incident is not None and incident.state == "firing"
    reason = "by ana: migrating the DB"
    assert incident.data["muted_by"] == {"kind": "silence", "name": silence.id, "reason": reason}
    assert rig.slack.sent == [], "a silenced alert is recorded, not paged"
    other = await rig.fire("api-errors")
    assert [p.key for p in rig.slack.sent] == [other], "the silence matches db-down only"
    assert await rig.manager.remove_silence(silence.id)
    await rig.deliver()
    assert [p.event for p in rig.parents("#l1") if p.key == key] == ["fired"], "unsilenced: paged now"


async def test_silence_1h_from_a_page_mutes_the_incident_then_expires(rig: Rig) -> None:
    key = await rig.fire()
    result = await rig.manager.silence_incident(key, 3600, "slack:U0ANA")
    await rig.deliver()
    assert result.status == "done" and result.incident is not None
    assert result.incident.data["muted_by"]["kind"] == "silence"
    assert rig.replies("#l1")[-1].event == "muted"
    await rig.at(45)
    assert rig.parents("#l2") == [], "muted: no escalation"
    await rig.at(61)
    assert rig.replies("#l1")[-1].event == "unmuted"
    await rig.at(61 + 30)
    assert [p.event for p in rig.parents("#l2")] == ["escalated"], "timers restart when the silence ends"


async def test_inhibition_mutes_the_alerts_the_source_explains(tmp_path: Path) -> None:
    extra = """
inhibit:
  - {name: db-explains, source: db-down, targets: [api-errors], reason: the database is down}
"""
    rig = await _rig(_write_config(tmp_path / "c", extra), MemoryStore())
    source = await rig.fire("db-down")
    target = await rig.fire("api-errors")
    muted = await rig.manager.get(target)
    assert muted is not None and muted.data["muted_by"] == {
        "kind": "inhibited",
        "name": "db-down",
        "reason": "the database is down",
    }
    assert [p.key for p in rig.parents("#l1")] == [source], "only the source pages"
    note = rig.replies("#l1")[-1]
    assert note.key == source and "muted api-errors" in note.note and note.muted == ("api-errors",)
    rig.clock.set(START + 5 * MIN)
    await rig.manager.clear(source, "back")
    await rig.at(5)
    await rig.at(14)
    assert [p.key for p in rig.slack.sent if p.event == "fired"] == [source], (
        "within the grace after the source resolved: its errors may still be in the target's windows"
    )
    await rig.at(16)
    fired = [p for p in rig.slack.sent if p.event == "fired"]
    assert [p.key for p in fired] == [source, target], "still firing after the grace: a fault of its own"
    assert fired[-1].note == "still firing 10m after db-down resolved"


async def test_an_inhibited_alert_that_clears_within_the_grace_never_pages(tmp_path: Path) -> None:
    """The database comes back; the content alert it explained clears 5 min later as its windows empty:
    nobody is paged for it (it used to page the moment the database alert resolved)."""
    extra = """
inhibit:
  - {name: db-explains, source: db-down, targets: [api-errors], reason: the database is down, grace: 8m}
"""
    rig = await _rig(_write_config(tmp_path / "c", extra), MemoryStore())
    source = await rig.fire("db-down")
    target = await rig.fire("api-errors")
    rig.clock.set(START + 5 * MIN)
    await rig.manager.clear(source, "back")
    for minute in range(5, 10):
        await rig.at(minute)
    rig.clock.set(START + 10 * MIN)
    await rig.manager.clear(target, "back")
    for minute in range(10, 30):
        await rig.at(minute)
    assert [p.key for p in rig.slack.sent if p.event == "fired"] == [source]
    assert all(p.key != target for p in rig.slack.sent if p.event != "note"), rig.slack.sent


async def test_an_alert_first_firing_after_its_source_resolved_waits_out_the_grace(
    tmp_path: Path,
) -> None:
    """The database alert resolves; the content alert it explains only crosses its rate a minute later (its
    windows lag): muted from the start, it pages only if it still fires when the grace is over."""
    extra = """
inhibit:
  - {name: db-explains, source: db-down, targets: [api-errors], reason: the database is down, grace: 5m}
"""
    rig = await _rig(_write_config(tmp_path / "c", extra), MemoryStore())
    source = await rig.fire("db-down")
    rig.clock.set(START + 2 * MIN)
    await rig.manager.clear(source, "back")
    rig.clock.set(START + 3 * MIN)
    target = await rig.fire("api-errors")
    muted = await rig.manager.get(target)
    assert muted is not None and muted.data["muted_by"]["name"] == "db-down"
    await rig.at(6)
    assert [p.key for p in rig.slack.sent if p.event == "fired"] == [source]
    await rig.at(8)  # 5 min after db-down resolved, still firing: its own fault
    fired = [p for p in rig.slack.sent if p.event == "fired"]
    assert [p.key for p in fired] == [source, target]
    assert fired[-1].note == "still firing 5m after db-down resolved"


async def test_maintenance_window_mutes_and_is_announced(tmp_path: Path) -> None:
    start = datetime.fromtimestamp(START, UTC) + timedelta(minutes=10)
    end = start + timedelta(hours=1)
    extra = f"""
maintenance:
  - name: db-upgrade
    start: {start.isoformat()}
    end: {end.isoformat()}
    match: {{alertname: db-down}}
    reason: PostgreSQL 16 upgrade
"""
    rig = await _rig(_write_config(tmp_path / "c", extra), MemoryStore())
    await rig.at(11)
    assert [(p.event, p.state) for p in rig.slack.sent] == [("maintenance", "firing")]
    assert "PostgreSQL 16 upgrade" in rig.slack.sent[0].summary
    key = await rig.fire()
    await rig.at(12)
    assert all(p.key != key for p in rig.slack.sent), "in the window: recorded, not paged"
    await rig.at(71)
    assert [p.event for p in rig.slack.sent if p.key == key] == ["fired"], "window over: paged"
    assert [(p.event, p.state) for p in rig.slack.sent if p.event == "maintenance"] == [
        ("maintenance", "firing"),
        ("maintenance", "resolved"),
    ]
    await rig.at(72)
    assert sum(1 for p in rig.slack.sent if p.event == "maintenance") == 2, "each announced once"


async def test_a_group_shares_one_thread(rig: Rig) -> None:
    first = await rig.fire("db-down", group="database")
    second = await rig.fire("api-errors", group="database")
    (parent,) = rig.parents("#l1")
    (reply,) = rig.replies("#l1")
    assert (parent.key, reply.key, reply.event) == (first, second, "fired")
    assert reply.calls_people and not reply.update_parent, "the parent belongs to the first alert"
    a, b = await rig.manager.get(first), await rig.manager.get(second)
    assert a is not None and b is not None and a.data["thread"] == b.data["thread"]


async def test_flapping_continues_the_thread_instead_of_paging_afresh(rig: Rig) -> None:
    key = await rig.fire()
    for minute in (1, 3, 5):
        rig.clock.set(START + minute * MIN)
        await rig.manager.clear(key, "ok")
        rig.clock.set(START + (minute + 1) * MIN)
        await rig.fire()
    assert len(rig.parents("#l1")) == 1, "one parent for the whole flapping episode"
    refired = [p for p in rig.replies("#l1") if p.event == "refired"]
    assert len(refired) == 3 and "flapping: 3 times" in refired[-1].note
    assert not any(p.calls_people for p in refired), "flapping does not call people again"
    rig.clock.set(START + 10 * MIN)
    await rig.manager.clear(key, "ok")
    rig.clock.set(START + 40 * MIN)  # 30 min later: a new episode, a new parent
    await rig.fire()
    assert len(rig.parents("#l1")) == 2


async def test_two_replicas_escalate_once(tmp_path: Path) -> None:
    config = _write_config(tmp_path / "c")
    one = await _rig(config, MemoryStore())
    two = await _rig(config, one.store.sibling() if isinstance(one.store, MemoryStore) else one.store)
    two.clock = one.clock
    two.manager = IncidentManager(config, two.store, one.clock)
    await one.fire()
    one.clock.set(START + 30 * MIN)
    await one.manager.tick()
    await two.manager.tick()
    await one.deliver()
    await two.deliver()
    escalations = [p for p in one.slack.sent + two.slack.sent if p.event == "escalated"]
    assert [p.channel for p in escalations] == ["#l2"]


async def test_incident_data_keeps_the_timers(rig: Rig) -> None:
    key = await rig.fire()
    incident = await rig.manager.get(key)
    assert incident is not None
    data: dict[str, Any] = dict(incident.data)
    assert data["next_escalation_at"] == START + 30 * MIN
    assert data["paged"] == ["L1"] and data["level"] == 0


async def test_a_silenced_root_cause_still_mutes_its_symptoms(tmp_path: Path) -> None:
    extra = """
inhibit:
  - {name: db-explains, source: db-down, targets: [api-errors], reason: the database is down}
"""
    rig = await _rig(_write_config(tmp_path / "c", extra), MemoryStore())
    source = await rig.fire("db-down")
    target = await rig.fire("api-errors")
    first = await rig.manager.silence_incident(source, 3600, "slack:U0ANA")
    second = await rig.manager.silence_incident(source, 3600, "slack:U0ANA")  # a double click
    assert (first.status, second.status) == ("done", "unchanged")
    assert len(await rig.manager.silences.all()) == 1
    await rig.at(5)
    muted = await rig.manager.get(target)
    assert muted is not None and muted.data["muted_by"]["kind"] == "inhibited"
    assert all(p.key != target for p in rig.slack.sent), "silencing the cause does not page its symptoms"


async def test_a_note_waits_for_its_page_and_never_becomes_the_parent(rig: Rig) -> None:
    from watchdog.notify.base import NOTIFY_TOPIC
    from watchdog.notify.dispatch import NOTE_WAIT_S, NOTE_WAITS

    def page(event: str, thread: str) -> dict[str, Any]:
        target = {"type": "slack", "channel": "#l1", "mention": ["U0DEV"]}
        return {"key": "k", "title": "t", "severity": "warning", "state": "firing", "event": event,
                "note": f"{event} note", "thread": thread, "targets": [target]}

    now = rig.clock.now()
    await rig.store.enqueue(NOTIFY_TOPIC, page("note", "t1"), "note-first", now)
    await rig.deliver()
    assert rig.slack.sent == [], "the note waits: its page has not gone out"
    await rig.store.enqueue(NOTIFY_TOPIC, page("fired", "t1"), "page-second", now)
    await rig.deliver()
    rig.clock.advance(NOTE_WAIT_S)
    await rig.deliver()
    assert [(p.event, p.thread_ref is None) for p in rig.slack.sent] == [("fired", True), ("note", False)]

    # A note whose page never comes (it went to the log) goes out alone after NOTE_WAITS, and is no parent.
    await rig.store.enqueue(NOTIFY_TOPIC, page("note", "t2"), "orphan-note", now)
    for _ in range(NOTE_WAITS + 1):
        rig.clock.advance(NOTE_WAIT_S)
        await rig.deliver()
    orphan = rig.slack.sent[-1]
    assert (orphan.event, orphan.thread_ref) == ("note", None)
    await rig.store.enqueue(NOTIFY_TOPIC, page("fired", "t2"), "late-page", rig.clock.now())
    await rig.deliver()
    assert rig.slack.sent[-1].thread_ref is None, "the late page opens the thread, not the note"

"""The escalation chain survives its daemon: the issue's promise that "all timers live in the store: after a
restart — even SIGKILL between 'incident recorded' and 'page sent' — escalation resumes on time with no page
lost and none sent twice, on SQLite and on PostgreSQL with two replicas".

Everything is real: ``python -m watchdog run`` processes (killed with SIGKILL by pid, restarted on the same
state), an http probe against a closed loopback port (it always fails), the SQLite file or a fresh database
on the local PostgreSQL, and a fake Slack Web API on loopback (``tests/slack_api.py``) that the daemon's
SlackNotifier talks to through ``SLACK_API_URL``. The chain is L1 → L2 → L3 on #l1, #l2 and #l3, each level
mentioning its own person, ``ack_within`` 3 s, so a page of level N is "the message that mentions level N's
person" whether it went out as a channel message or as a broadcast reply in the incident's thread.

A restarted daemon keeps its replica name (``instance`` in watchdog.yaml, as a restarted pod keeps its
host name): a new name would have to wait for the old leader lease to expire before evaluating.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx
import psycopg
import pytest
from loopback import closed_port
from slack_api import FakeSlackApi, Post, channel_id

from watchdog.config.loader import load_config
from watchdog.core.clock import SystemClock
from watchdog.incidents.manager import IncidentManager
from watchdog.store import Incident, StateStore, open_store

TOKEN = "xoxb-durability-test"
ALERT = "dead-service-down"
KEY = f"alert:{ALERT}"
ACK_WITHIN = 3.0
CHANNELS = {"L1": "#l1", "L2": "#l2", "L3": "#l3"}
PEOPLE = {"L1": "UL1DEV", "L2": "UL2LEAD", "L3": "UL3CTO"}
EVALUATION_SLACK_S = 1.2
"""An escalation happens within this of being due (evaluation every 0.5 s, plus the store round trips)."""
DELIVERY_SLACK_S = 1.8
"""A page reaches Slack within this of its incident change (dispatch every 1 s, plus the request)."""
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"

pytestmark = pytest.mark.slow  # each test runs real daemons through an escalation chain: 6 to 15 s


def _write_config(root: Path) -> None:
    (root / "probes").mkdir(parents=True)
    (root / "alerts").mkdir()
    (root / "runbooks").mkdir()
    (root / "watchdog.yaml").write_text(
        "instance: ${DURABILITY_INSTANCE:-durability}\n"
        "evaluation_interval: 0.5s\n"
        "flush_interval: 0.2s\n"
        "defaults: {interval: 1s, timeout: 1s, jitter: 0s}\n"
    )
    (root / "probes" / "dead.yaml").write_text(
        "probes:\n"
        "  - name: dead-service\n"
        "    kind: http\n"
        f"    url: http://127.0.0.1:{closed_port()}/health\n"
        "    interval: 1s\n"
        "    timeout: 1s\n"
    )
    levels = "\n".join(
        f"      - level: {level}\n"
        f"        who: {level} on call\n"
        f'        notify: [{{type: slack, channel: "{CHANNELS[level]}", mention: [{PEOPLE[level]}]}}]'
        + (f"\n        ack_within: {ACK_WITHIN:g}s" if level != "L3" else "")
        for level in CHANNELS
    )
    (root / "alerts" / "chain.yaml").write_text(
        "alerts:\n"
        f"  - name: {ALERT}\n"
        "    kind: probe\n"
        "    probe: dead-service\n"
        "    for: 1s\n"
        "    min_failures: 2\n"
        "    severity: warning\n"
        "    escalation: chain\n"
        '    summary: "dead-service failed {value} times in a row: {reason}"\n'
        "escalation:\n"
        "  - name: chain\n"
        "    levels:\n"
        f"{levels}\n"
        "    critical_pages_immediately: null\n"
        "    ack_timeout: 1h\n"
    )
    (root / "runbooks" / f"{ALERT}.md").write_text(f"# {ALERT}\n\nThe dead service is down. Restart it.\n")


# -- state stores ------------------------------------------------------------------------------------------


async def _pg_admin(sql: str) -> None:
    async with await psycopg.AsyncConnection.connect(PG_ADMIN, autocommit=True) as conn:
        await conn.execute(sql.encode())


@asynccontextmanager
async def _state(kind: str, tmp_path: Path) -> AsyncIterator[str]:
    """A fresh state store's spec: a SQLite file, or a uniquely named database on the local PostgreSQL
    (dropped afterwards)."""
    if kind == "sqlite":
        yield str(tmp_path / "state.db")
        return
    db = f"watchdog_durability_{uuid.uuid4().hex[:12]}"
    await _pg_admin(f"CREATE DATABASE {db}")
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{db}"
    finally:
        await _pg_admin(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")


@dataclass(frozen=True)
class OutboxRow:
    dedup_key: str
    attempts: int
    claimed_by: str | None
    claimed_until: float | None
    done_at: float | None


_OUTBOX_SQL = "SELECT dedup_key, attempts, claimed_by, claimed_until, done_at FROM outbox ORDER BY id"


async def _outbox(state: str) -> list[OutboxRow]:
    """The outbox as it is in the store (read-only), to know where a page is: pending, claimed or done."""
    if state.startswith("postgresql://"):
        async with await psycopg.AsyncConnection.connect(state, autocommit=True) as conn:
            cur = await conn.execute(_OUTBOX_SQL.encode())
            rows: list[tuple[Any, ...]] = list(await cur.fetchall())
    else:
        db = sqlite3.connect(f"file:{state}?mode=ro", uri=True, timeout=5)
        try:
            rows = db.execute(_OUTBOX_SQL).fetchall()
        finally:
            db.close()
    return [OutboxRow(str(r[0]), int(r[1]), r[2], r[3], r[4]) for r in rows]


# -- daemons -----------------------------------------------------------------------------------------------


@dataclass
class DaemonProcess:
    instance: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path
    log_file: IO[bytes]

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None


@dataclass
class Harness:
    """Starts ``watchdog run`` processes on one config and state, watches Slack and the incident; every
    failure message carries what Slack got, the incident and the tail of every daemon's log."""

    root: Path
    state: str
    slack: FakeSlackApi
    slack_url: str
    store: StateStore
    daemons: list[DaemonProcess] = field(default_factory=list)
    escalated_at: dict[int, float] = field(default_factory=dict)
    """Level index → ``level_paged_at`` as the store recorded it, seen while waiting."""
    incident: Incident | None = None
    watch_claims: bool = False
    claimers: Counter[str] = field(default_factory=Counter)
    """With ``watch_claims``: (replica, page) claims seen in the outbox while waiting, counted per replica."""
    _claims_seen: set[tuple[str, str, int]] = field(default_factory=set)

    def start(self, instance: str) -> DaemonProcess:
        port = closed_port()  # free now; the daemon binds it
        log = self.root.parent / f"{instance}.{len(self.daemons)}.log"
        log_file = log.open("wb")
        env = {
            **os.environ,
            "SLACK_BOT_TOKEN": TOKEN,
            "SLACK_API_URL": self.slack_url,
            "DURABILITY_INSTANCE": instance,
        }
        command = [sys.executable, "-m", "watchdog", "run", "--config", str(self.root)]
        command += ["--listen", f"127.0.0.1:{port}", "--state", self.state]
        proc = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, env=env)
        daemon = DaemonProcess(instance, port, proc, log, log_file)
        self.daemons.append(daemon)
        return daemon

    def sigkill(self, daemon: DaemonProcess) -> None:
        os.kill(daemon.proc.pid, signal.SIGKILL)
        daemon.proc.wait(timeout=10)

    def stop_all(self) -> None:
        for daemon in self.daemons:
            if daemon.alive:
                os.kill(daemon.proc.pid, signal.SIGTERM)
                try:
                    daemon.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.kill(daemon.proc.pid, signal.SIGKILL)
                    daemon.proc.wait(timeout=10)
            daemon.log_file.close()

    async def ready(self, daemon: DaemonProcess, timeout_s: float = 15.0) -> float:
        """Wait until the daemon answers /readyz 200; returns when it did."""
        async with httpx.AsyncClient(timeout=1.0) as client:

            async def answers() -> bool:
                with suppress(httpx.TransportError):
                    return (await client.get(f"http://127.0.0.1:{daemon.port}/readyz")).status_code == 200
                return False

            await self.wait_for(f"{daemon.instance} ready", answers, timeout_s)
        return time.time()

    # -- what happened -----------------------------------------------------------------------------------
    def pages(self, level: str) -> list[Post]:
        """Messages that call ``level``'s person: its pages, parent or broadcast reply."""
        return [p for p in self.slack.posts if f"<@{PEOPLE[level]}>" in p.text]

    def in_channel(self, channel: str) -> list[Post]:
        return [p for p in self.slack.posts if channel_id(p.channel) == channel_id(channel)]

    def attempts_to(self, channel: str) -> list[str]:
        """The answers the fake gave to posts for ``channel`` (parents name the channel, replies its id)."""
        return [
            r.answer
            for r in self.slack.requests
            if channel_id(str(r.body.get("channel", ""))) == channel_id(channel)
        ]

    async def observe(self) -> None:
        if self.watch_claims:
            for row in await _outbox(self.state):
                claim = (str(row.claimed_by), row.dedup_key, row.attempts)
                if row.claimed_by and claim not in self._claims_seen:
                    self._claims_seen.add(claim)
                    self.claimers[str(row.claimed_by)] += 1
        incident = await self.store.get_incident(KEY)
        if incident is not None:
            self.incident = incident
            level = int(incident.data.get("level", 0))
            if level not in self.escalated_at and incident.data.get("level_paged_at") is not None:
                self.escalated_at[level] = float(incident.data["level_paged_at"])

    def since(self) -> float:
        assert self.incident is not None, self.report("no incident recorded")
        return float(self.incident.data["since"])

    async def wait_for(
        self, what: str, predicate: Callable[[], Awaitable[bool] | bool], timeout_s: float
    ) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            await self.observe()
            outcome = predicate()
            if outcome if isinstance(outcome, bool) else await outcome:
                return
            died = [d for d in self.daemons if not d.alive and d.proc.returncode != -signal.SIGKILL]
            if died:
                raise AssertionError(
                    self.report(f"daemon {died[0].instance} exited while waiting for {what}")
                )
            if time.monotonic() > deadline:
                raise AssertionError(self.report(f"{what}: not within {timeout_s:g} s"))
            await asyncio.sleep(0.05)

    async def hold(self, seconds: float, forbidden: Callable[[], str | None]) -> None:
        """Watch for ``seconds``; fail as soon as ``forbidden`` names something that must not happen."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            await self.observe()
            problem = forbidden()
            if problem:
                raise AssertionError(self.report(problem))
            await asyncio.sleep(0.05)

    def report(self, headline: str) -> str:
        lines = [headline, "", "Slack messages:"]
        for p in self.slack.posts:
            kind = f"reply to {p.thread_ts}" if p.thread_ts else "parent"
            lines.append(f"  {p.at:.2f} {channel_id(p.channel)} {kind} ts={p.ts}: {p.text[:160]!r}")
        answers = Counter((channel_id(str(r.body.get("channel", ""))), r.answer) for r in self.slack.requests)
        lines.append(f"Slack requests by channel and answer: {dict(answers)}")
        if self.incident is not None:
            data = {k: self.incident.data.get(k) for k in ("level", "paged", "since", "level_paged_at")}
            more = {k: self.incident.data.get(k) for k in ("next_escalation_at", "acked_by")}
            lines.append(f"incident: {self.incident.state} v{self.incident.version} {data} {more}")
        lines.append(f"escalated at (level → level_paged_at): {self.escalated_at}")
        for daemon in self.daemons:
            daemon.log_file.flush()
            tail = daemon.log.read_text(errors="replace").splitlines()[-25:]
            lines.append(f"--- {daemon.log.name} (exit {daemon.proc.poll()}) ---")
            lines.extend(line[:400] for line in tail)
        return "\n".join(lines)

    async def page_done(self, dedup_key: str) -> bool:
        return any(r.dedup_key == dedup_key and r.done_at is not None for r in await _outbox(self.state))

    async def outbox_drained(self) -> bool:
        rows = await _outbox(self.state)
        return bool(rows) and all(r.done_at is not None for r in rows)


@asynccontextmanager
async def _harness(tmp_path: Path, kind: str) -> AsyncIterator[Harness]:
    """A config, a fresh state store (opened by the test too, to watch the incident) and the fake Slack;
    every daemon started through it is stopped at the end (SIGTERM, then SIGKILL, by pid)."""
    root = tmp_path / "config"
    _write_config(root)
    slack = FakeSlackApi(TOKEN)
    async with _state(kind, tmp_path) as state, slack.running() as slack_url:
        store = open_store(state)
        await store.open()
        harness = Harness(root, state, slack, slack_url, store)
        try:
            yield harness
        finally:
            harness.stop_all()
            await store.close()


def _fired_key(level: str = "L1", version: int = 1) -> str:
    return f"{KEY}:v{version}:{level}:fired"


BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]


def _assert_each_level_paged_once(h: Harness) -> None:
    for level, channel in CHANNELS.items():
        pages = h.pages(level)
        assert len(pages) == 1, h.report(f"{level} paged {len(pages)} times, expected once")
        assert channel_id(pages[0].channel) == channel_id(channel), h.report(f"{level} paged elsewhere")


def _assert_one_thread_per_channel(h: Harness) -> None:
    """One parent message per channel, the others replies in the incident's thread: 3 messages in #l1 (its
    page, the notes "escalated to L2" and "escalated to L3"), 2 in #l2 (its page, "escalated to L3"), 1 in
    #l3."""
    for channel in CHANNELS.values():
        parents = [p for p in h.in_channel(channel) if not p.thread_ts]
        assert len(parents) == 1, h.report(f"{channel}: {len(parents)} parent messages, expected 1")
    counts = {channel: len(h.in_channel(channel)) for channel in CHANNELS.values()}
    assert counts == {"#l1": 3, "#l2": 2, "#l3": 1}, h.report(f"messages per channel: {counts}")


def _assert_escalation_notes_once(h: Harness) -> None:
    """The levels already paged read, once each, that the incident went further: #l1 "escalated to L2"
    and "escalated to L3", #l2 "escalated to L3"."""
    notes = Counter(
        (channel_id(p.channel), word)
        for p in h.slack.posts
        for word in ("escalated to L2", "escalated to L3")
        if word in p.text
    )
    expected = Counter(
        {("CL1", "escalated to L2"): 1, ("CL1", "escalated to L3"): 1, ("CL2", "escalated to L3"): 1}
    )
    assert notes == expected, h.report(f"escalation notes seen: {dict(notes)}, expected {dict(expected)}")


# -- 1. SIGKILL mid-escalation -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", BACKENDS)
async def test_sigkill_after_the_l1_page_resumes_the_chain_on_time(tmp_path: Path, kind: str) -> None:
    async with _harness(tmp_path, kind) as h:
        first = h.start("replica-a")
        await h.wait_for("the L1 page", lambda: bool(h.pages("L1")), 20)
        # Past the page's outbox commit, so the kill is not inside the at-least-once window between Slack's
        # answer and the outbox row being marked done.
        await h.wait_for("the L1 page marked sent", lambda: h.page_done(_fired_key()), 5)
        h.sigkill(first)
        # Down for a while, back (normally) before L2 is due: a timer restarted with the process would page
        # L2 at restart + ack_within, past the bound below.
        await asyncio.sleep(max(0.0, h.since() + 1.0 - time.time()))
        second = h.start("replica-a")
        ready_at = await h.ready(second)
        assert ready_at > h.since() + EVALUATION_SLACK_S, h.report(
            "restarted too soon to tell the timers apart"
        )
        await h.wait_for("the L3 page", lambda: bool(h.pages("L3")), 4 * ACK_WITHIN + 10)
        await h.hold(2.0, lambda: None)  # anything sent twice would show up now
        await h.wait_for("the outbox drained", h.outbox_drained, 5)

        _assert_each_level_paged_once(h)
        _assert_one_thread_per_channel(h)
        _assert_escalation_notes_once(h)
        since = h.since()
        l1, l2, l3 = (h.pages(level)[0].at for level in CHANNELS)
        assert l1 < ready_at, h.report("L1 paged after the restart")
        assert 1 in h.escalated_at and 2 in h.escalated_at, h.report("an escalation was not observed")
        to_l2, to_l3 = h.escalated_at[1], h.escalated_at[2]
        # Never early: each level waits ack_within after the one before.
        assert to_l2 >= since + ACK_WITHIN and to_l3 >= to_l2 + ACK_WITHIN, h.report("escalated early")
        # On time: the timer came from the store, not restarted with the process.
        assert to_l2 <= max(since + ACK_WITHIN, ready_at) + EVALUATION_SLACK_S, h.report("L2 escalated late")
        assert to_l3 <= to_l2 + ACK_WITHIN + EVALUATION_SLACK_S, h.report("L3 escalated late")
        assert to_l2 <= l2 <= to_l2 + DELIVERY_SLACK_S, h.report("the L2 page did not follow its escalation")
        assert to_l3 <= l3 <= to_l3 + DELIVERY_SLACK_S, h.report("the L3 page did not follow its escalation")
        assert h.incident is not None and h.incident.data["paged"] == ["L1", "L2", "L3"], h.report("paged")
        assert h.incident.data["next_escalation_at"] is None, h.report("a timer is left after L3")
        print(h.report(f"timeline: fired {since:.2f}, restarted daemon ready {ready_at:.2f}"))


@pytest.mark.parametrize("kind", BACKENDS)
async def test_sigkill_with_the_page_still_in_the_outbox_sends_it_once_after_restart(
    tmp_path: Path, kind: str
) -> None:
    async with _harness(tmp_path, kind) as h:
        h.slack.outage = True  # every Slack call answers 500: the L1 page stays in the outbox
        first = h.start("replica-a")

        async def l1_waiting_for_retry() -> bool:
            rows = [r for r in await _outbox(h.state) if r.dedup_key == _fired_key()]
            return (
                bool(rows) and rows[0].attempts >= 1 and rows[0].claimed_until is None and not rows[0].done_at
            )

        await h.wait_for("the L1 page failed once and waiting for its retry", l1_waiting_for_retry, 20)
        h.sigkill(first)
        assert not h.slack.posts, h.report("Slack accepted a message during its outage")
        assert "500" in h.attempts_to("#l1"), h.report("the L1 page was never tried")
        h.slack.outage = False
        second = h.start("replica-a")
        restarted_at = time.time()
        await h.ready(second)
        await h.wait_for("the L1 page after the restart", lambda: bool(h.pages("L1")), 10)
        # The chain goes on from the stored timers: L2 follows, and L1 is not paged again meanwhile.
        await h.wait_for("the L2 page", lambda: bool(h.pages("L2")), 2 * ACK_WITHIN + 5)
        # The note "escalated to L2" waits for #l1's page (a note never opens a thread): give it a moment.
        await h.wait_for(
            "the note in #l1", lambda: any("escalated to L2" in p.text for p in h.in_channel("#l1")), 12
        )
        await h.hold(1.5, lambda: None)

        l1_pages = h.pages("L1")
        assert len(l1_pages) == 1, h.report(f"L1 paged {len(l1_pages)} times")
        assert l1_pages[0].at >= restarted_at, h.report("L1 paged before the restart")
        assert len([p for p in h.in_channel("#l1") if not p.thread_ts]) == 1, h.report("#l1 parents")
        assert len(h.pages("L2")) == 1, h.report("L2 paged more than once")
        since = h.since()
        assert h.escalated_at.get(1, 0.0) >= since + ACK_WITHIN, h.report("L2 escalated early")
        # L1 reads, in its thread, that the incident went to L2 (whichever of the two reached #l1 first).
        to_l2 = [p for p in h.in_channel("#l1") if "escalated to L2" in p.text]
        assert len(to_l2) == 1, h.report(
            f"#l1 got the note 'escalated to L2' {len(to_l2)} times, expected once"
        )


async def test_sigkill_while_the_l1_page_is_in_flight_sends_it_once_promptly(tmp_path: Path) -> None:
    """Killed while Slack holds the L1 request (the dispatcher has claimed the page and is sending it): the
    restarted daemon sends the page once, and in time, before the escalation to L2 is due. The claim on the
    page died with the process that held it; the page must not wait out the claim lease (60 s, while L2, L3
    and their notes overtake it and the note "escalated to L2" becomes #l1's parent message)."""
    async with _harness(tmp_path, "sqlite") as h:
        h.slack.fail_next("hang", channel="#l1")
        first = h.start("replica-a")
        await h.wait_for("the L1 page in flight", lambda: "hang" in h.attempts_to("#l1"), 20)
        h.sigkill(first)
        second = h.start("replica-a")
        await h.ready(second)
        since = h.since()
        due = since + ACK_WITHIN
        await h.wait_for(
            "the L1 page sent again before L2 is due", lambda: bool(h.pages("L1")), due - time.time() + 0.5
        )
        await h.wait_for("the L2 page", lambda: bool(h.pages("L2")), ACK_WITHIN + 5)
        await h.hold(1.5, lambda: None)
        assert len(h.pages("L1")) == 1, h.report("L1 paged more than once")
        assert h.pages("L1")[0].at <= h.pages("L2")[0].at, h.report("L2 was paged before L1")
        parents = [p for p in h.in_channel("#l1") if not p.thread_ts]
        assert len(parents) == 1 and f"<@{PEOPLE['L1']}>" in parents[0].text, h.report("#l1's parent")


async def test_a_hanging_slack_channel_does_not_hold_up_the_escalation(tmp_path: Path) -> None:
    """Slack holds every request for #l1 (until the client's own timeout, 10 s): the L1 page cannot go out,
    yet L2 is paged when L1's ack_within runs out, not when the L1 request gives up. The timers are the
    evaluation's; a page being sent must not hold them up."""
    async with _harness(tmp_path, "sqlite") as h:
        for channel in ("#l1", channel_id("#l1")):
            h.slack.fail_next(*["hang"] * 20, channel=channel)
        h.start("replica-a")
        await h.wait_for("the L1 page in flight", lambda: "hang" in h.attempts_to("#l1"), 20)
        due = h.since() + ACK_WITHIN
        await h.wait_for(
            "the escalation to L2 on time",
            lambda: 1 in h.escalated_at,
            due + EVALUATION_SLACK_S - time.time(),
        )
        # The dispatcher sends one page at a time: L2's may wait for the hanging #l1 request (10 s).
        await h.wait_for("the L2 page", lambda: bool(h.pages("L2")), 15)
        await h.hold(1.0, lambda: None)
        assert due <= h.escalated_at[1] <= due + EVALUATION_SLACK_S, h.report("L2 escalated off time")
        assert len(h.pages("L2")) == 1 and not h.pages("L1"), h.report("pages")


# -- 3. two replicas on one PostgreSQL store, Slack down while the incident fires and escalates -----------


@pytest.mark.postgres
async def test_two_replicas_deliver_each_page_and_note_once_through_a_slack_outage(tmp_path: Path) -> None:
    """Two daemons on one PostgreSQL store, both dispatching; Slack answers 500 to everything while the
    incident fires and escalates to L2 (the pages are retried with backoff, claimed by either replica), then
    recovers while L3 is paged. Every page and every escalation note reaches Slack exactly once."""
    async with _harness(tmp_path, "postgres") as h:
        h.slack.outage = True
        h.watch_claims = True
        await h.ready(h.start("replica-a"))
        await h.ready(h.start("replica-b"))
        await h.wait_for("the escalation to L2 during the outage", lambda: 1 in h.escalated_at, 20)

        async def retried_during_the_outage() -> bool:
            rows = {r.dedup_key: r for r in await _outbox(h.state)}
            l1 = rows.get(_fired_key())
            return l1 is not None and l1.attempts >= 2 and "500" in h.attempts_to("#l2")

        await h.wait_for("the L1 page tried twice and the L2 page once", retried_during_the_outage, 10)
        assert not h.slack.posts, h.report("Slack accepted a message during its outage")
        h.slack.outage = False
        recovered_at = time.time()
        await h.wait_for("every page delivered", lambda: all(h.pages(level) for level in CHANNELS), 30)
        await h.wait_for("the outbox drained", h.outbox_drained, 20)
        await h.hold(1.5, lambda: None)

        assert all(d.alive for d in h.daemons), h.report("a replica died")
        print(f"claims by replica: {dict(h.claimers)}")
        assert set(h.claimers) <= {"replica-a", "replica-b"}, h.report(f"claims: {dict(h.claimers)}")
        assert min(p.at for p in h.slack.posts) >= recovered_at, h.report("posted before the recovery")
        _assert_each_level_paged_once(h)
        _assert_one_thread_per_channel(h)
        _assert_escalation_notes_once(h)


# -- 4. an acknowledgement stops the escalation, across a restart -----------------------------------------


async def test_an_acknowledgement_stops_the_escalation_across_a_restart(tmp_path: Path) -> None:
    async with _harness(tmp_path, "sqlite") as h:
        first = h.start("replica-a")
        await h.wait_for("the L1 page", lambda: bool(h.pages("L1")), 20)
        await h.wait_for("the L1 page marked sent", lambda: h.page_done(_fired_key()), 5)
        h.sigkill(first)
        manager = IncidentManager(load_config(h.root, {}), h.store, SystemClock())
        result = await manager.acknowledge(KEY, "test")
        assert result.status == "done", h.report(f"acknowledge: {result}")
        await h.observe()
        since = h.since()
        # Restart only once L2 was due: the restarted daemon's first tick is past the old escalation time.
        await asyncio.sleep(max(0.0, since + ACK_WITHIN + 0.2 - time.time()))
        second = h.start("replica-a")
        await h.ready(second)

        def escalated() -> str | None:
            if h.pages("L2") or h.pages("L3") or h.in_channel("#l2") or h.in_channel("#l3"):
                return "paged past an acknowledgement"
            return None

        # The acknowledgement's note (written to the outbox by the test) reaches L1's thread...
        await h.wait_for(
            "the acknowledgement in L1's thread",
            lambda: any("acknowledged by test" in p.text for p in h.in_channel("#l1")),
            10,
        )
        # ...and through the time L2 and then L3 would have been paged, nobody else is.
        await h.hold(max(0.0, since + 2 * ACK_WITHIN + DELIVERY_SLACK_S - time.time()), escalated)

        assert len(h.pages("L1")) == 1, h.report("L1 paged again")
        acks = [p for p in h.in_channel("#l1") if "acknowledged by test" in p.text]
        assert len(acks) == 1 and acks[0].thread_ts == h.pages("L1")[0].ts, h.report("the ack note")
        assert h.incident is not None and h.incident.state == "acknowledged", h.report("state")
        assert h.incident.data["level"] == 0 and h.incident.data["next_escalation_at"] is None, h.report("")

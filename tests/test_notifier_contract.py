"""The Notifier contract, one suite for every implementation: LogNotifier, SlackNotifier (the real slack_sdk
client against the fake Slack Web API in ``tests/slack_api.py``, on loopback) and the RecordingNotifier fake.

* ``name`` is a non-empty str, ``send`` is a coroutine function;
* sending a firing and then a resolved page succeeds and is observable (LogNotifier: its ``sent`` deque and a
  ``watchdog.page`` log record carrying key/state/severity/level/runbook in ``extra``; SlackNotifier: the
  messages the fake Slack API accepted, to the page's channel, exactly as the page renders; the fake:
  ``sent``); each subject gets its pages addressed to a target of its kind (``Subject.to``);
* unicode and long summaries are accepted; the same page twice is sent twice (dedup is the dispatcher's job).

Then the fake's own promises (scripted errors, in order, ``permanent`` kept, failed sends not recorded), and
the Dispatcher on a real store (memory and SQLite) with recording notifiers and a FakeClock: every target
of a page is its own delivery (channel and mentions passed on), exactly once; one bad item never stalls the
others; an outage delays a page to the fallback channel, never drops it.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from slack_api import FakeSlackApi

from watchdog.core.clock import FakeClock
from watchdog.notify.base import NOTIFY_TOPIC, Notifier, NotifyError, Page
from watchdog.notify.dispatch import MAX_ATTEMPTS, Dispatcher
from watchdog.notify.fake import RecordingNotifier
from watchdog.notify.log import LogNotifier
from watchdog.notify.slack import SlackNotifier, render
from watchdog.store.base import StateStore
from watchdog.store.memory import MemoryStore
from watchdog.store.sqlite import SqliteStore

PAGE_LOGGER = "watchdog.page"

FIRING = Page(
    key="alert:api-availability",
    title="api-availability",
    severity="critical",
    state="firing",
    summary="error budget burning 14.4x over 1h",
    runbook_url="https://runbooks.example.test/api-availability.md",
    labels={"service": "api", "cohort": "baseline"},
    level="L1",
)
RESOLVED = Page(
    key=FIRING.key,
    title=FIRING.title,
    severity=FIRING.severity,
    state="resolved",
    summary="burn rate back under 1x",
    runbook_url=FIRING.runbook_url,
    labels=FIRING.labels,
    level="L2",
)


# -- the contract --------------------------------------------------------------------------------------------


def _same(page: Page) -> Any:
    return page


@dataclass
class Subject:
    notifier: Notifier
    delivered: Callable[[], list[Any]]
    """What this notifier delivered, in order: pages, or for slack the (channel, text, blocks) accepted."""
    records: Callable[[], list[logging.LogRecord]] | None = None
    """For LogNotifier: the ``watchdog.page`` records emitted during the test."""
    to: Callable[[Page], Page] = _same
    """The page addressed to a target of this notifier's kind (slack needs a channel)."""
    expected: Callable[[Page], Any] = _same
    """What ``delivered`` holds for a delivered page."""


@pytest.fixture
def page_records(caplog: pytest.LogCaptureFixture) -> Iterator[Callable[[], list[logging.LogRecord]]]:
    """caplog restricted to the page logger (propagation forced on: the demo CLI turns it off)."""
    logger = logging.getLogger(PAGE_LOGGER)
    propagate = logger.propagate
    logger.propagate = True
    try:
        with caplog.at_level(logging.INFO, logger=PAGE_LOGGER):
            yield lambda: [r for r in caplog.records if r.name == PAGE_LOGGER]
    finally:
        logger.propagate = propagate


def _slack_message(page: Page) -> tuple[str, str, list[dict[str, Any]]]:
    text, blocks = render(page)
    return page.channel, text, blocks


@pytest.fixture(params=["log", "slack", "recording"])
async def subject(request: pytest.FixtureRequest) -> AsyncIterator[Subject]:
    if request.param == "log":
        log = LogNotifier()
        yield Subject(log, lambda: list(log.sent), request.getfixturevalue("page_records"))
    elif request.param == "slack":
        api = FakeSlackApi("xoxb-contract")
        async with api.running() as url:
            yield Subject(
                SlackNotifier("xoxb-contract", api_url=url, timeout_s=5),
                lambda: [(p.channel, p.text, p.blocks) for p in api.posts],
                to=lambda page: replace(page, channel="#contract", mentions=("U0CONTRACT", "S0TEAM")),
                expected=_slack_message,
            )
    else:
        recording = RecordingNotifier()
        yield Subject(recording, lambda: list(recording.sent))


def check_record(record: logging.LogRecord, page: Page) -> None:
    extra: dict[str, Any] = record.__dict__
    assert extra["page_key"] == page.key
    assert extra["page_state"] == page.state
    assert extra["page_severity"] == page.severity
    assert extra["page_level"] == page.level
    assert extra["runbook"] == page.runbook_url
    assert extra["labels"] == dict(page.labels)
    assert record.levelno >= logging.WARNING  # a page is never below the level the daemon logs at
    message = record.getMessage()
    assert page.title in message and page.summary in message and page.state.upper() in message


def check_delivered(subject: Subject, pages: list[Page]) -> None:
    assert subject.delivered() == [subject.expected(p) for p in pages]
    if subject.records is not None:
        records = subject.records()
        assert len(records) == len(pages)
        for record, page in zip(records, pages, strict=True):
            check_record(record, page)


def test_name_is_a_non_empty_str_and_send_is_async(subject: Subject) -> None:
    assert isinstance(subject.notifier.name, str) and subject.notifier.name.strip()
    assert inspect.iscoroutinefunction(subject.notifier.send)


async def test_firing_then_resolved_are_delivered_in_order(subject: Subject) -> None:
    firing, resolved = subject.to(FIRING), subject.to(RESOLVED)
    await subject.notifier.send(firing)
    check_delivered(subject, [firing])
    await subject.notifier.send(resolved)
    check_delivered(subject, [firing, resolved])


async def test_page_with_only_required_fields(subject: Subject) -> None:
    page = subject.to(Page(key="k", title="t", severity="warning", state="firing", summary=""))
    assert page.level == "L1" and page.runbook_url == "" and page.since == ""
    await subject.notifier.send(page)
    check_delivered(subject, [page])


async def test_unicode_and_long_summaries_are_accepted(subject: Subject) -> None:
    unicode = Page(
        key="alert:ログイン",
        title="ログイン失敗率 🚨",
        severity="critical",
        state="firing",
        summary="Überlastung — 99,9 % → 97,2 % (Zürich ✓, São Paulo ✗) \u200b\n\tzweite Zeile",
        labels={"région": "eu-west-1", "emoji": "🔥"},
    )
    long = Page(
        key="alert:long",
        title="long",
        severity="warning",
        state="firing",
        summary="x" * 100_000 + " end",
    )
    unicode, long = subject.to(unicode), subject.to(long)
    await subject.notifier.send(unicode)
    await subject.notifier.send(long)
    check_delivered(subject, [unicode, long])
    last = subject.delivered()[1]
    if isinstance(last, Page):
        assert last.summary.endswith(" end")  # not truncated by the notifier's record
    else:  # slack: clipped to Slack's limits (the fake API refuses a message over them), still delivered
        assert "…" in last[1] and len(last[1]) <= 3000


async def test_the_same_page_twice_is_sent_twice(subject: Subject) -> None:
    firing = subject.to(FIRING)
    await subject.notifier.send(firing)
    await subject.notifier.send(firing)
    check_delivered(subject, [firing, firing])


# -- the fake's own promises ---------------------------------------------------------------------------------


async def test_fake_raises_scripted_errors_in_order_then_records() -> None:
    transient = NotifyError("slack answered 503", permanent=False)
    permanent = NotifyError("channel_not_found", permanent=True)
    fake = RecordingNotifier("slack", failures=[transient, permanent])
    assert fake.name == "slack"

    with pytest.raises(NotifyError) as first:
        await fake.send(FIRING)
    assert first.value is transient and first.value.permanent is False
    assert str(first.value) == "slack answered 503"
    assert fake.sent == []

    with pytest.raises(NotifyError) as second:
        await fake.send(FIRING)
    assert second.value is permanent and second.value.permanent is True
    assert fake.sent == []  # failed sends are never recorded

    await fake.send(FIRING)
    await fake.send(RESOLVED)
    assert fake.sent == [FIRING, RESOLVED]
    assert fake.attempts == 4


async def test_fake_more_failures_can_be_scripted_later() -> None:
    fake = RecordingNotifier()
    assert fake.name == "fake"
    await fake.send(FIRING)
    fake.fail_next(NotifyError("a", permanent=False), NotifyError("b", permanent=True))
    raised = []
    for _ in range(2):
        with pytest.raises(NotifyError) as info:
            await fake.send(RESOLVED)
        raised.append((str(info.value), info.value.permanent))
    assert raised == [("a", False), ("b", True)]
    await fake.send(RESOLVED)
    assert fake.sent == [FIRING, RESOLVED]


# -- the Dispatcher on a real store --------------------------------------------------------------------------


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StateStore]:
    s: StateStore = MemoryStore() if request.param == "memory" else SqliteStore(tmp_path / "s.db")
    await s.open()
    try:
        yield s
    finally:
        await s.close()


def payload(
    targets: list[Mapping[str, Any]], *, state: str = "firing", level: str = "L1"
) -> dict[str, Any]:
    """The shape IncidentManager._enqueue_pages writes."""
    return {
        "key": FIRING.key,
        "title": FIRING.title,
        "severity": FIRING.severity,
        "state": state,
        "summary": FIRING.summary,
        "runbook_url": FIRING.runbook_url,
        "labels": dict(FIRING.labels),
        "level": level,
        "targets": [dict(t) for t in targets],
    }


SLACK: dict[str, Any] = {"type": "slack", "channel": "#oncall", "mention": ["U123"]}
LOG: dict[str, Any] = {"type": "log", "channel": None, "mention": []}
AT_ONCALL = replace(FIRING, channel="#oncall", mentions=("U123",))
"""FIRING as the dispatcher hands it to the notifier of the SLACK target (and to the fallback for it)."""


async def enqueue(store: StateStore, clock: FakeClock, body: dict[str, Any], version: int = 1) -> None:
    key = f"{body['key']}:v{version}:{body['level']}"
    assert await store.enqueue(NOTIFY_TOPIC, body, key, clock.now())


async def test_dispatcher_delivers_a_page_once(store: StateStore) -> None:
    clock = FakeClock()
    slack, log = RecordingNotifier("slack"), RecordingNotifier("log")
    dispatcher = Dispatcher(store, {"slack": slack, "log": log}, clock, "worker-1")
    await enqueue(store, clock, payload([SLACK, LOG]))

    assert await dispatcher.run_once() == 2  # every target is its own delivery
    assert slack.sent == [AT_ONCALL]  # the page rebuilt from the payload, field for field, plus its target
    assert log.sent == [FIRING]  # the log target was listed too (no channel): not a fallback
    assert await dispatcher.run_once() == 0
    clock.advance(3600)
    assert await dispatcher.run_once() == 0
    assert slack.sent == [AT_ONCALL] and slack.attempts == 1 and log.attempts == 1
    # The same incident version and level is never enqueued twice.
    assert not await store.enqueue(NOTIFY_TOPIC, payload([SLACK]), f"{FIRING.key}:v1:L1", clock.now())


async def test_dispatcher_delivers_firing_then_resolved_in_order(store: StateStore) -> None:
    clock = FakeClock()
    log = RecordingNotifier("log")
    dispatcher = Dispatcher(store, {"log": log}, clock, "worker-1")
    await enqueue(store, clock, payload([LOG]), version=1)
    clock.advance(60)
    await enqueue(store, clock, payload([LOG], state="resolved", level="L1"), version=2)
    assert await dispatcher.run_once() == 2
    assert [p.state for p in log.sent] == ["firing", "resolved"]


async def test_dispatcher_retries_a_transient_error_later(store: StateStore) -> None:
    clock = FakeClock()
    slack = RecordingNotifier("slack", failures=[NotifyError("slack answered 503", permanent=False)])
    log = RecordingNotifier("log")
    dispatcher = Dispatcher(store, {"slack": slack, "log": log}, clock, "worker-1")
    await enqueue(store, clock, payload([SLACK]))

    assert await dispatcher.run_once() == 0
    assert slack.sent == [] and log.sent == []  # transient: no fallback, retried later on the same channel
    assert slack.attempts == 1
    assert await dispatcher.run_once() == 0  # backing off: not claimed again at once
    clock.advance(1.5)
    assert await dispatcher.run_once() == 0  # first backoff is 2 s (2 ** attempts)
    assert slack.attempts == 1

    clock.advance(1.0)
    assert await dispatcher.run_once() == 1
    assert slack.sent == [AT_ONCALL] and log.sent == []
    assert slack.attempts == 2
    clock.advance(3600)
    assert await dispatcher.run_once() == 0
    assert slack.sent == [AT_ONCALL]


async def test_dispatcher_backoff_grows_with_attempts(store: StateStore) -> None:
    clock = FakeClock()
    errors = [NotifyError(f"503 #{i}", permanent=False) for i in range(3)]
    slack, log = RecordingNotifier("slack", failures=errors), RecordingNotifier("log")
    dispatcher = Dispatcher(store, {"slack": slack, "log": log}, clock, "worker-1")
    await enqueue(store, clock, payload([SLACK]))

    assert await dispatcher.run_once() == 0
    for backoff in (2.0, 4.0, 8.0):
        clock.advance(backoff - 0.5)
        assert await dispatcher.run_once() == 0
        clock.advance(0.5)
        delivered = await dispatcher.run_once()
        assert delivered == (1 if backoff == 8.0 else 0)
    assert slack.sent == [AT_ONCALL] and slack.attempts == 4 and log.sent == []


async def test_dispatcher_falls_back_on_a_permanent_error(store: StateStore) -> None:
    clock = FakeClock()
    slack = RecordingNotifier("slack", failures=[NotifyError("channel_not_found", permanent=True)])
    log = RecordingNotifier("log")
    dispatcher = Dispatcher(store, {"slack": slack, "log": log}, clock, "worker-1")
    await enqueue(store, clock, payload([SLACK]))

    assert await dispatcher.run_once() == 1
    assert slack.sent == [] and slack.attempts == 1
    # The fallback channel, although the level did not list it; the page still names the target it missed.
    assert log.sent == [AT_ONCALL]
    clock.advance(3600)
    assert await dispatcher.run_once() == 0
    assert slack.attempts == 1 and log.sent == [AT_ONCALL]


async def test_dispatcher_sends_to_the_fallback_when_no_target_is_configured(store: StateStore) -> None:
    clock = FakeClock()
    log = RecordingNotifier("log")
    dispatcher = Dispatcher(store, {"log": log}, clock, "worker-1")
    await enqueue(store, clock, payload([SLACK]))  # no slack notifier here
    assert await dispatcher.run_once() == 1
    assert log.sent == [AT_ONCALL]


async def test_dispatcher_retries_when_every_channel_fails_permanently(store: StateStore) -> None:
    clock = FakeClock()
    slack = RecordingNotifier("slack", failures=[NotifyError("channel_not_found", permanent=True)])
    log = RecordingNotifier("log", failures=[NotifyError("disk full", permanent=True)])
    dispatcher = Dispatcher(store, {"slack": slack, "log": log}, clock, "worker-1")
    await enqueue(store, clock, payload([SLACK]))

    assert await dispatcher.run_once() == 0
    assert slack.sent == [] and log.sent == []
    clock.advance(2.0)
    assert await dispatcher.run_once() == 1  # the next attempt walks the chain again
    assert slack.sent == [AT_ONCALL] and log.sent == []
    assert (slack.attempts, log.attempts) == (2, 1)


async def test_dispatcher_with_the_real_log_notifier(
    store: StateStore, page_records: Callable[[], list[logging.LogRecord]]
) -> None:
    clock = FakeClock()
    log = LogNotifier()
    dispatcher = Dispatcher(store, {"log": log}, clock, "worker-1")
    await enqueue(store, clock, payload([LOG]))
    assert await dispatcher.run_once() == 1
    assert list(log.sent) == [FIRING]
    (record,) = page_records()
    check_record(record, FIRING)


def test_dispatcher_needs_its_fallback_notifier() -> None:
    with pytest.raises(ValueError, match="fallback notifier 'log'"):
        Dispatcher(MemoryStore(), {"slack": RecordingNotifier("slack")}, FakeClock(), "worker-1")


# -- every target its own delivery; nothing lost, nothing stalled --------------------------------------------


async def test_dispatcher_pages_every_target_with_its_channel_and_mentions(store: StateStore) -> None:
    clock = FakeClock()
    slack, log = RecordingNotifier("slack"), RecordingNotifier("log")
    dispatcher = Dispatcher(store, {"slack": slack, "log": log}, clock, "worker-1")
    a = {"type": "slack", "channel": "#a", "mention": ["U1"]}
    b = {"type": "slack", "channel": "#b", "mention": ["S2", "W3"]}
    await enqueue(store, clock, payload([a, b]))

    assert await dispatcher.run_once() == 2
    assert slack.sent == [
        replace(FIRING, channel="#a", mentions=("U1",)),
        replace(FIRING, channel="#b", mentions=("S2", "W3")),
    ]
    assert log.sent == []  # both slack targets took it: neither is the other's fallback
    clock.advance(3600)
    assert await dispatcher.run_once() == 0
    assert slack.attempts == 2


async def test_dispatcher_never_resends_to_a_target_that_took_the_page(store: StateStore) -> None:
    clock = FakeClock()
    slack = RecordingNotifier("slack", failures=[NotifyError("slack answered 503", permanent=False)])
    log = RecordingNotifier("log")
    dispatcher = Dispatcher(store, {"slack": slack, "log": log}, clock, "worker-1")
    await enqueue(
        store, clock, payload([{"type": "slack", "channel": "#b"}, {"type": "slack", "channel": "#a"}])
    )

    assert await dispatcher.run_once() == 1  # #b failed transiently (the first send), #a took it
    assert [p.channel for p in slack.sent] == ["#a"]
    clock.advance(2.0)
    assert await dispatcher.run_once() == 1  # only #b is retried
    clock.advance(3600)
    assert await dispatcher.run_once() == 0
    assert [p.channel for p in slack.sent] == ["#a", "#b"] and slack.attempts == 3 and log.sent == []


async def test_dispatcher_a_malformed_item_does_not_block_the_next(
    store: StateStore, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    log = RecordingNotifier("log")
    dispatcher = Dispatcher(store, {"log": log}, clock, "worker-1")
    assert await store.enqueue(NOTIFY_TOPIC, {"title": 42, "targets": [LOG]}, "bad:1", clock.now())
    assert await store.enqueue(NOTIFY_TOPIC, {**payload([LOG]), "targets": "log"}, "bad:2", clock.now())
    await enqueue(store, clock, payload([LOG]))

    with caplog.at_level(logging.ERROR, logger="watchdog.notify.dispatch"):
        assert await dispatcher.run_once() == 1
    assert log.sent == [FIRING]
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 2 and all("malformed" in e for e in errors)
    assert "bad:1" in errors[0] and "'title': 42" in errors[0]  # the payload is in the log: nothing is lost
    clock.advance(3600)
    assert await dispatcher.run_once() == 0  # the malformed items were completed, not left claimed
    assert log.attempts == 1


async def test_dispatcher_a_notifier_bug_is_transient_and_does_not_stall_the_queue(store: StateStore) -> None:
    clock = FakeClock()
    slack = RecordingNotifier("slack", failures=[RuntimeError("bug in a notifier")])
    log = RecordingNotifier("log")
    dispatcher = Dispatcher(store, {"slack": slack, "log": log}, clock, "worker-1")
    await enqueue(store, clock, payload([SLACK]), version=1)
    await enqueue(store, clock, payload([SLACK], state="resolved"), version=2)

    assert await dispatcher.run_once() == 1  # the first raised, the second still went
    assert [p.state for p in slack.sent] == ["resolved"] and log.sent == []
    clock.advance(2.0)
    assert await dispatcher.run_once() == 1  # retried like a transient error
    assert [p.state for p in slack.sent] == ["resolved", "firing"]


async def test_dispatcher_delivers_to_the_fallback_after_max_attempts(
    store: StateStore, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    errors = [NotifyError(f"slack answered 503 #{i}", permanent=False) for i in range(MAX_ATTEMPTS)]
    slack, log = RecordingNotifier("slack", failures=errors), RecordingNotifier("log")
    dispatcher = Dispatcher(store, {"slack": slack, "log": log}, clock, "worker-1")
    await enqueue(store, clock, payload([SLACK]))

    delivered = []
    with caplog.at_level(logging.ERROR, logger="watchdog.notify.dispatch"):
        for _ in range(MAX_ATTEMPTS):
            delivered.append(await dispatcher.run_once())
            clock.advance(300)
    assert delivered == [0] * (MAX_ATTEMPTS - 1) + [1]
    assert slack.attempts == MAX_ATTEMPTS and slack.sent == []
    assert log.sent == [AT_ONCALL]  # delayed, never dropped
    (line,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert f"after {MAX_ATTEMPTS} attempts" in line and "delivering it to log instead" in line
    clock.advance(3600)
    assert await dispatcher.run_once() == 0 and slack.attempts == MAX_ATTEMPTS


async def test_dispatcher_keeps_the_page_when_even_the_fallback_fails(store: StateStore) -> None:
    clock = FakeClock()
    errors = [NotifyError("slack answered 503", permanent=False) for _ in range(MAX_ATTEMPTS + 1)]
    slack = RecordingNotifier("slack", failures=errors)
    log = RecordingNotifier("log", failures=[NotifyError("disk full", permanent=True)])
    dispatcher = Dispatcher(store, {"slack": slack, "log": log}, clock, "worker-1")
    await enqueue(store, clock, payload([SLACK]))

    for _ in range(MAX_ATTEMPTS):
        assert await dispatcher.run_once() == 0
        clock.advance(300)
    assert log.attempts == 1 and log.sent == []  # the fallback failed: the item is kept
    assert await dispatcher.run_once() == 1  # the next attempt: slack fails again, the fallback takes it
    assert log.sent == [AT_ONCALL] and slack.attempts == MAX_ATTEMPTS + 1

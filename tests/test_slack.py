"""Pages reach Slack: the real slack_sdk client (``SlackNotifier``, built by the registry from an environment
mapping) against the fake Slack Web API (``tests/slack_api.py``) on loopback, then the Dispatcher on a real
store delivering through it."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from loopback import closed_port
from slack_api import FakeSlackApi

from watchdog.core.clock import FakeClock
from watchdog.notify.base import NOTIFY_TOPIC, NotifyError, Page
from watchdog.notify.dispatch import MAX_ATTEMPTS, Dispatcher
from watchdog.notify.log import LogNotifier
from watchdog.notify.registry import build_notifiers
from watchdog.notify.slack import SlackNotifier, mention_markup
from watchdog.store.base import StateStore
from watchdog.store.memory import MemoryStore
from watchdog.store.sqlite import SqliteStore

TOKEN = "xoxb-1234-5678-SeCrEtToKeN"

PAGE = Page(
    key="alert:api-availability",
    title="api-availability",
    severity="critical",
    state="firing",
    summary="availability 97.20% < 99.90% (burn 14.4x over 1h & 5m)",
    runbook_url="https://runbooks.example.test/api-availability.md",
    labels={"service": "api", "cohort": "baseline"},
    level="L1",
    channel="#oncall",
    mentions=("U0ALICE", "S0ONCALL"),
    since="2026-12-02T03:00:00Z",
)


@pytest.fixture
async def api() -> AsyncIterator[tuple[FakeSlackApi, str]]:
    fake = FakeSlackApi(TOKEN)
    async with fake.running() as url:
        yield fake, url


def slack_from_env(url: str, token: str = TOKEN) -> SlackNotifier:
    notifiers = build_notifiers({"slack"}, {"SLACK_BOT_TOKEN": token, "SLACK_API_URL": url})
    slack = notifiers["slack"]
    assert isinstance(slack, SlackNotifier)
    return slack


def all_text(blocks: list[dict[str, Any]]) -> str:
    """Every text in the blocks, for assertions that do not care which block holds it."""
    out: list[str] = []
    for block in blocks:
        if "text" in block:
            out.append(block["text"]["text"])
        out.extend(f["text"] for f in block.get("fields", []))
        for element in block.get("elements", []):
            text = element["text"]
            out.append(text["text"] if isinstance(text, dict) else text)  # button labels are objects
    return "\n".join(out)


# -- building ------------------------------------------------------------------------------------------------


def test_slack_is_built_only_with_a_token() -> None:
    assert set(build_notifiers({"slack"}, {})) == {"log"}  # no token: slack targets go to the log
    assert set(build_notifiers({"slack"}, {"SLACK_BOT_TOKEN": "  "})) == {"log"}
    built = build_notifiers({"slack"}, {"SLACK_BOT_TOKEN": TOKEN})
    assert set(built) == {"log", "slack"} and built["slack"].name == "slack"
    assert set(build_notifiers({"log"}, {"SLACK_BOT_TOKEN": TOKEN})) == {"log"}  # only kinds a policy names


def test_mentions_are_decided_by_the_id_prefix() -> None:
    assert mention_markup("U024BE7LH") == "<@U024BE7LH>"
    assert mention_markup("W0ENTERPRISE") == "<@W0ENTERPRISE>"
    assert mention_markup("S0614TZR7") == "<!subteam^S0614TZR7>"
    assert mention_markup("here") == "<!here>" and mention_markup("@channel") == "<!channel>"
    assert mention_markup("<script>") == "&lt;script&gt;"  # anything else: plain text, no notification


# -- one page, end to end ------------------------------------------------------------------------------------


async def test_a_page_arrives_with_blocks_text_channel_and_mentions(api: tuple[FakeSlackApi, str]) -> None:
    fake, url = api
    await slack_from_env(url).send(PAGE)

    (request,) = fake.requests
    assert request.authorization == f"Bearer {TOKEN}" and request.method == "chat.postMessage"
    (post,) = fake.posts
    assert post.channel == "#oncall"
    assert post.text.startswith("<@U0ALICE> <!subteam^S0ONCALL> ")
    assert "FIRING [critical, L1] api-availability" in post.text
    assert "availability 97.20% &lt; 99.90% (burn 14.4x over 1h &amp; 5m)" in post.text  # escaped mrkdwn
    assert post.blocks[0] == {
        "type": "header",
        "text": {"type": "plain_text", "text": "🔴 api-availability", "emoji": True},
    }
    text = all_text(post.blocks)
    for expected in (
        "<@U0ALICE> <!subteam^S0ONCALL>",
        "*Severity*\ncritical",
        "*State*\nfiring",
        "*Level*\nL1",
        "*Since*\n2026-12-02T03:00:00Z",
        "availability 97.20% &lt; 99.90%",
        "`cohort=baseline`, `service=api`",
        "*Runbook:* <https://runbooks.example.test/api-availability.md|api-availability>",
    ):
        assert expected in text
    (actions,) = [b for b in post.blocks if b["type"] == "actions"]
    assert [(e["action_id"], e["text"]["text"], e["value"]) for e in actions["elements"]] == [
        ("watchdog_ack", "Acknowledge", "alert:api-availability"),
        ("watchdog_resolve", "Resolve", "alert:api-availability"),
        ("watchdog_silence_1h", "Silence 1 h", "alert:api-availability"),
    ]


async def test_a_resolved_page_with_a_local_runbook_shows_the_path(api: tuple[FakeSlackApi, str]) -> None:
    fake, url = api
    page = replace(PAGE, state="resolved", runbook_url="/srv/watchdog/runbooks/x.md", mentions=(), since="")
    await slack_from_env(url).send(page)
    (post,) = fake.posts
    assert post.text.startswith("✅ RESOLVED [critical, L1] api-availability")
    text = all_text(post.blocks)
    assert "*Runbook:* `/srv/watchdog/runbooks/x.md`" in text and "<@" not in text and "Since" not in text


async def test_form_encoded_bodies_are_understood_by_the_fake(api: tuple[FakeSlackApi, str]) -> None:
    """The fake accepts a form body too (slack_sdk sends JSON for chat.postMessage; other clients may not)."""
    import aiohttp

    fake, url = api
    form = {
        "channel": "#oncall",
        "text": "hi",
        "blocks": '[{"type": "section", "text": {"type": "mrkdwn", "text": "hi"}}]',
    }
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{url}chat.postMessage", data=form, headers={"Authorization": f"Bearer {TOKEN}"}) as r,
    ):
        assert (await r.json())["ok"] is True
    assert fake.posts[0].blocks[0]["text"]["text"] == "hi"


# -- retries by slack_sdk's handlers, and errors -------------------------------------------------------------


async def test_429_with_retry_after_is_retried_by_the_handler_and_delivered_once(
    api: tuple[FakeSlackApi, str],
) -> None:
    fake, url = api
    fake.fail_next("429")
    started = time.monotonic()
    await slack_from_env(url).send(PAGE)
    assert time.monotonic() - started >= 1.0  # Retry-After: 1 was honoured
    assert [r.answer for r in fake.requests] == ["429", "ok"]
    assert len(fake.posts) == 1


async def test_500_then_ok_is_delivered_once(api: tuple[FakeSlackApi, str]) -> None:
    fake, url = api
    fake.fail_next("500")
    await slack_from_env(url).send(PAGE)
    assert [r.answer for r in fake.requests] == ["500", "ok"]
    assert len(fake.posts) == 1


async def test_rate_limited_beyond_the_handlers_retries_is_transient(api: tuple[FakeSlackApi, str]) -> None:
    fake, url = api
    fake.fail_next("429", "429")
    with pytest.raises(NotifyError) as info:
        await SlackNotifier(TOKEN, api_url=url, rate_limit_retries=1).send(PAGE)
    assert info.value.permanent is False and "429" in str(info.value)
    assert fake.posts == [] and len(fake.requests) == 2


async def test_persistent_500_is_transient(api: tuple[FakeSlackApi, str]) -> None:
    fake, url = api
    fake.fail_next("500", "500")
    with pytest.raises(NotifyError) as info:
        await SlackNotifier(TOKEN, api_url=url, server_error_retries=1).send(PAGE)
    assert info.value.permanent is False and "HTTP 500" in str(info.value)
    assert fake.posts == []


@pytest.mark.parametrize("code", ["invalid_auth", "channel_not_found", "not_in_channel", "is_archived"])
async def test_errors_retrying_cannot_fix_are_permanent(api: tuple[FakeSlackApi, str], code: str) -> None:
    fake, url = api
    fake.fail_next(code)
    with pytest.raises(NotifyError) as info:
        await slack_from_env(url).send(PAGE)
    assert info.value.permanent is True and code in str(info.value) and "#oncall" in str(info.value)
    assert TOKEN not in str(info.value)
    assert len(fake.requests) == 1  # not retried by any handler


async def test_a_wrong_token_is_refused_by_the_api_and_never_shown(api: tuple[FakeSlackApi, str]) -> None:
    fake, url = api
    wrong = "xoxb-9999-wrong-TOKEN"
    with pytest.raises(NotifyError) as info:
        await slack_from_env(url, token=wrong).send(PAGE)
    assert info.value.permanent is True and "invalid_auth" in str(info.value)
    assert wrong not in str(info.value) and fake.posts == []


async def test_an_unknown_slack_error_is_transient(api: tuple[FakeSlackApi, str]) -> None:
    fake, url = api
    fake.fail_next("fatal_error")
    with pytest.raises(NotifyError) as info:
        await slack_from_env(url).send(PAGE)
    assert info.value.permanent is False and "fatal_error" in str(info.value)


async def test_a_hanging_api_is_a_bounded_transient_error(api: tuple[FakeSlackApi, str]) -> None:
    fake, url = api
    fake.fail_next("hang", "hang")
    started = time.monotonic()
    with pytest.raises(NotifyError) as info:
        await SlackNotifier(TOKEN, api_url=url, timeout_s=1).send(PAGE)
    assert time.monotonic() - started < 5  # bounded by the request timeout (at most one handler retry)
    assert info.value.permanent is False and "timed out" in str(info.value)
    assert fake.posts == []


async def test_a_refused_connection_is_transient() -> None:
    url = f"http://127.0.0.1:{closed_port()}/api/"
    with pytest.raises(NotifyError) as info:
        await SlackNotifier(TOKEN, api_url=url, timeout_s=2).send(PAGE)
    assert info.value.permanent is False and TOKEN not in str(info.value)


async def test_a_page_without_a_channel_is_refused_permanently(api: tuple[FakeSlackApi, str]) -> None:
    fake, url = api
    with pytest.raises(NotifyError) as info:
        await slack_from_env(url).send(replace(PAGE, channel=""))
    assert info.value.permanent is True and fake.requests == []


async def test_the_token_never_appears_in_any_log(
    api: tuple[FakeSlackApi, str], caplog: pytest.LogCaptureFixture
) -> None:
    fake, url = api
    fake.fail_next("500", "500", "500", "invalid_auth", "fatal_error", "429")
    slack = slack_from_env(url)
    with caplog.at_level(logging.DEBUG):  # slack_sdk logs requests at DEBUG
        for _ in range(3):  # 500 three times (the handler's two retries), invalid_auth, fatal_error
            with pytest.raises(NotifyError) as info:
                await slack.send(PAGE)
            logging.getLogger("test").error("send failed: %s", info.value)
        await slack.send(PAGE)  # 429, then delivered
    assert len(fake.posts) == 1 and len(fake.requests) == 7
    assert sum("send failed" in r.getMessage() for r in caplog.records) == 3
    assert all(TOKEN not in r.getMessage() for r in caplog.records)
    assert TOKEN not in caplog.text


# -- the dispatcher delivering through Slack ----------------------------------------------------------------


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StateStore]:
    s: StateStore = MemoryStore() if request.param == "memory" else SqliteStore(tmp_path / "s.db")
    await s.open()
    try:
        yield s
    finally:
        await s.close()


def payload(*targets: dict[str, Any]) -> dict[str, Any]:
    """The shape IncidentManager._enqueue_pages writes."""
    return {
        "key": PAGE.key,
        "title": PAGE.title,
        "severity": PAGE.severity,
        "state": PAGE.state,
        "summary": PAGE.summary,
        "runbook_url": PAGE.runbook_url,
        "labels": dict(PAGE.labels),
        "level": "L1",
        "targets": list(targets),
    }


A = {"type": "slack", "channel": "#a", "mention": ["U0ALICE"]}
B = {"type": "slack", "channel": "#b", "mention": ["S0LEADS"]}


async def test_two_slack_targets_are_both_posted_once(
    store: StateStore, api: tuple[FakeSlackApi, str]
) -> None:
    fake, url = api
    clock, log = FakeClock(), LogNotifier()
    dispatcher = Dispatcher(store, {"slack": slack_from_env(url), "log": log}, clock, "w")
    assert await store.enqueue(NOTIFY_TOPIC, payload(A, B), "alert:api-availability:v1:L1", clock.now())

    assert await dispatcher.run_once() == 2
    clock.advance(3600)
    assert await dispatcher.run_once() == 0
    assert [p.channel for p in fake.posts] == ["#a", "#b"]
    assert fake.posts[0].text.startswith("<@U0ALICE> ")
    assert fake.posts[1].text.startswith("<!subteam^S0LEADS> ")
    assert not log.sent


async def test_one_target_failing_then_recovering_does_not_duplicate_the_other(
    store: StateStore, api: tuple[FakeSlackApi, str]
) -> None:
    fake, url = api
    clock, log = FakeClock(), LogNotifier()
    dispatcher = Dispatcher(store, {"slack": slack_from_env(url), "log": log}, clock, "w")
    fake.fail_next("fatal_error", "fatal_error", channel="#b")
    assert await store.enqueue(NOTIFY_TOPIC, payload(A, B), "alert:api-availability:v1:L1", clock.now())

    assert await dispatcher.run_once() == 1
    for _ in range(2):
        clock.advance(300)
        await dispatcher.run_once()
    clock.advance(3600)
    assert await dispatcher.run_once() == 0
    assert [p.channel for p in fake.posts] == ["#a", "#b"]  # #a once, #b once after its recovery
    assert [r.answer for r in fake.requests] == ["ok", "fatal_error", "fatal_error", "ok"]
    assert not log.sent


async def test_a_permanent_slack_error_falls_back_to_the_log(
    store: StateStore, api: tuple[FakeSlackApi, str], caplog: pytest.LogCaptureFixture
) -> None:
    fake, url = api
    clock, log = FakeClock(), LogNotifier()
    dispatcher = Dispatcher(store, {"slack": slack_from_env(url), "log": log}, clock, "w")
    fake.fail_next("channel_not_found")
    assert await store.enqueue(NOTIFY_TOPIC, payload(A), "alert:api-availability:v1:L1", clock.now())

    with caplog.at_level(logging.DEBUG):
        assert await dispatcher.run_once() == 1
    assert fake.posts == [] and [(p.key, p.channel) for p in log.sent] == [(PAGE.key, "#a")]
    assert any(
        "channel_not_found" in m and "delivering it to log" in m
        for m in (r.getMessage() for r in caplog.records)
    )
    assert TOKEN not in caplog.text


async def test_a_malformed_item_does_not_block_a_good_one_behind_it(
    store: StateStore, api: tuple[FakeSlackApi, str]
) -> None:
    fake, url = api
    clock, log = FakeClock(), LogNotifier()
    dispatcher = Dispatcher(store, {"slack": slack_from_env(url), "log": log}, clock, "w")
    assert await store.enqueue(NOTIFY_TOPIC, {"targets": [A]}, "broken:v1:L1", clock.now())
    assert await store.enqueue(NOTIFY_TOPIC, payload(A), "alert:api-availability:v1:L1", clock.now())

    assert await dispatcher.run_once() == 1
    assert [p.channel for p in fake.posts] == ["#a"]
    clock.advance(3600)
    assert await dispatcher.run_once() == 0


async def test_a_slack_outage_delays_the_page_to_the_log_never_drops_it(
    store: StateStore, api: tuple[FakeSlackApi, str]
) -> None:
    fake, url = api
    clock, log = FakeClock(), LogNotifier()
    dispatcher = Dispatcher(store, {"slack": slack_from_env(url), "log": log}, clock, "w")
    fake.fail_next(*["fatal_error"] * MAX_ATTEMPTS)
    assert await store.enqueue(NOTIFY_TOPIC, payload(A), "alert:api-availability:v1:L1", clock.now())

    for _ in range(MAX_ATTEMPTS - 1):
        assert await dispatcher.run_once() == 0
        clock.advance(300)
    assert not log.sent
    assert await dispatcher.run_once() == 1
    assert [(p.key, p.channel, p.mentions) for p in log.sent] == [(PAGE.key, "#a", ("U0ALICE",))]
    assert len(fake.requests) == MAX_ATTEMPTS and fake.posts == []

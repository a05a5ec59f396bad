"""The watchdog watching itself: its store down paged once, straight through the notifiers; a failing
notifier and a stalled scheduler as incidents, resolved when they recover; the heartbeat, sent only while
healthy; ``watchdog page --test`` end to end against the fake Slack Web API; ``validate``'s warnings."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

from click.testing import CliRunner
from loopback import serve_asgi
from slack_api import FakeSlackApi
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from watchdog.cli.main import main
from watchdog.config.loader import WatchdogConfig, load_config
from watchdog.config.settings import Heartbeat
from watchdog.core.clock import FakeClock
from watchdog.incidents.manager import AlertSpec, IncidentManager
from watchdog.notify.base import NotifyError
from watchdog.notify.dispatch import FAILING_AFTER, Dispatcher
from watchdog.notify.fake import RecordingNotifier
from watchdog.runtime.selfwatch import (
    NOTIFIER_FAILING,
    SCHEDULER_STALLED,
    STALL_CLEAR_S,
    STORE_DOWN_AFTER_S,
    HeartbeatSender,
    SelfWatch,
)
from watchdog.runtime.wiring import deployment_warnings
from watchdog.store.memory import MemoryStore

REPO = Path(__file__).resolve().parents[1]


def _config(root: Path, settings: str = "") -> WatchdogConfig:
    (root / "probes").mkdir(parents=True)
    (root / "alerts").mkdir()
    (root / "probes" / "p.yaml").write_text("probes:\n  - {name: api, kind: http, url: 'http://127.0.0.1:9/'}\n")
    (root / "alerts" / "e.yaml").write_text(
        "escalation:\n  - name: default\n    levels:\n"
        "      - {level: L1, who: dev team, notify: [{type: slack, channel: '#l1', mention: [U0DEV]}]}\n"
        "      - {level: L2, who: lead, notify: [{type: slack, channel: '#l2'}]}\n"
    )
    if settings:
        (root / "watchdog.yaml").write_text(settings)
    return load_config(root)


async def test_store_down_pages_once_directly_and_says_when_it_is_back(tmp_path: Path) -> None:
    config = _config(tmp_path / "c")
    clock, store = FakeClock(), MemoryStore()
    slack = RecordingNotifier("slack")
    watch = SelfWatch(config, IncidentManager(config, store, clock), {"slack": slack}, clock, "replica-a")
    await watch.store_failed("connection refused")
    clock.advance(STORE_DOWN_AFTER_S - 1)
    await watch.store_failed("connection refused")
    assert slack.sent == [], "a blip is not paged"
    clock.advance(2)
    for _ in range(3):
        await watch.store_failed("connection refused")
    (page,) = slack.sent
    assert (page.title, page.state, page.channel, page.mentions) == (
        "watchdog-store-unavailable",
        "firing",
        "#l1",
        ("U0DEV",),
    )
    assert "has not answered for 61 s (connection refused)" in page.summary
    assert not watch.healthy(5.0)
    await watch.store_ok()
    assert [p.state for p in slack.sent] == ["firing", "resolved"]
    await watch.store_ok()
    assert len(slack.sent) == 2, "recovered once"


async def test_a_failing_notifier_becomes_an_incident_and_resolves_when_it_delivers(tmp_path: Path) -> None:
    config = _config(tmp_path / "c")
    clock, store = FakeClock(), MemoryStore()
    slack, log = RecordingNotifier("slack"), RecordingNotifier("log")
    manager = IncidentManager(config, store, clock)
    dispatcher = Dispatcher(store, {"slack": slack, "log": log}, clock, "w")
    watch = SelfWatch(config, manager, {"slack": slack, "log": log}, clock, "replica-a")
    slack.fail_next(NotifyError("channel_not_found", permanent=True))
    await manager.fire(AlertSpec(key="alert:x", alert="x", severity="warning", policy="default", summary="x"))
    await dispatcher.run_once()
    assert dispatcher.failing == {"slack": "channel_not_found"}
    assert [p.title for p in log.sent] == ["x"], "the page itself went to the log"
    await watch.notifiers_checked(dispatcher.failing)
    incident = await manager.get(f"watchdog:{NOTIFIER_FAILING}:slack")
    assert incident is not None and incident.state == "firing"
    assert "channel_not_found" in incident.data["summary"]
    await dispatcher.run_once()  # its own page: slack delivers again
    assert dispatcher.failing == {}
    await watch.notifiers_checked(dispatcher.failing)
    incident = await manager.get(f"watchdog:{NOTIFIER_FAILING}:slack")
    assert incident is not None and incident.state == "resolved"


async def test_transient_failures_count_as_failing_after_a_streak(tmp_path: Path) -> None:
    config = _config(tmp_path / "c")
    clock, store = FakeClock(), MemoryStore()
    slack, log = RecordingNotifier("slack"), RecordingNotifier("log")
    dispatcher = Dispatcher(store, {"slack": slack, "log": log}, clock, "w")
    manager = IncidentManager(config, store, clock)
    slack.fail_next(*[NotifyError("HTTP 500", permanent=False)] * FAILING_AFTER)
    await manager.fire(AlertSpec(key="alert:x", alert="x", severity="warning", policy="default", summary="x"))
    for _ in range(FAILING_AFTER):
        assert "slack" not in dispatcher.failing
        await dispatcher.run_once()
        clock.advance(400)
    assert dispatcher.failing == {"slack": "HTTP 500"}


async def test_a_stalled_scheduler_is_an_incident_until_on_time_again(tmp_path: Path) -> None:
    config = _config(tmp_path / "c")
    clock, store = FakeClock(), MemoryStore()
    manager = IncidentManager(config, store, clock)
    watch = SelfWatch(config, manager, {}, clock, "replica-a")
    key = f"watchdog:{SCHEDULER_STALLED}:replica-a"
    for _ in range(3):
        await watch.evaluation_ran(5.0)
        clock.advance(5)
    assert await manager.get(key) is None
    assert watch.healthy(5.0)
    clock.advance(40)  # the loop was starved: 45 s between evaluations
    assert not watch.healthy(5.0), "late: the heartbeat is withheld"
    await watch.evaluation_ran(5.0)
    incident = await manager.get(key)
    assert incident is not None and incident.state == "firing"
    assert "ran 45 s after the previous one" in incident.data["summary"]
    while clock.now() < incident.updated_at + STALL_CLEAR_S:
        clock.advance(5)
        await watch.evaluation_ran(5.0)
    incident = await manager.get(key)
    assert incident is not None and incident.state == "resolved"


async def test_heartbeat_pings_and_reports_failures() -> None:
    hits: list[str] = []
    status = {"code": 200}

    async def ping(request: Request) -> Response:
        hits.append(request.method)
        return PlainTextResponse("OK", status_code=status["code"])

    app = Starlette(routes=[Route("/ping/abc", ping, methods=["GET", "POST", "HEAD"])])
    async with serve_asgi(app) as url:
        sender = HeartbeatSender(Heartbeat(url=f"{url}/ping/abc", method="POST", timeout=2))
        try:
            assert await sender.beat()
            status["code"] = 500
            assert not await sender.beat()
        finally:
            await sender.aclose()
    assert hits == ["POST", "POST"] and (sender.sent, sender.failed) == (1, 1)


def test_heartbeat_and_self_escalation_are_settings(tmp_path: Path) -> None:
    config = _config(
        tmp_path / "c",
        "heartbeat: {url: 'https://hc-ping.example/abc', every: 1m}\nself_escalation: default\n",
    )
    assert config.settings.heartbeat == Heartbeat(url="https://hc-ping.example/abc", every=60.0)


def test_validate_warns_when_slack_is_named_but_no_token_is_set(tmp_path: Path) -> None:
    config = _config(tmp_path / "c")
    warnings = deployment_warnings(config, {})
    assert any("pages Slack but SLACK_BOT_TOKEN is not set" in w for w in warnings)
    assert any("SLACK_SIGNING_SECRET is not set" in w for w in warnings)
    assert deployment_warnings(config, {"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": "s"}) == []
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLACK_")}
    out = CliRunner().invoke(main, ["validate", "--config", str(tmp_path / "c")], env=env)
    assert out.exit_code == 0, out.output
    assert "warning: escalation default pages Slack but SLACK_BOT_TOKEN is not set" in out.output


async def _cli(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "watchdog",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_page_test_reaches_slack_and_reports_the_round_trip(tmp_path: Path) -> None:
    _config(tmp_path / "c")
    fake = FakeSlackApi("xoxb-page-test")
    async with fake.running() as api_url:
        env = {**os.environ, "SLACK_BOT_TOKEN": "xoxb-page-test", "SLACK_API_URL": api_url}
        code, out, err = await _cli("page", "--test", "--config", str(tmp_path / "c"), "--json", env=env)
        assert code == 0, err
        (delivery,) = json.loads(out)
        assert delivery["ok"] and delivery["target"] == "slack #l1" and delivery["round_trip_ms"] > 0
        (post,) = fake.posts
        assert post.channel == "#l1" and "watchdog test page" in post.text and "<@U0DEV>" in post.text
        fake.fail_next("channel_not_found")
        config_dir = str(tmp_path / "c")
        code, out, err = await _cli("page", "--test", "--level", "L2", "--config", config_dir, env=env)
        assert code == 1 and "FAIL slack #l2" in out and "channel_not_found" in out
        code, out, err = await _cli("page", "--test", "--level", "L3", "--config", config_dir, env=env)
        assert code == 2 and "has no level L3" in err

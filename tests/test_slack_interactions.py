"""The Slack buttons (``POST /slack/interactions``): signed clicks on a page act on the incident, everything
else changes nothing. The real daemon (``wire`` + ``Daemon``, not started: no evaluation moves the
incidents under the test) on a SQLite store, its HTTP face (``create_app``) served by ``HttpServer`` in its
own thread as in production, clicks signed as Slack signs them, and the dispatcher delivering the thread
notes to a recording Slack channel."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode

import httpx
import pytest
from loopback import serve_asgi
from slack_sdk.signature import Clock as SlackClock
from slack_sdk.signature import SignatureVerifier
from starlette.applications import Starlette

from watchdog.config import load_config
from watchdog.config.loader import WatchdogConfig
from watchdog.core.clock import FakeClock, SystemClock
from watchdog.incidents.manager import AlertSpec, IncidentManager
from watchdog.notify.fake import RecordingNotifier
from watchdog.notify.log import LogNotifier
from watchdog.runtime.daemon import Daemon
from watchdog.runtime.wiring import wire
from watchdog.store import Incident, SqliteStore
from watchdog.web.app import create_app
from watchdog.web.server import HttpServer
from watchdog.web.slack_interactions import slack_interaction_routes

REPO = Path(__file__).resolve().parent.parent
SECRET = "e2b4c6d8f0a1b3c5d7e9f1a3b5c7d9e1"
KEY = "alert:app-down"
USER_ID = "U2CERLKJA"
T = TypeVar("T")

# Slack's documented example (https://api.slack.com/authentication/verifying-requests-from-slack).
EXAMPLE_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
EXAMPLE_TIMESTAMP = 1531420618
EXAMPLE_BODY = (
    "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&"
    "channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&"
    "response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&"
    "trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c"
)
EXAMPLE_SIGNATURE = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"


def slack_signature(secret: str, timestamp: str, body: bytes) -> str:
    """Computed here as Slack's documentation says, independently of slack_sdk."""
    base = f"v0:{timestamp}:".encode() + body
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


def signed(body: bytes, *, secret: str = SECRET, at: float | None = None) -> dict[str, str]:
    timestamp = str(int(time.time() if at is None else at))
    return {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Slack-Request-Timestamp": timestamp,
        "X-Slack-Signature": slack_signature(secret, timestamp, body),
    }


def click_payload(action_id: str, key: str = KEY, user_id: str = USER_ID) -> dict[str, Any]:
    """A block_actions payload as Slack sends it for a button on a page (trimmed of fields we ignore)."""
    return {
        "type": "block_actions",
        "user": {"id": user_id, "username": "roadrunner", "name": "roadrunner", "team_id": "T1DC2JH3J"},
        "api_app_id": "A0WATCHDOG",
        "team": {"id": "T1DC2JH3J", "domain": "testteamnow"},
        "channel": {"id": "CAISQUAREONCALL", "name": "ai-square-oncall"},
        "container": {"type": "message", "message_ts": "1.000001", "channel_id": "CAISQUAREONCALL"},
        "trigger_id": "398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c",
        "response_url": "https://hooks.slack.com/actions/T1DC2JH3J/1/x",
        "actions": [
            {
                "type": "button",
                "action_id": action_id,
                "block_id": "watchdog_incident",
                "text": {"type": "plain_text", "text": "Acknowledge"},
                "value": key,
                "action_ts": "1531420618.000001",
            }
        ],
    }


def form(payload: Any) -> bytes:
    return urlencode({"payload": payload if isinstance(payload, str) else json.dumps(payload)}).encode()


@dataclass
class Rig:
    daemon: Daemon
    store: SqliteStore
    slack: RecordingNotifier
    client: httpx.AsyncClient

    @property
    def manager(self) -> IncidentManager:
        return self.daemon.incidents

    async def incident(self, key: str = KEY) -> Incident:
        incident = await self.store.get_incident(key)
        assert incident is not None
        return incident

    async def click(self, action_id: str, key: str = KEY) -> httpx.Response:
        body = form(click_payload(action_id, key))
        return await self.client.post("/slack/interactions", content=body, headers=signed(body))

    async def deliver(self) -> int:
        return await self.daemon.dispatcher.run_once(limit=100)


def example_config() -> WatchdogConfig:
    return load_config(REPO, environ={"TARGET_BASE_URL": "https://svc.example"})


async def fire(manager: IncidentManager, key: str = KEY, alert: str = "app-down") -> None:
    spec = AlertSpec(
        key=key,
        alert=alert,
        severity="critical",
        policy="default",
        summary=f"{alert}: /api/simple-health is failing",
        labels={"probe": "liveness"},
    )
    assert await manager.fire(spec) is not None


@contextlib.asynccontextmanager
async def running(tmp_path: Path, env: dict[str, str]) -> AsyncIterator[Rig]:
    """The daemon's HTTP face with ``env``, one firing incident (KEY) whose pages were delivered."""
    store = SqliteStore(tmp_path / "state.db")
    await store.open()
    slack = RecordingNotifier("slack")
    daemon = Daemon(
        wire(
            example_config(),
            store=store,
            clock=SystemClock(),
            probes=[],
            notifiers={"slack": slack, "log": LogNotifier()},
            env={},
        )
    )
    http = HttpServer(create_app(daemon, env=env), "127.0.0.1:0")
    url = await http.start()
    try:
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            rig = Rig(daemon, store, slack, client)
            await fire(rig.manager)
            await rig.deliver()
            yield rig
    finally:
        await http.stop()
        await store.close()


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    async with running(tmp_path, {"SLACK_SIGNING_SECRET": SECRET}) as rig:
        yield rig


class _FixedSlackClock(SlackClock):
    def __init__(self, at: float) -> None:
        self.at = at

    def now(self) -> float:
        return self.at


class SameLoop:
    """The daemon's loop is the test's loop here (web.app's runner does this when called on its own loop)."""

    async def run(self, make: Callable[[], Coroutine[Any, Any, T]]) -> T:
        return await make()


# -- the signature -------------------------------------------------------------------------------------


def test_slacks_documented_example_signature_verifies() -> None:
    body = EXAMPLE_BODY.encode()
    timestamp = str(EXAMPLE_TIMESTAMP)
    assert slack_signature(EXAMPLE_SECRET, timestamp, body) == EXAMPLE_SIGNATURE
    verifier = SignatureVerifier(EXAMPLE_SECRET, clock=_FixedSlackClock(EXAMPLE_TIMESTAMP))
    assert verifier.is_valid(body=body, timestamp=timestamp, signature=EXAMPLE_SIGNATURE)
    assert not verifier.is_valid(body=body + b"x", timestamp=timestamp, signature=EXAMPLE_SIGNATURE)
    five_minutes_later = SignatureVerifier(EXAMPLE_SECRET, clock=_FixedSlackClock(EXAMPLE_TIMESTAMP + 301))
    assert not five_minutes_later.is_valid(body=body, timestamp=timestamp, signature=EXAMPLE_SIGNATURE)


async def test_the_route_checks_slacks_example_with_its_clock(rig: Rig) -> None:
    """Slack's example request at its own time passes the signature check (then is refused as what it is,
    a slash command rather than a button click); one byte changed, or 6 minutes later, it does not."""
    routes = slack_interaction_routes(
        rig.daemon,
        SameLoop(),
        {"SLACK_SIGNING_SECRET": EXAMPLE_SECRET},
        clock=FakeClock(EXAMPLE_TIMESTAMP),
    )
    later = slack_interaction_routes(
        rig.daemon,
        SameLoop(),
        {"SLACK_SIGNING_SECRET": EXAMPLE_SECRET},
        clock=FakeClock(EXAMPLE_TIMESTAMP + 360),
    )
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Slack-Request-Timestamp": str(EXAMPLE_TIMESTAMP),
        "X-Slack-Signature": EXAMPLE_SIGNATURE,
    }
    async with serve_asgi(Starlette(routes=routes)) as url, httpx.AsyncClient(base_url=url) as client:
        genuine = await client.post("/slack/interactions", content=EXAMPLE_BODY, headers=headers)
        assert genuine.status_code == 400, genuine.text
        assert "expected one form field 'payload'" in genuine.text
        tampered = await client.post("/slack/interactions", content=EXAMPLE_BODY + "&x=1", headers=headers)
        assert tampered.status_code == 401
    async with serve_asgi(Starlette(routes=later)) as url, httpx.AsyncClient(base_url=url) as client:
        replayed = await client.post("/slack/interactions", content=EXAMPLE_BODY, headers=headers)
        assert replayed.status_code == 401


# -- clicks --------------------------------------------------------------------------------------------


async def test_a_click_acknowledges_and_records_the_slack_user(rig: Rig) -> None:
    before = len(rig.slack.sent)
    answer = await rig.click("watchdog_ack")
    assert answer.status_code == 200
    assert answer.json()["status"] == "done"
    assert "acknowledged by slack:U2CERLKJA" in answer.json()["text"]
    incident = await rig.incident()
    assert incident.state == "acknowledged"
    assert incident.data["acked_by"] == f"slack:{USER_ID}"
    assert incident.data["next_escalation_at"] is None, "an acknowledgement stops the escalation"
    # The visible confirmation: a note in the thread of every level paged (critical: L1 and L3).
    await rig.deliver()
    notes = rig.slack.sent[before:]
    assert sorted(p.channel for p in notes) == ["#ai-square-critical", "#ai-square-oncall"]
    assert all(p.event == "acknowledged" and p.thread_ref is not None for p in notes)
    assert all(p.actor == f"slack:{USER_ID}" and p.note.startswith("acknowledged by") for p in notes)


async def test_a_double_click_changes_nothing(rig: Rig) -> None:
    assert (await rig.click("watchdog_ack")).json()["status"] == "done"
    await rig.deliver()
    acknowledged = await rig.incident()
    again = await rig.click("watchdog_ack")
    assert again.status_code == 200
    assert again.json()["status"] == "unchanged"
    assert f"already acknowledged by slack:{USER_ID}" in again.json()["text"]
    assert (await rig.incident()).version == acknowledged.version
    assert await rig.deliver() == 0, "no second note in the thread"


async def test_acknowledging_a_resolved_incident_changes_nothing(rig: Rig) -> None:
    resolved = await rig.click("watchdog_resolve")
    assert resolved.json()["status"] == "done"
    incident = await rig.incident()
    assert incident.state == "resolved" and incident.data["resolved_by"] == f"slack:{USER_ID}"
    late_ack = await rig.click("watchdog_ack")
    assert late_ack.status_code == 200
    assert late_ack.json()["status"] == "conflict"
    assert "already resolved" in late_ack.json()["text"]
    after = await rig.incident()
    assert (after.state, after.version) == ("resolved", incident.version)
    assert (await rig.click("watchdog_resolve")).json()["status"] == "unchanged"


async def test_an_unknown_incident_is_an_answer_not_an_error(rig: Rig) -> None:
    answer = await rig.click("watchdog_ack", key="alert:no-such-alert")
    assert answer.status_code == 200
    assert answer.json()["status"] == "not_found"
    assert "no incident 'alert:no-such-alert'" in answer.json()["text"]
    assert await rig.store.get_incident("alert:no-such-alert") is None
    assert [i.key for i in await rig.store.list_incidents()] == [KEY]


async def test_the_silence_button_silences_the_alert_for_an_hour_and_mutes_the_incident(rig: Rig) -> None:
    answer = await rig.click("watchdog_silence_1h")
    assert answer.status_code == 200 and answer.json()["status"] == "done", answer.text
    (silence,) = await rig.manager.silences.all()
    assert silence.ends_at - silence.starts_at == 3600
    assert silence.author == f"slack:{USER_ID}"
    assert dict(silence.matchers) == {"alertname": "app-down", "probe": "liveness"}
    assert "roadrunner" in silence.reason
    incident = await rig.incident()
    assert incident.state == "firing", "silenced, not acknowledged"
    muted_by = incident.data["muted_by"]
    assert (muted_by["kind"], muted_by["name"]) == ("silence", silence.id)
    assert incident.data["next_escalation_at"] is None, "a muted incident does not escalate"


# -- refused requests ----------------------------------------------------------------------------------


async def _unchanged(rig: Rig, before: Incident) -> None:
    after = await rig.incident()
    assert (after.state, after.version) == (before.state, before.version)
    assert await rig.manager.silences.all() == []


def _bad_signatures(body: bytes) -> Iterator[tuple[str, dict[str, str]]]:
    yield "wrong secret", signed(body, secret="another-apps-secret")
    yield "no headers", {"Content-Type": "application/x-www-form-urlencoded"}
    good = signed(body)
    yield "no signature", {k: v for k, v in good.items() if k != "X-Slack-Signature"}
    yield "no timestamp", {k: v for k, v in good.items() if k != "X-Slack-Request-Timestamp"}
    yield "timestamp not a number", {**good, "X-Slack-Request-Timestamp": "soon"}
    yield "signature of another body", signed(form(click_payload("watchdog_resolve")))
    yield (
        "signature scheme v1",
        {**good, "X-Slack-Signature": good["X-Slack-Signature"].replace("v0=", "v1=")},
    )


async def test_missing_or_wrong_signatures_are_refused(rig: Rig) -> None:
    before = await rig.incident()
    body = form(click_payload("watchdog_ack"))
    for case, headers in _bad_signatures(body):
        answer = await rig.client.post("/slack/interactions", content=body, headers=headers)
        assert answer.status_code == 401, case
    await _unchanged(rig, before)


async def test_a_replayed_request_is_refused(rig: Rig) -> None:
    """A genuine click captured and sent again 6 minutes later: the signature is valid, the time is not."""
    before = await rig.incident()
    body = form(click_payload("watchdog_resolve"))
    replayed = await rig.client.post(
        "/slack/interactions", content=body, headers=signed(body, at=time.time() - 360)
    )
    assert replayed.status_code == 401
    await _unchanged(rig, before)
    from_the_future = await rig.client.post(
        "/slack/interactions", content=body, headers=signed(body, at=time.time() + 360)
    )
    assert from_the_future.status_code == 401
    await _unchanged(rig, before)
    # The same click, four minutes old, is still within Slack's window.
    recent = await rig.client.post(
        "/slack/interactions", content=body, headers=signed(body, at=time.time() - 240)
    )
    assert recent.status_code == 200 and recent.json()["status"] == "done"


async def test_an_oversized_body_is_refused_before_anything_is_parsed(rig: Rig) -> None:
    before = await rig.incident()
    payload = click_payload("watchdog_ack")
    payload["padding"] = "x" * (70 * 1024)
    body = form(payload)
    answer = await rig.client.post("/slack/interactions", content=body, headers=signed(body))
    assert answer.status_code == 413

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it arrives
        for start in range(0, len(body), 8192):
            yield body[start : start + 8192]

    streamed = await rig.client.post("/slack/interactions", content=chunks(), headers=signed(body))
    assert streamed.status_code == 413
    await _unchanged(rig, before)


def _malformed() -> Iterator[tuple[str, bytes]]:
    yield "payload not JSON", form("{not json")
    yield "payload a JSON list", form([click_payload("watchdog_ack")])
    yield "another interaction type", form({**click_payload("watchdog_ack"), "type": "view_submission"})
    yield "no actions", form({k: v for k, v in click_payload("watchdog_ack").items() if k != "actions"})
    yield "empty actions", form({**click_payload("watchdog_ack"), "actions": []})
    yield "actions not objects", form({**click_payload("watchdog_ack"), "actions": ["watchdog_ack"]})
    yield "unknown action_id", form(click_payload("watchdog_delete_everything"))
    no_value = click_payload("watchdog_ack")
    del no_value["actions"][0]["value"]
    yield "no value", form(no_value)
    yield "no user", form({k: v for k, v in click_payload("watchdog_ack").items() if k != "user"})
    yield "no payload field", urlencode({"token": "x"}).encode()
    yield (
        "two payload fields",
        form(click_payload("watchdog_ack")) + b"&" + form(click_payload("watchdog_ack")),
    )
    yield "not UTF-8", b"payload=\xff\xfe"
    yield "empty body", b""


async def test_malformed_payloads_are_400_and_change_nothing(rig: Rig) -> None:
    before = await rig.incident()
    for case, body in _malformed():
        answer = await rig.client.post("/slack/interactions", content=body, headers=signed(body))
        assert answer.status_code == 400, (case, answer.status_code, answer.text)
    await _unchanged(rig, before)
    assert (await rig.client.get("/healthz")).status_code == 200, "the server is still up"


async def test_without_a_signing_secret_the_buttons_are_off(tmp_path: Path) -> None:
    async with running(tmp_path, {}) as rig:
        before = await rig.incident()
        answer = await rig.click("watchdog_ack")
        assert answer.status_code == 503
        assert "SLACK_SIGNING_SECRET" in answer.text
        await _unchanged(rig, before)


# -- the 3-second answer -------------------------------------------------------------------------------


class SlowStore(SqliteStore):
    """A real SQLite store whose incident reads wait until ``gate`` opens: a daemon that answers late."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.gate = asyncio.Event()

    async def get_incident(self, key: str) -> Incident | None:
        await self.gate.wait()
        return await super().get_incident(key)


@dataclass
class IncidentsOnly:
    """The one part of the daemon the action routes use."""

    incidents: IncidentManager


async def test_a_slow_daemon_is_answered_in_time_and_the_click_still_counts(tmp_path: Path) -> None:
    store = SlowStore(tmp_path / "state.db")
    await store.open()
    manager = IncidentManager(example_config(), store, SystemClock())
    store.gate.set()
    await fire(manager)
    store.gate.clear()
    routes = slack_interaction_routes(
        IncidentsOnly(manager), SameLoop(), {"SLACK_SIGNING_SECRET": SECRET}, deadline_s=0.3
    )
    try:
        async with serve_asgi(Starlette(routes=routes)) as url, httpx.AsyncClient(base_url=url) as client:
            body = form(click_payload("watchdog_ack"))
            started = time.monotonic()
            answer = await client.post("/slack/interactions", content=body, headers=signed(body))
            took = time.monotonic() - started
            assert answer.status_code == 200
            assert answer.json()["status"] == "pending"
            assert 0.3 <= took < 2.0, took
            store.gate.set()  # the daemon catches up: the click was not lost
            for _ in range(200):
                incident = await store.get_incident(KEY)
                if incident is not None and incident.state == "acknowledged":
                    break
                await asyncio.sleep(0.01)
            assert incident is not None and incident.data["acked_by"] == f"slack:{USER_ID}"
    finally:
        store.gate.set()
        await store.close()

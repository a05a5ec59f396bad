"""The buttons over Socket Mode, at the wire: slack_sdk's real aiohttp SocketModeClient (inside
SlackSocketMode) against a fake Slack on loopback that answers ``apps.connections.open`` with a websocket
URL and pushes ``interactive`` envelopes down that socket, as Slack does for an app without a public URL.

A click acknowledges the incident with the Slack user as the actor; every envelope is acknowledged by its
``envelope_id`` (else Slack redelivers it); an envelope that is not one of our buttons changes nothing."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

from watchdog.config.loader import load_config
from watchdog.core.clock import FakeClock
from watchdog.incidents.manager import AlertSpec, IncidentManager
from watchdog.store.memory import MemoryStore
from watchdog.web.slack_socket import SlackSocketMode

APP_TOKEN = "xapp-1-socket-test"


class FakeSocketModeSlack:
    def __init__(self) -> None:
        self.sockets: list[web.WebSocketResponse] = []
        self.acks: list[str] = []
        self.opened_with: list[str] = []
        self.connected = asyncio.Event()
        self.base = ""

    async def open(self, request: web.Request) -> web.Response:
        self.opened_with.append(request.headers.get("Authorization", ""))
        return web.json_response({"ok": True, "url": f"{self.base.replace('http', 'ws')}/link"})

    async def link(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.sockets.append(ws)
        await ws.send_str(json.dumps({"type": "hello", "num_connections": 1}))
        self.connected.set()
        async for message in ws:
            if message.type == WSMsgType.TEXT:
                envelope_id = json.loads(message.data).get("envelope_id")
                if envelope_id:
                    self.acks.append(str(envelope_id))
        return ws

    async def push(self, envelope_id: str, payload: dict[str, Any], kind: str = "interactive") -> None:
        envelope = {"envelope_id": envelope_id, "type": kind, "accepts_response_payload": False,
                    "payload": payload}
        await self.sockets[-1].send_str(json.dumps(envelope))

    @asynccontextmanager
    async def running(self) -> AsyncIterator[str]:
        app = web.Application()
        app.router.add_post("/api/apps.connections.open", self.open)
        app.router.add_get("/link", self.link)
        runner = web.AppRunner(app)
        await runner.setup()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        site = web.SockSite(runner, sock)
        await site.start()
        self.base = f"http://127.0.0.1:{sock.getsockname()[1]}"
        try:
            yield f"{self.base}/api/"
        finally:
            for ws in self.sockets:
                await ws.close()
            await runner.cleanup()


def _click(action_id: str, key: str, user: str) -> dict[str, Any]:
    return {
        "type": "block_actions",
        "user": {"id": user, "username": "ana"},
        "actions": [{"action_id": action_id, "value": key, "type": "button"}],
    }


async def _until(condition: Any, timeout_s: float = 10.0) -> None:
    """Poll: the conditions are counters in slack_sdk's and our objects, nothing an Event could wait on."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_a_click_over_socket_mode_acknowledges_the_incident(tmp_path: Path) -> None:
    root = tmp_path / "c"
    (root / "probes").mkdir(parents=True)
    (root / "alerts").mkdir()
    (root / "probes" / "p.yaml").write_text("probes:\n  - {name: api, kind: http, url: 'http://127.0.0.1:9/'}\n")
    (root / "alerts" / "e.yaml").write_text(
        "escalation:\n  - name: default\n    levels:\n"
        "      - {level: L1, who: dev team, notify: [{type: log}], ack_within: 30m}\n"
        "      - {level: L2, who: lead, notify: [{type: log}]}\n"
    )
    manager = IncidentManager(load_config(root), MemoryStore(), FakeClock())
    spec = AlertSpec(key="alert:db", alert="db", severity="warning", policy="default", summary="x")
    await manager.fire(spec)
    assert SlackSocketMode.from_env({"SLACK_BOT_TOKEN": "xoxb-1"}, manager) is None, "off: no app token"
    fake = FakeSocketModeSlack()
    async with fake.running() as api_url:
        receiver = SlackSocketMode.from_env({"SLACK_APP_TOKEN": APP_TOKEN, "SLACK_API_URL": api_url}, manager)
        assert receiver is not None
        await receiver.start()
        try:
            await asyncio.wait_for(fake.connected.wait(), 10)
            assert fake.opened_with == [f"Bearer {APP_TOKEN}"]
            await fake.push("env-1", _click("watchdog_ack", "alert:db", "U0ANA"))
            await _until(lambda: receiver.handled == 1 and "env-1" in fake.acks)
            incident = await manager.get("alert:db")
            assert incident is not None and incident.state == "acknowledged"
            assert incident.data["acked_by"] == "slack:U0ANA"

            await fake.push("env-2", {"type": "view_submission"})  # not a button: acknowledged, ignored
            await fake.push("env-3", {"hello": "world"}, kind="events_api")
            await _until(lambda: {"env-2", "env-3"} <= set(fake.acks))
            assert receiver.handled == 1
            incident = await manager.get("alert:db")
            assert incident is not None and incident.version == 2, "nothing else changed"
        finally:
            await receiver.stop()


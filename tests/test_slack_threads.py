"""An incident's life in Slack, at the wire: the real slack_sdk client (SlackNotifier) against the fake Slack
Web API on loopback, driven by the real IncidentManager and Dispatcher on SQLite.

The page is a parent message with buttons; escalation, acknowledgement and resolution are replies in its
thread and each one re-renders the parent with ``chat.update`` (the buttons go when it is resolved); an
escalated level gets a parent of its own in its channel; a failed ``chat.update`` does not repeat the reply.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from slack_api import FakeSlackApi, channel_id

from watchdog.config.loader import WatchdogConfig, load_config
from watchdog.core.clock import FakeClock
from watchdog.incidents.manager import AlertSpec, IncidentManager
from watchdog.notify.dispatch import Dispatcher
from watchdog.notify.log import LogNotifier
from watchdog.notify.slack import SlackNotifier
from watchdog.store.sqlite import SqliteStore

TOKEN = "xoxb-thread-test"


def _config(root: Path) -> WatchdogConfig:
    (root / "probes").mkdir(parents=True)
    (root / "alerts").mkdir()
    (root / "probes" / "p.yaml").write_text("probes:\n  - {name: api, kind: http, url: 'http://127.0.0.1:9/'}\n")
    (root / "alerts" / "e.yaml").write_text(
        "escalation:\n  - name: default\n    levels:\n"
        "      - {level: L1, who: dev team, notify: [{type: slack, channel: '#l1', mention: [S0DEV]}],"
        " ack_within: 30m}\n"
        "      - {level: L2, who: tech lead, notify: [{type: slack, channel: '#l2', mention: [U0LEAD]}]}\n"
    )
    return load_config(root)


def _buttons(blocks: list[dict[str, Any]]) -> list[str]:
    return [e["action_id"] for b in blocks if b["type"] == "actions" for e in b["elements"]]


async def test_a_page_its_thread_and_its_parent_updates(tmp_path: Path) -> None:
    config = _config(tmp_path / "c")
    clock = FakeClock()
    store = SqliteStore(tmp_path / "s.db")
    await store.open()
    fake = FakeSlackApi(TOKEN)
    async with fake.running() as api_url:
        slack = SlackNotifier(TOKEN, api_url=api_url, timeout_s=5)
        manager = IncidentManager(config, store, clock)
        dispatcher = Dispatcher(store, {"slack": slack, "log": LogNotifier()}, clock, "w")

        async def deliver() -> None:
            while await dispatcher.run_once(limit=50):
                continue  # until a pass delivers nothing

        spec = AlertSpec(
            key="alert:db-down",
            alert="db-down",
            severity="warning",
            policy="default",
            summary="SELECT 1 failed 3 times in a row: connection refused",
            budget_left="62 %",
        )
        await manager.fire(spec)
        await deliver()
        (parent,) = fake.posts_to("#l1")
        assert parent.text.startswith("<!subteam^S0DEV> ")
        assert _buttons(parent.blocks) == ["watchdog_ack", "watchdog_resolve", "watchdog_silence_1h"]
        assert any(f["text"] == "*SLO budget left*\n62 %" for b in parent.blocks for f in b.get("fields", []))

        clock.advance(30 * 60)
        await manager.tick()
        await deliver()
        (l2_parent,) = fake.posts_to("#l2")
        assert "<@U0LEAD>" in l2_parent.text and "[warning, L2]" in l2_parent.text
        (note,) = fake.replies_to(parent)
        assert "escalated to L2 (tech lead): not acknowledged for 30m" in note.text
        assert not note.reply_broadcast and "S0DEV" not in note.text, "a note does not call L1 again"

        await manager.acknowledge("alert:db-down", "slack:U0ANA")
        await deliver()
        replies = fake.replies_to(parent) + fake.replies_to(l2_parent)
        acks = [r for r in replies if "acknowledged by" in r.text]
        assert len(acks) == 2 and all("<@U0ANA>" in r.text for r in acks)
        updated = {(u.channel, u.ts): u for u in fake.updates}
        l1_now = updated[(channel_id("#l1"), parent.ts)]
        assert "acknowledged by <@U0ANA>" in str(l1_now.blocks)
        assert _buttons(l1_now.blocks) == ["watchdog_resolve", "watchdog_silence_1h"], "no second ack"

        fake.fail_next("ok", "message_not_found", channel=channel_id("#l1"))  # the reply goes, the edit fails
        await manager.resolve("alert:db-down", "slack:U0ANA")
        await deliver()
        resolved = [r for r in fake.posts if r.thread_ts and "resolved by" in r.text]
        assert sorted(r.channel for r in resolved) == sorted([channel_id("#l1"), channel_id("#l2")])
        assert len([r for r in fake.replies_to(parent) if "resolved by" in r.text]) == 1, "not repeated"
        l2_now = [u for u in fake.updates if u.ts == l2_parent.ts][-1]
        assert _buttons(l2_now.blocks) == [] and "RESOLVED" in l2_now.text
    await store.close()

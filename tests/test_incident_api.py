"""The incident API (``/api/v1/incidents``, ``/api/v1/silences``) behind ``WATCHDOG_API_TOKEN``: the real
daemon's HTTP face on loopback (the same rig as the Slack buttons' tests), called with httpx."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from loopback import serve_asgi
from starlette.applications import Starlette
from test_slack_interactions import (  # tests/ is on sys.path (prepend mode)
    KEY,
    IncidentsOnly,
    Rig,
    SameLoop,
    SlowStore,
    example_config,
    fire,
    running,
)

from watchdog.core.clock import SystemClock
from watchdog.incidents.manager import IncidentManager
from watchdog.store import Incident
from watchdog.web.incident_api import incident_api_routes

TOKEN = "watchdog-api-token-7c1e9b"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ODD_KEY = "alertmanager:team@database/primary"
"""A key with ':', '@' and '/', as keys from other systems have."""


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    async with running(tmp_path, {"WATCHDOG_API_TOKEN": TOKEN}) as rig:
        yield rig


async def post(
    rig: Rig, path: str, body: Any = None, *, actor: str | None = None, content: bytes | None = None
) -> httpx.Response:
    headers = {**AUTH, **({"X-Watchdog-Actor": actor} if actor is not None else {})}
    if content is not None:
        return await rig.client.post(path, content=content, headers=headers)
    return await rig.client.post(path, json=body, headers=headers)


async def snapshot(rig: Rig) -> list[tuple[str, str, int]]:
    return sorted((i.key, i.state, i.version) for i in await rig.store.list_incidents())


async def test_without_a_token_configured_the_api_is_off(tmp_path: Path) -> None:
    async with running(tmp_path, {}) as rig:
        before = await snapshot(rig)
        listed = await rig.client.get("/api/v1/incidents", headers=AUTH)
        assert listed.status_code == 503
        assert "WATCHDOG_API_TOKEN" in listed.json()["error"]
        assert (await post(rig, f"/api/v1/incidents/{KEY}/ack")).status_code == 503
        assert await snapshot(rig) == before


async def test_a_missing_or_wrong_token_is_401_with_a_bearer_challenge(rig: Rig) -> None:
    before = await snapshot(rig)
    wrong = [
        {},
        {"Authorization": "Bearer not-the-token"},
        {"Authorization": f"Bearer {TOKEN[:-1]}"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": TOKEN},
    ]
    for headers in wrong:
        for method, path in (("GET", "/api/v1/incidents"), ("POST", f"/api/v1/incidents/{KEY}/ack")):
            answer = await rig.client.request(method, path, headers=headers)
            assert answer.status_code == 401, (headers, path)
            assert answer.headers["WWW-Authenticate"].startswith("Bearer")
    assert await snapshot(rig) == before
    assert (
        await rig.client.get("/api/v1/incidents", headers={"Authorization": f"bearer {TOKEN}"})
    ).is_success


async def test_list_and_get_incidents(rig: Rig) -> None:
    await fire(rig.manager, key=ODD_KEY, alert="external-alert")
    listed = await rig.client.get("/api/v1/incidents", headers=AUTH)
    assert listed.status_code == 200
    assert sorted(i["key"] for i in listed.json()["incidents"]) == [KEY, ODD_KEY]
    await rig.manager.resolve(ODD_KEY, "test")
    firing = await rig.client.get("/api/v1/incidents", params={"state": "firing,acknowledged"}, headers=AUTH)
    assert [i["key"] for i in firing.json()["incidents"]] == [KEY]
    resolved = await rig.client.get("/api/v1/incidents", params={"state": "resolved"}, headers=AUTH)
    assert [i["key"] for i in resolved.json()["incidents"]] == [ODD_KEY]
    bad = await rig.client.get("/api/v1/incidents", params={"state": "burning"}, headers=AUTH)
    assert bad.status_code == 400 and "burning" in bad.json()["error"]

    one = await rig.client.get(f"/api/v1/incidents/{KEY}", headers=AUTH)
    assert one.status_code == 200
    body = one.json()
    assert set(body) == {"key", "state", "version", "data", "updated_at"}
    assert (body["key"], body["state"], body["data"]["alert"]) == (KEY, "firing", "app-down")
    for path in (ODD_KEY, quote(ODD_KEY, safe="")):  # as typed, and percent-encoded
        odd = await rig.client.get(f"/api/v1/incidents/{path}", headers=AUTH)
        assert odd.status_code == 200, path
        assert (odd.json()["key"], odd.json()["state"]) == (ODD_KEY, "resolved")
    missing = await rig.client.get("/api/v1/incidents/alert:nope", headers=AUTH)
    assert missing.status_code == 404 and missing.json()["status"] == "not_found"


async def test_acknowledge_and_resolve(rig: Rig) -> None:
    acked = await post(rig, f"/api/v1/incidents/{KEY}/ack", actor="ana")
    assert acked.status_code == 200
    assert acked.json()["action"]["status"] == "done"
    assert (acked.json()["state"], acked.json()["data"]["acked_by"]) == ("acknowledged", "api:ana")
    version = acked.json()["version"]

    again = await post(rig, f"/api/v1/incidents/{KEY}/ack", actor="bob")
    assert again.status_code == 200
    assert again.json()["action"]["status"] == "unchanged"
    assert (again.json()["version"], again.json()["data"]["acked_by"]) == (version, "api:ana")

    resolved = await post(rig, f"/api/v1/incidents/{quote(KEY, safe='')}/resolve")
    assert resolved.status_code == 200
    assert (resolved.json()["state"], resolved.json()["data"]["resolved_by"]) == ("resolved", "api:token")

    conflict = await post(rig, f"/api/v1/incidents/{KEY}/ack", actor="ana")
    assert conflict.status_code == 409
    assert conflict.json()["action"]["status"] == "conflict"
    assert conflict.json()["state"] == "resolved"
    assert (await rig.store.get_incident(KEY)) == _incident_from(resolved.json())

    unknown = await post(rig, "/api/v1/incidents/alert:nope/ack")
    assert unknown.status_code == 404 and unknown.json()["status"] == "not_found"
    assert await rig.store.get_incident("alert:nope") is None


def _incident_from(body: dict[str, Any]) -> Incident:
    return Incident(body["key"], body["state"], body["version"], body["data"], body["updated_at"])


async def test_refused_requests_change_nothing(rig: Rig) -> None:
    before = await snapshot(rig)
    cases = [
        ("an actor with spaces", await post(rig, f"/api/v1/incidents/{KEY}/ack", actor="ana; drop table")),
        ("a body that is not JSON", await post(rig, f"/api/v1/incidents/{KEY}/ack", content=b"{oops")),
        ("a JSON list", await post(rig, f"/api/v1/incidents/{KEY}/silence", ["1h"])),
        ("no duration", await post(rig, f"/api/v1/incidents/{KEY}/silence", {"reason": "x"})),
        ("a bad duration", await post(rig, f"/api/v1/incidents/{KEY}/silence", {"duration": "soon"})),
        ("over 30 days", await post(rig, f"/api/v1/incidents/{KEY}/silence", {"duration": "31d"})),
        ("a zero duration", await post(rig, f"/api/v1/incidents/{KEY}/silence", {"duration": 0})),
        (
            "a reason that is not text",
            await post(rig, f"/api/v1/incidents/{KEY}/silence", {"duration": "1h", "reason": 7}),
        ),
    ]
    for case, answer in cases:
        assert answer.status_code == 400, (case, answer.status_code, answer.text)
        assert answer.json()["error"], case
    big = await post(rig, f"/api/v1/incidents/{KEY}/silence", {"duration": "1h", "reason": "x" * 70_000})
    assert big.status_code == 413
    assert await snapshot(rig) == before
    assert await rig.manager.silences.all() == []


async def test_silencing_an_incident_mutes_it(rig: Rig) -> None:
    answer = await post(
        rig, f"/api/v1/incidents/{KEY}/silence", {"duration": "1h", "reason": "deploying"}, actor="ana"
    )
    assert answer.status_code == 200, answer.text
    (silence,) = await rig.manager.silences.all()
    assert (silence.ends_at - silence.starts_at, silence.author, silence.reason) == (
        3600,
        "api:ana",
        "deploying",
    )
    muted_by = answer.json()["data"]["muted_by"]
    assert (muted_by["kind"], muted_by["name"]) == ("silence", silence.id)
    assert answer.json()["state"] == "firing"


async def test_silences_are_added_listed_and_removed(rig: Rig) -> None:
    created = await post(
        rig,
        "/api/v1/silences",
        {"matchers": {"alertname": "app-down"}, "duration": "2h", "reason": "reindexing", "author": "ana"},
    )
    assert created.status_code == 200, created.text
    silence = created.json()["silence"]
    assert (silence["author"], silence["reason"], silence["active"]) == ("api:ana", "reindexing", True)
    assert silence["ends_at"] - silence["starts_at"] == 7200
    incident = await rig.store.get_incident(KEY)
    assert incident is not None and incident.data["muted_by"]["name"] == silence["id"], "it mutes at once"

    listed = await rig.client.get("/api/v1/silences", headers=AUTH)
    assert [s["id"] for s in listed.json()["silences"]] == [silence["id"]]

    removed = await rig.client.delete(f"/api/v1/silences/{silence['id']}", headers=AUTH)
    assert removed.status_code == 200 and removed.json() == {"removed": silence["id"]}
    incident = await rig.store.get_incident(KEY)
    assert incident is not None and incident.data["muted_by"] is None, "paging resumes at once"
    again = await rig.client.delete(f"/api/v1/silences/{silence['id']}", headers=AUTH)
    assert again.status_code == 404
    assert (await rig.client.get("/api/v1/silences", headers=AUTH)).json() == {"silences": []}


async def test_bad_silences_are_refused(rig: Rig) -> None:
    good = {"matchers": {"alertname": "app-down"}, "duration": "2h", "reason": "reindexing"}
    bad = [
        {**good, "matchers": {}},
        {**good, "matchers": {"alertname": 5}},
        {**good, "matchers": ["alertname=app-down"]},
        {k: v for k, v in good.items() if k != "matchers"},
        {k: v for k, v in good.items() if k != "reason"},
        {**good, "duration": "2 fortnights"},
        {**good, "duration": "60d"},
        {**good, "author": "ana <script>"},
    ]
    for body in bad:
        answer = await post(rig, "/api/v1/silences", body)
        assert answer.status_code == 400, body
    assert await rig.manager.silences.all() == []
    unknown = await rig.client.delete("/api/v1/silences/0123456789ab", headers=AUTH)
    assert unknown.status_code == 404


async def test_a_daemon_that_does_not_answer_in_time_is_a_503_and_the_action_still_lands(
    tmp_path: Path,
) -> None:
    store = SlowStore(tmp_path / "state.db")
    await store.open()
    manager = IncidentManager(example_config(), store, SystemClock())
    store.gate.set()
    await fire(manager)
    store.gate.clear()
    routes = incident_api_routes(
        IncidentsOnly(manager), SameLoop(), {"WATCHDOG_API_TOKEN": TOKEN}, deadline_s=0.3
    )
    try:
        async with serve_asgi(Starlette(routes=routes)) as url, httpx.AsyncClient(base_url=url) as client:
            late = await client.post(
                f"/api/v1/incidents/{KEY}/ack", headers={**AUTH, "X-Watchdog-Actor": "ana"}
            )
            assert late.status_code == 503
            assert "may still complete" in late.json()["error"]
            store.gate.set()
            for _ in range(200):
                incident = await store.get_incident(KEY)
                if incident is not None and incident.state == "acknowledged":
                    break
                await asyncio.sleep(0.01)
            assert incident is not None and incident.data["acked_by"] == "api:ana"
    finally:
        store.gate.set()
        await store.close()

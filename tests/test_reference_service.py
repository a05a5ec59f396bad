"""The reference service over real HTTP: uvicorn on a free loopback port, httpx as the client."""

from __future__ import annotations

import asyncio
import os
import random
import secrets
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from watchdog.demo import Faults, RateLimits, ReferenceServer
from watchdog.demo.content import LANGUAGES
from watchdog.flags.flagd_file import DEFAULT_FLAG_KEY, FlagdFileBackend, choose_variant, write_initial

REPO_ROOT = Path(__file__).resolve().parents[1]
PG_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"

StartServer = Callable[..., Awaitable[ReferenceServer]]


@pytest.fixture
async def start_server() -> AsyncIterator[StartServer]:
    servers: list[ReferenceServer] = []

    async def start(**kwargs: Any) -> ReferenceServer:
        kwargs.setdefault("rate_limits", False)
        server = ReferenceServer(**kwargs)
        await server.start()
        servers.append(server)
        return server

    yield start
    for server in reversed(servers):
        await server.stop()


@pytest.fixture
async def server(start_server: StartServer) -> ReferenceServer:
    return await start_server()


@pytest.fixture
async def client(server: ReferenceServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as http:
        yield http


def _client(server: ReferenceServer) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=server.base_url, timeout=10)


# --- health ------------------------------------------------------------------------------------------


async def test_health_contract(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/health")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"status", "timestamp", "version", "environment", "checks", "uptime"}
    assert body["status"] == "healthy"
    assert body["timestamp"].endswith("Z")
    assert isinstance(body["uptime"], float) and body["uptime"] >= 0
    checks = body["checks"]
    assert checks["database"]["status"] is True
    assert isinstance(checks["database"]["responseTime"], int)
    assert "error" not in checks["database"]
    assert checks["redis"]["status"] is False  # no Redis; production does not degrade on it
    memory = checks["memory"]
    assert set(memory) == {"status", "used", "limit", "percentage"}
    assert memory["status"] is True and memory["used"] > 0 and memory["limit"] == 512 * 1024 * 1024
    assert body["status"] != "ok"  # the value an old deploy script waited for never exists

    head = await client.head("/api/health")
    assert head.status_code == 200 and head.content == b""


async def test_monitoring_and_simple_health(client: httpx.AsyncClient) -> None:
    monitoring = await client.get("/api/monitoring/health")
    assert monitoring.status_code == 200
    body = monitoring.json()
    assert body["status"] == "healthy"
    assert body["services"]["database"]["status"] == "up"
    assert body["services"]["redis"] == {"status": "disabled"}
    assert set(body["services"]["memory"]) == {"used", "total", "percentage"}
    assert {"timestamp", "uptime", "environment", "version"} <= set(body)
    assert monitoring.headers["cache-control"] == "no-cache, no-store, must-revalidate"
    simple = await client.get("/api/simple-health")
    assert simple.status_code == 200 and simple.json()["status"] == "healthy"


async def test_slow_database_is_degraded_but_200(start_server: StartServer) -> None:
    server = await start_server(slow_db_ms=50, faults=Faults(db_latency_ms=120))
    async with _client(server) as http:
        response = await http.get("/api/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "degraded"
    assert body["checks"]["database"]["status"] is True
    assert body["checks"]["database"]["responseTime"] >= 120


async def test_database_timeout_is_unhealthy(start_server: StartServer) -> None:
    server = await start_server(health_timeout=0.2, faults=Faults(db_latency_ms=1000))
    async with _client(server) as http:
        started = time.perf_counter()
        response = await http.get("/api/health")
        elapsed = time.perf_counter() - started
    assert response.status_code == 503
    assert response.json()["checks"]["database"] == {"status": False, "error": "Database timeout"}
    assert elapsed < 0.9  # bounded by the health timeout, not by the slow database


async def test_database_down_is_unhealthy_and_yaml_keeps_serving(
    server: ReferenceServer, client: httpx.AsyncClient
) -> None:
    assert (await client.post("/_faults", json={"db_down": True})).json()["db_down"] is True
    assert server.faults.db_down is True  # the endpoint and the shared object are one state

    health = await client.get("/api/health")
    assert health.status_code == 503
    assert health.json()["status"] == "unhealthy"
    assert health.json()["checks"]["database"]["status"] is False
    assert "db_down" in health.json()["checks"]["database"]["error"]
    monitoring = await client.get("/api/monitoring/health")
    assert monitoring.status_code == 503
    assert monitoring.json()["services"]["database"]["status"] == "down"
    assert (await client.get("/api/simple-health")).status_code == 200
    assert (await client.head("/api/health")).status_code == 200

    db_path = await client.get("/api/pbl/scenarios?source=unified")
    assert db_path.status_code == 500
    assert db_path.headers["x-data-source"] == "db"
    yaml_path = await client.get("/api/pbl/scenarios?source=yaml")
    assert yaml_path.status_code == 200 and yaml_path.headers["x-data-source"] == "yaml"

    assert (await client.delete("/_faults")).json() == Faults().to_dict()
    assert (await client.get("/api/health")).json()["status"] == "healthy"


# --- auth --------------------------------------------------------------------------------------------


async def test_login_check_logout_cookie_flow(client: httpx.AsyncClient) -> None:
    anonymous = (await client.get("/api/auth/check")).json()
    assert anonymous == {"authenticated": False, "user": None, "tokenExpiringSoon": False}

    login = await client.post(
        "/api/auth/login", json={"email": "demo@example.com", "password": "demo1234", "rememberMe": True}
    )
    assert login.status_code == 200
    assert login.json()["success"] is True
    assert login.json()["user"]["email"] == "demo@example.com"
    cookie = login.headers["set-cookie"]
    assert cookie.startswith("sessionToken=") and "HttpOnly" in cookie and "Max-Age=2592000" in cookie

    check = (await client.get("/api/auth/check")).json()
    assert check["authenticated"] is True
    assert check["user"] == login.json()["user"]

    assert (await client.post("/api/auth/logout")).status_code == 200
    assert (await client.get("/api/auth/check")).json()["authenticated"] is False


async def test_login_rejections(client: httpx.AsyncClient) -> None:
    wrong = await client.post("/api/auth/login", json={"email": "demo@example.com", "password": "nope"})
    assert wrong.status_code == 401
    assert wrong.json() == {"success": False, "error": "Invalid email or password"}
    assert "set-cookie" not in wrong.headers
    unknown = await client.post("/api/auth/login", json={"email": "who@example.com", "password": "demo1234"})
    assert unknown.status_code == 401

    unverified = await client.post(
        "/api/auth/login",
        json={"email": "unverified@example.com", "password": "demo1234", "rememberMe": False},
    )
    assert unverified.status_code == 403
    assert isinstance(unverified.json()["error"], str) and "verify" in unverified.json()["error"]
    assert "set-cookie" not in unverified.headers

    assert (await client.post("/api/auth/login", json={"email": "demo@example.com"})).status_code == 400
    assert (await client.post("/api/auth/login", content=b"{not json")).status_code == 400

    client.cookies.set("sessionToken", "eyJ1aWQiOiJ4In0.deadbeef")
    assert (await client.get("/api/auth/check")).json()["authenticated"] is False


# --- content -----------------------------------------------------------------------------------------

MODULE_PATHS = [
    "/api/pbl/scenarios",
    "/api/assessment/scenarios",
    "/api/discovery/scenarios",
    "/api/ksa",
    "/api/relations",
]
FIRST_PBL_TITLE = {
    "en": "AI-Assisted Job Search Training",
    "zhTW": "AI 輔助求職訓練",
    "zhCN": "AI 辅助求职训练",
}


def _without_meta(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k != "meta"}


@pytest.mark.parametrize("path", MODULE_PATHS)
async def test_content_in_three_languages_identical_on_both_paths(
    client: httpx.AsyncClient, path: str
) -> None:
    rendered: dict[str, str] = {}
    for lang in LANGUAGES:
        yaml_response = await client.get(path, params={"lang": lang, "source": "yaml"})
        db_response = await client.get(path, params={"lang": lang, "source": "unified"})
        assert (yaml_response.status_code, db_response.status_code) == (200, 200)
        assert yaml_response.headers["x-data-source"] == "yaml"
        assert db_response.headers["x-data-source"] == "db"
        assert yaml_response.headers["x-cache"] in ("HIT", "MISS")
        assert _without_meta(yaml_response.json()) == _without_meta(db_response.json())
        rendered[lang] = yaml_response.text
    assert len(set(rendered.values())) == 3  # each language really is translated


async def test_scenario_lists_have_the_app_shapes(client: httpx.AsyncClient) -> None:
    for lang, title in FIRST_PBL_TITLE.items():
        body = (await client.get("/api/pbl/scenarios", params={"lang": lang})).json()
        assert body["success"] is True
        assert body["data"]["total"] == len(body["data"]["scenarios"]) == 3
        assert body["data"]["scenarios"][0]["title"] == title
        assert body["meta"]["language"] == lang
    first = body["data"]["scenarios"][0]
    assert {"id", "yamlId", "difficulty", "estimatedDuration", "targetDomains", "taskCount"} <= set(first)
    assessment = (await client.get("/api/assessment/scenarios", params={"lang": "zhTW"})).json()
    assert assessment["data"]["totalCount"] == 2
    assert assessment["data"]["scenarios"][0]["config"]["totalQuestions"] == 12
    discovery = (await client.get("/api/discovery/scenarios", params={"lang": "zhCN"})).json()
    assert discovery["data"]["scenarios"][1]["title"] == "数据分析师"
    ksa = (await client.get("/api/ksa", params={"lang": "en"})).json()
    assert set(ksa) == {"knowledge_codes", "skill_codes", "attitude_codes"}
    relations = (await client.get("/api/relations", params={"lang": "en"})).json()
    assert len(relations["domains"]) == 4 and "K1.1" in relations["kMap"]
    fallback = (await client.get("/api/pbl/scenarios", params={"lang": "klingon"})).json()
    assert fallback["data"]["scenarios"][0]["title"] == FIRST_PBL_TITLE["en"]


async def test_cache_hit_then_miss_when_disabled(start_server: StartServer) -> None:
    cached = await start_server()
    async with _client(cached) as http:
        first = await http.get("/api/ksa", params={"source": "yaml"})
        second = await http.get("/api/ksa", params={"source": "yaml"})
    assert (first.headers["x-cache"], second.headers["x-cache"]) == ("MISS", "HIT")
    assert first.content == second.content
    uncached = await start_server(cache_ttl=0)
    async with _client(uncached) as http:
        answers = [
            (await http.get("/api/ksa", params={"source": "yaml"})).headers["x-cache"] for _ in range(3)
        ]
    assert answers == ["MISS"] * 3


async def _sources(
    http: httpx.AsyncClient, request_ids: list[str], path: str = "/api/pbl/scenarios"
) -> list[str]:
    semaphore = asyncio.Semaphore(4)  # more waits on httpx's pool: 3x slower here

    async def one(request_id: str) -> str:
        async with semaphore:
            response = await http.get(path, headers={"X-Request-Id": request_id})
            assert response.status_code == 200
            assert response.headers["x-request-id"] == request_id
            return response.headers["x-data-source"]

    return list(await asyncio.gather(*(one(r) for r in request_ids)))


async def _obeyed(
    http: httpx.AsyncClient, expected: dict[str, str], within: float = 3.0, path: str = "/api/ksa"
) -> float:
    """Poll until every request id gets its expected data source; the seconds that took. The service reads
    the flag through the flagd provider, which notices a changed file at its next poll (0.5 s)."""
    started = time.monotonic()
    while True:
        got = await _sources(http, list(expected), path)
        if got == list(expected.values()):
            return time.monotonic() - started
        if time.monotonic() - started > within:
            pytest.fail(f"the service did not obey the flag within {within} s")
        await asyncio.sleep(0.01)


async def _set(backend: FlagdFileBackend, percent: float, key: str) -> None:
    """The watchdog's verified write, not in the same few-ms timestamp tick as the provider's last load (it
    reloads when the mtime grew; see watchdog/demo/flag.py)."""
    await asyncio.sleep(0.03)
    await backend.set(percent, f"test: {key}", "test", key)


USER_IDS = [f"user-{i:05d}" for i in range(4000)]
FAST_POLL_S = 0.05
"""The provider's poll where a test needs reloads, not their real pace (the rollback test keeps 0.5 s)."""


async def test_flag_file_drives_the_split(start_server: StartServer, tmp_path: Path) -> None:
    """What the watchdog's writer puts in the file is what the OpenFeature client in the service does, user by
    user: the same users as ``choose_variant``, the same answer every time, and so about the share."""
    flag_path = tmp_path / "flags.json"
    write_initial(flag_path, 0)
    server = await start_server(flag_path=flag_path, flag_poll_interval_s=FAST_POLL_S)
    backend = FlagdFileBackend(flag_path)
    ids = USER_IDS[:100]
    async with _client(server) as http:
        assert set(await _sources(http, ids)) == {"yaml"}

        await _set(backend, 100, "k-100")
        await _obeyed(http, dict.fromkeys(ids, "db"))
        flag = (await http.get("/_flag")).json()
        assert flag["provider_status"] == "READY" and flag["metadata"]["dbPercent"] == 100
        assert flag["reader"].startswith("openfeature-sdk + openfeature-provider-flagd")

        await _set(backend, 5, "k-5")
        await _obeyed(http, {r: choose_variant(DEFAULT_FLAG_KEY, r, 5.0) for r in ids})
        # 4,000 distinct users (the request id is the targeting key of an anonymous request): exactly the
        # watchdog's choice for each, hence about 5 % (200 expected, sd 13.8).
        sources = await _sources(http, USER_IDS, "/api/ksa")
        assert sources == [choose_variant(DEFAULT_FLAG_KEY, r, 5.0) for r in USER_IDS]
        assert 145 <= sources.count("db") <= 255, sources.count("db")
        # The same user again: the same path.
        assert await _sources(http, USER_IDS[:300], "/api/ksa") == sources[:300]

        # A logged-in user is bucketed by user id: sticky across requests.
        await http.post("/api/auth/login", json={"email": "demo@example.com", "password": "demo1234"})
        user_sources = {(await http.get("/api/ksa")).headers["x-data-source"] for _ in range(20)}
        assert len(user_sources) == 1

        # ?source pins a cohort whatever the flag says.
        await _set(backend, 0, "k-0")
        await _obeyed(http, dict.fromkeys(ids[:50], "yaml"))
        assert (await http.get("/api/ksa?source=unified")).headers["x-data-source"] == "db"


async def test_rollback_reaches_every_request_within_the_providers_reload_time(
    start_server: StartServer, tmp_path: Path
) -> None:
    """From the watchdog's verified write of db 0 % to the moment every request of the database cohort is
    served from YAML: at most the provider's poll interval (0.5 s, its default) plus a read."""
    flag_path = tmp_path / "flags.json"
    write_initial(flag_path, 5)
    server = await start_server(flag_path=flag_path)
    backend = FlagdFileBackend(flag_path)
    canary = [r for r in USER_IDS[:2000] if choose_variant(DEFAULT_FLAG_KEY, r, 5.0) == "db"][:40]
    poll = server.service.flag.poll_interval_s
    rng = random.Random(7)
    delays = []
    async with _client(server) as http:
        for n in range(3):
            await _obeyed(http, dict.fromkeys(canary, "db"))
            await asyncio.sleep(rng.uniform(0, poll))  # any phase of the provider's poll
            await backend.set(0, "rollback", "sre-watchdog", f"rollback-{n}")
            delays.append(await _obeyed(http, dict.fromkeys(canary, "yaml")))
            await _set(backend, 5, f"canary-{n}")
        assert set(await _sources(http, USER_IDS[:300], "/api/ksa")) <= {"yaml", "db"}
    print(f"rollback → every request on YAML: {[round(d, 3) for d in delays]} s (poll {poll} s)")
    assert max(delays) <= poll + 0.5, delays


async def test_source_pins_a_logged_in_users_cohort_on_every_content_route(
    start_server: StartServer, tmp_path: Path
) -> None:
    """The flag buckets a session by its user id, so a journey that logs in stays in one cohort for good:
    the demo account is in YAML at a 5 % canary and, unpinned, never reads the database. ``?source=`` wins
    over that bucket on every content route, and a DB-path error still says where it came from
    (``X-Data-Source: db``), so a probe can tell a database failure from a YAML one."""
    flag_path = tmp_path / "flags.json"
    write_initial(flag_path, 5)
    faults = Faults()
    server = await start_server(flag_path=flag_path, faults=faults)
    async with _client(server) as http:
        login = await http.post("/api/auth/login", json={"email": "demo@example.com", "password": "demo1234"})
        assert login.status_code == 200
        unpinned = [await http.get(path, params={"lang": "zhTW"}) for path in MODULE_PATHS]
        assert {response.headers["x-data-source"] for response in unpinned} == {"yaml"}
        for path in MODULE_PATHS:
            for source, served in (("unified", "db"), ("yaml", "yaml")):
                response = await http.get(path, params={"lang": "zhTW", "source": source})
                assert (response.status_code, response.headers["x-data-source"]) == (200, served), path

        faults.update({"db_error_rate": 1.0})
        for path in MODULE_PATHS:
            failed = await http.get(path, params={"lang": "zhTW", "source": "unified"})
            assert (failed.status_code, failed.headers["x-data-source"]) == (500, "db"), path
            healthy = await http.get(path, params={"lang": "zhTW", "source": "yaml"})
            assert (healthy.status_code, healthy.headers["x-data-source"]) == (200, "yaml"), path


async def test_broken_flag_file_keeps_last_good_split(start_server: StartServer, tmp_path: Path) -> None:
    """A torn file: the flagd provider keeps the flags it last loaded (status ERROR, retried at each poll),
    so the service neither crashes nor changes course; a repaired file is followed again."""
    flag_path = tmp_path / "flags.json"
    write_initial(flag_path, 100)
    server = await start_server(flag_path=flag_path, flag_poll_interval_s=FAST_POLL_S)
    ids = USER_IDS[:50]
    async with _client(server) as http:
        assert set(await _sources(http, ids, "/api/ksa")) == {"db"}
        await asyncio.sleep(0.03)
        whole = flag_path.read_bytes()
        flag_path.write_bytes(whole[: len(whole) // 3])  # a non-atomic writer caught mid-write
        deadline = time.monotonic() + 3
        while "Could not parse JSON" not in str((status := (await http.get("/_flag")).json())["error"]):
            assert time.monotonic() < deadline, status
            await asyncio.sleep(0.02)
        assert status["provider_status"] == "ERROR"
        assert set(await _sources(http, ids, "/api/ksa")) == {"db"}  # the last good split
        assert (await http.get("/api/health")).json()["status"] == "healthy"

        write_initial(flag_path, 0)  # by hand: the watchdog's writer refuses to overwrite a torn file
        await _obeyed(http, dict.fromkeys(ids, "yaml"))
        assert (await http.get("/_flag")).json()["error"] is None

    missing = await start_server(flag_path=tmp_path / "missing.json")
    async with _client(missing) as http:
        assert (await http.get("/api/ksa")).headers["x-data-source"] == "yaml"  # safe default
        assert (await http.get("/_flag")).json()["provider_status"] == "ERROR"


async def test_db_error_rate_fails_only_the_db_path(start_server: StartServer) -> None:
    server = await start_server(db_percent=100, faults=Faults(db_error_rate=1.0))
    async with _client(server) as http:
        for path in MODULE_PATHS:
            failed = await http.get(path, params={"lang": "zhTW"})
            assert failed.status_code == 500, path
            assert failed.headers["x-data-source"] == "db"
            assert (await http.get(path, params={"source": "yaml"})).status_code == 200
        pbl_error = (await http.get("/api/pbl/scenarios")).json()
        assert pbl_error == {
            "success": False,
            "error": {"code": "FETCH_SCENARIOS_ERROR", "message": "Failed to fetch PBL scenarios"},
        }
        # Connectivity is fine, so the health check stays healthy: the failures are query errors.
        assert (await http.get("/api/health")).json()["status"] == "healthy"

        await http.post("/_faults", json={"db_error_rate": 0.5})
        codes = [(await http.get("/api/ksa", params={"source": "unified"})).status_code for _ in range(60)]
        assert 10 <= codes.count(500) <= 50  # injected faults bypass the cache, so the rate is visible


# --- per-cohort metrics ----------------------------------------------------------------------------------

Sample = tuple[str, tuple[tuple[str, str], ...]]


async def _scrape(http: httpx.AsyncClient) -> dict[Sample, float]:
    response = await http.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def _moved(before: dict[Sample, float], after: dict[Sample, float], name: str, **labels: str) -> float:
    """How much the sum of ``name``'s series matching ``labels`` grew between two scrapes."""

    def total(scrape: dict[Sample, float]) -> float:
        return sum(
            value
            for (sample, sample_labels), value in scrape.items()
            if sample == name and set(labels.items()) <= set(sample_labels)
        )

    return total(after) - total(before)


async def test_metrics_count_requests_and_latency_per_cohort(
    start_server: StartServer, tmp_path: Path
) -> None:
    flag_path = tmp_path / "flags.json"
    write_initial(flag_path, 5)
    server = await start_server(flag_path=flag_path)
    ids = USER_IDS[:400]
    flag_db = sum(choose_variant(DEFAULT_FLAG_KEY, r, 5.0) == "db" for r in ids)
    assert 0 < flag_db < 40
    async with _client(server) as http:
        before = await _scrape(http)
        await _sources(http, ids, "/api/ksa")  # the flag's choice: real users
        for _ in range(10):
            assert (await http.get("/api/ksa?source=unified")).status_code == 200
        for _ in range(7):
            assert (await http.get("/api/ksa?source=yaml")).status_code == 200
        server.faults.update({"db_error_rate": 1.0})
        for _ in range(5):
            assert (await http.get("/api/pbl/scenarios?source=unified")).status_code == 500
        server.faults.update({"db_error_rate": 0.0, "db_latency_ms": 80})
        for _ in range(3):
            assert (await http.get("/api/ksa?source=unified")).status_code == 200
        server.faults.reset()
        assert (await http.get("/api/health")).status_code == 200
        assert (await http.get("/nowhere")).status_code == 404
        after = await _scrape(http)

    requests = "http_requests_total"
    ksa = {"route": "/api/ksa", "status_class": "2xx"}
    assert _moved(before, after, requests, cohort="db", selection="flag", **ksa) == flag_db
    assert _moved(before, after, requests, cohort="yaml", selection="flag", **ksa) == len(ids) - flag_db
    assert _moved(before, after, requests, cohort="db", selection="pinned", **ksa) == 13
    assert _moved(before, after, requests, cohort="yaml", selection="pinned", **ksa) == 7
    pbl = {"route": "/api/pbl/scenarios", "cohort": "db", "status_class": "5xx", "selection": "pinned"}
    assert _moved(before, after, requests, **pbl) == 5
    assert _moved(before, after, requests, cohort="none", route="/api/health", status_class="2xx") == 1
    assert _moved(before, after, requests, cohort="none", route="other", status_class="4xx") == 1
    assert _moved(before, after, requests, route="/metrics") == 0  # scrapes are not traffic

    # Latency per cohort, with the SLO edges as buckets: the slow database requests (+80 ms) are above 0.05 s.
    buckets = "http_request_duration_seconds_bucket"
    assert {dict(labels)["le"] for name, labels in after if name == buckets} >= {"0.05", "0.2"}
    db_ksa = {"cohort": "db", "route": "/api/ksa"}
    assert _moved(before, after, "http_request_duration_seconds_count", **db_ksa) == flag_db + 13
    assert _moved(before, after, buckets, le="+Inf", **db_ksa) == flag_db + 13
    assert _moved(before, after, buckets, le="0.05", **db_ksa) <= flag_db + 10
    yaml_ksa = {"cohort": "yaml", "route": "/api/ksa"}
    assert _moved(before, after, "http_request_duration_seconds_count", **yaml_ksa) == len(ids) - flag_db + 7

    # The flag evaluations and the database calls behind them.
    evaluations = "feature_flag_evaluations_total"
    assert _moved(before, after, evaluations, value="db", reason="TARGETING_MATCH") == flag_db
    assert _moved(before, after, evaluations) == len(ids)
    db_calls = "content_db_query_duration_seconds_count"
    assert _moved(before, after, db_calls, kind="content", outcome="error") == 5
    assert _moved(before, after, db_calls, kind="ping", outcome="ok") == 1

    # Rate-limited requests are counted too (the counter sits outside the limiter), with no cohort.
    limited = await start_server(rate_limits=RateLimits(default_per_minute=2))
    async with _client(limited) as http:
        codes = [(await http.get("/api/ksa?source=yaml")).status_code for _ in range(3)]
        assert codes == [200, 200, 429]
        scrape = await _scrape(http)
    assert _moved({}, scrape, requests, cohort="yaml", status_class="2xx") == 2
    assert _moved({}, scrape, requests, cohort="none", status_class="4xx", route="/api/ksa") == 1


async def test_discovery_can_be_deliberately_unavailable(client: httpx.AsyncClient) -> None:
    await client.post("/_faults", json={"discovery_unavailable": True})
    for source in ("yaml", "unified"):
        response = await client.get("/api/discovery/scenarios", params={"source": source})
        assert response.status_code == 503
        assert response.json() == {"error": "Discovery is temporarily unavailable"}
    assert (await client.get("/api/pbl/scenarios")).status_code == 200
    await client.post("/_faults", json={"discovery_unavailable": False})
    assert (await client.get("/api/discovery/scenarios")).status_code == 200


async def test_fault_endpoint_validates(client: httpx.AsyncClient) -> None:
    for bad in ({"db_error_rate": 2}, {"db_down": "yes"}, {"db_latency_ms": -1}, {"explode": True}, [1]):
        response = await client.post("/_faults", json=bad)
        assert response.status_code == 400, bad
    assert (await client.get("/_faults")).json() == Faults().to_dict()
    partial = await client.post("/_faults", json={"db_latency_ms": 5})
    assert partial.json() == {**Faults().to_dict(), "db_latency_ms": 5.0}


# --- rate limits -------------------------------------------------------------------------------------


async def test_rate_limits(start_server: StartServer) -> None:
    server = await start_server(rate_limits=RateLimits(default_per_minute=20))
    async with _client(server) as http:
        login = {"email": "demo@example.com", "password": "wrong"}
        codes = [(await http.post("/api/auth/login", json=login)).status_code for _ in range(11)]
        assert codes == [401] * 10 + [429]
        limited = await http.post("/api/auth/login", json=login)
        assert limited.status_code == 429
        assert 1 <= int(limited.headers["retry-after"]) <= 60
        assert limited.json()["success"] is False

        # Exempt: health routes and /api/auth/check.
        for path in ("/api/auth/check", "/api/health", "/api/simple-health", "/api/monitoring/health"):
            codes = [(await http.get(path)).status_code for _ in range(25)]
            assert codes == [200] * 25, path
        # Another client (behind the proxy) has its own budget.
        other = await http.post("/api/auth/login", json=login, headers={"X-Forwarded-For": "203.0.113.9"})
        assert other.status_code == 401

        content = [(await http.get("/api/ksa")).status_code for _ in range(21)]
        assert content == [200] * 20 + [429]

    default = await start_server(rate_limits=True)
    async with _client(default) as http:
        first = await http.get("/api/ksa")
        assert first.headers["x-ratelimit-limit"] == "100"


# --- PostgreSQL --------------------------------------------------------------------------------------


@pytest.fixture
async def pg_database() -> AsyncIterator[str]:
    """A throwaway database on the local server; an unreachable server fails the test (no skip)."""
    name = f"refsvc_test_{secrets.token_hex(6)}"
    admin = await asyncpg.connect(PG_ADMIN_DSN, timeout=5)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        admin = await asyncpg.connect(PG_ADMIN_DSN, timeout=5)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@pytest.mark.postgres
async def test_postgres_data_path(start_server: StartServer, pg_database: str) -> None:
    server = await start_server(database_url=pg_database)
    async with _client(server) as http:
        health = (await http.get("/api/health")).json()
        assert health["status"] == "healthy" and health["checks"]["database"]["status"] is True
        for path in MODULE_PATHS:
            for lang in LANGUAGES:
                db = await http.get(path, params={"lang": lang, "source": "unified"})
                yaml_ = await http.get(path, params={"lang": lang, "source": "yaml"})
                assert db.status_code == 200 and db.headers["x-data-source"] == "db"
                assert _without_meta(db.json()) == _without_meta(yaml_.json())

        await http.post("/_faults", json={"db_down": True})
        assert (await http.get("/api/health")).status_code == 503
        assert (await http.get("/api/pbl/scenarios?source=unified")).status_code == 500
        assert (await http.get("/api/pbl/scenarios?source=yaml")).status_code == 200

    conn = await asyncpg.connect(pg_database, timeout=5)
    try:
        modes = await conn.fetch(
            "SELECT mode::text AS mode, count(*) AS n FROM scenarios GROUP BY 1 ORDER BY 1"
        )
        assert {r["mode"]: r["n"] for r in modes} == {"assessment": 2, "discovery": 3, "pbl": 3}
        assert await conn.fetchval("SELECT count(*) FROM pg_type WHERE typname = 'learning_mode'") == 1
        assert await conn.fetchval("SELECT count(*) FROM scenario_domains") > 0
    finally:
        await conn.close()

    # Seeding is an upsert: a second instance on the same database starts cleanly and serves the same rows.
    again = await start_server(database_url=pg_database)
    async with _client(again) as http:
        body = (await http.get("/api/assessment/scenarios?source=unified")).json()
        assert body["data"]["totalCount"] == 2


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_unreachable_database_at_startup_still_serves_yaml(start_server: StartServer) -> None:
    server = await start_server(database_url=f"postgresql://postgres@127.0.0.1:{_closed_port()}/none")
    async with _client(server) as http:
        assert (await http.get("/api/pbl/scenarios?source=yaml")).status_code == 200
        assert (await http.get("/api/pbl/scenarios?source=unified")).status_code == 500
        health = await http.get("/api/health")
        assert health.status_code == 503 and health.json()["status"] == "unhealthy"


# --- lifecycle ---------------------------------------------------------------------------------------


async def test_server_lifecycle_and_persistent_sqlite(tmp_path: Path) -> None:
    sqlite_path = tmp_path / "content.db"
    server = ReferenceServer(sqlite_path=sqlite_path, rate_limits=False)
    async with server:
        base_url = server.base_url
        with pytest.raises(RuntimeError):
            await server.start()
        async with _client(server) as http:
            assert (await http.get("/api/ksa?source=unified")).status_code == 200
    await server.stop()  # idempotent
    assert sqlite_path.exists()
    with pytest.raises(RuntimeError):
        _ = server.base_url
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient(base_url=base_url) as http:
            await http.get("/api/simple-health")
    with pytest.raises(ValueError):
        ReferenceServer(database_url="postgresql://x/y", sqlite_path=sqlite_path)


async def test_python_m_watchdog_demo(tmp_path: Path) -> None:
    port = _closed_port()
    flag_path = tmp_path / "flags.json"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "watchdog.demo",
        "--port",
        str(port),
        "--flag",
        str(flag_path),
        "--init-flag",
        "100",
        "--log-level",
        "warning",
        cwd=REPO_ROOT,
        env={**{k: v for k, v in os.environ.items() if k != "DATABASE_URL"}, "PYTHONPATH": str(REPO_ROOT)},
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
            for _ in range(200):
                try:
                    response = await http.get("/api/ksa")
                    break
                except httpx.TransportError:
                    await asyncio.sleep(0.05)
            else:
                pytest.fail("python -m watchdog.demo did not come up")
            assert response.headers["x-data-source"] == "db"
            assert flag_path.exists()
    finally:
        proc.send_signal(signal.SIGTERM)
        # uvicorn shuts down gracefully, then re-raises the signal it captured: death by SIGTERM is normal.
        assert await asyncio.wait_for(proc.wait(), 10) in (0, -signal.SIGTERM)

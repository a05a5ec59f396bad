"""Journey probes against real loopback servers: a small Starlette app, then the reference service."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
from loopback import serve_asgi
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from watchdog.config.probes import HttpProbeConfig, JourneyProbeConfig
from watchdog.config.settings import ProbeDefaults
from watchdog.core.clock import FakeClock, SystemClock
from watchdog.core.results import Outcome, ProbeResult
from watchdog.demo import ReferenceServer
from watchdog.probes.http import HttpProbe
from watchdog.probes.journey import JourneyProbe, Template, UndefinedVariable

# One loop for the module so servers can be module-scoped (uvicorn start/stop costs ~0.2 s each).
pytestmark = pytest.mark.asyncio(loop_scope="module")

DEFAULTS = ProbeDefaults(interval=30, timeout=5)
SESSIONS = {"s-1": "demo@example.com"}


def make_app() -> Starlette:
    async def login(request: Request) -> Response:
        body = await request.json()
        if body.get("email") != "demo@example.com" or body.get("password") != "demo1234":
            return JSONResponse({"success": False, "error": "Invalid email or password"}, 401)
        response = JSONResponse({"success": True, "data": {"token": "tok-42", "user": {"id": 7}}})
        response.set_cookie("sessionToken", "s-1", httponly=True)
        response.headers["X-Request-Id"] = "req-99"
        return response

    async def check(request: Request) -> Response:
        user = SESSIONS.get(request.cookies.get("sessionToken", ""))
        return JSONResponse({"authenticated": user is not None, "user": user})

    async def scenarios(request: Request) -> Response:
        mode = request.path_params["mode"]
        lang = request.query_params.get("lang", "en")
        if mode == "discovery" and request.app.state.discovery_down:
            return JSONResponse({"error": "Discovery is temporarily unavailable"}, 503)
        if lang == "xx":
            return JSONResponse({"success": False, "error": f"unknown language {lang}"}, 400)
        return JSONResponse({"success": True, "data": {"scenarios": [{"id": f"{mode}-1", "lang": lang}]}})

    async def echo(request: Request) -> Response:
        return JSONResponse(
            {
                "method": request.method,
                "path": request.url.path,
                "headers": {k.lower(): v for k, v in request.headers.items()},
                "query": dict(request.query_params),
                "body": (await request.body()).decode(),
                "cookies": dict(request.cookies),
            }
        )

    async def page(_: Request) -> Response:
        return PlainTextResponse('<form><input name="csrf" value="c5rf-token"></form> build 2026.11')

    async def slow(request: Request) -> Response:
        await asyncio.sleep(float(request.query_params.get("s", "10")))
        return JSONResponse({"late": True})

    async def bounce(_: Request) -> Response:
        response = RedirectResponse("/api/auth/check", status_code=303)
        response.set_cookie("sessionToken", "s-1")
        return response

    app = Starlette(
        routes=[
            Route("/api/auth/login", login, methods=["POST"]),
            Route("/api/auth/check", check),
            Route("/api/{mode}/scenarios", scenarios),
            Route("/echo/{rest:path}", echo, methods=["GET", "POST"]),
            Route("/page", page),
            Route("/slow", slow),
            Route("/bounce", bounce),
        ]
    )
    app.state.discovery_down = False
    return app


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def app_url() -> AsyncIterator[tuple[Starlette, str]]:
    app = make_app()
    async with serve_asgi(app) as url:
        yield app, url


@pytest.fixture
def base_url(app_url: tuple[Starlette, str]) -> str:
    app_url[0].state.discovery_down = False
    return app_url[1]


LOGIN_STEP: dict[str, Any] = {
    "name": "login",
    "method": "POST",
    "url": "/api/auth/login",
    "json": {"email": "{{email}}", "password": "{{password}}", "rememberMe": False},
    "expect": {"status": [200], "json": [{"path": "success", "equals": True}]},
}
CHECK_STEP: dict[str, Any] = {
    "name": "check",
    "url": "/api/auth/check",
    "expect": {"json": [{"path": "authenticated", "equals": True}]},
}
SCENARIOS_STEP: dict[str, Any] = {
    "name": "scenarios",
    "url": "/api/{{mode}}/scenarios",
    "params": {"lang": "{{lang}}"},
    "for_each": {"mode": ["pbl", "assessment", "discovery"], "lang": ["en", "zhTW", "zhCN"]},
    "expect": {"status": [200, 503], "json": []},
}


def journey(base_url: str, steps: list[dict[str, Any]], **fields: Any) -> JourneyProbeConfig:
    data: dict[str, Any] = {
        "kind": "journey",
        "name": "login-flow",
        "base_url": base_url,
        "variables": {"email": "demo@example.com", "password": "demo1234"},
        "steps": steps,
        **fields,
    }
    return JourneyProbeConfig.model_validate(data)


async def run_journey(config: JourneyProbeConfig, clock: Any = None) -> list[ProbeResult]:
    probe = JourneyProbe(config, defaults=DEFAULTS, clock=clock or SystemClock())
    try:
        return await probe.run()
    finally:
        await probe.aclose()


def by_step(results: list[ProbeResult]) -> list[tuple[str, str, str]]:
    return [(r.labels["step"], r.outcome.value, r.reason) for r in results]


# --- the happy path ----------------------------------------------------------------------------------------


async def test_login_check_and_scenarios_for_each(base_url: str) -> None:
    clock = FakeClock()
    config = journey(base_url, [LOGIN_STEP, CHECK_STEP, SCENARIOS_STEP], labels={"cohort": "baseline"})
    results = await run_journey(config, clock)
    assert [r.outcome for r in results] == [Outcome.OK] * 11, [r.reason for r in results]
    assert all(r.probe == "login-flow" and r.kind == "journey" for r in results)
    assert all(r.started_at == clock.now() for r in results)
    assert dict(results[0].labels) == {"cohort": "baseline", "step": "login"}
    expansions = [dict(r.labels) for r in results[2:]]
    assert expansions[0] == {"cohort": "baseline", "step": "scenarios", "mode": "pbl", "lang": "en"}
    assert {(e["mode"], e["lang"]) for e in expansions} == {
        (m, lang) for m in ("pbl", "assessment", "discovery") for lang in ("en", "zhTW", "zhCN")
    }
    assert results[3].target == f"{base_url}/api/pbl/scenarios?lang=zhTW"
    assert results[0].target == f"{base_url}/api/auth/login"
    assert [(o.name, o.value) for o in results[0].observations] == [("http_status_code", 200.0)]


async def test_discovery_503_can_be_expected(app_url: tuple[Starlette, str], base_url: str) -> None:
    app_url[0].state.discovery_down = True
    step = {**SCENARIOS_STEP, "for_each": {"mode": ["discovery"], "lang": ["en"]}}
    (allowed,) = await run_journey(journey(base_url, [step]))
    assert allowed.ok, allowed.reason
    strict = {**step, "expect": {"status": [200]}}
    (failed,) = await run_journey(journey(base_url, [strict]))
    assert failed.outcome is Outcome.FAILED
    assert failed.reason == 'status 503 not in [200]: {"error":"Discovery is temporarily unavailable"}'


# --- failures stop the journey -------------------------------------------------------------------------


async def test_wrong_password_stops_the_journey(base_url: str) -> None:
    config = journey(
        base_url,
        [LOGIN_STEP, CHECK_STEP, SCENARIOS_STEP],
        variables={"email": "demo@example.com", "password": "nope"},
    )
    results = await run_journey(config)
    assert len(results) == 1  # later steps are not run and not reported
    (login,) = results
    assert login.outcome is Outcome.FAILED
    assert login.labels["step"] == "login"
    assert login.reason == (
        'status 401 not in [200]: {"success":false,"error":"Invalid email or password"} '
        "[journey login-flow stopped at step login; not run: check, scenarios]"
    )


async def test_failing_for_each_value_runs_its_siblings_then_stops(base_url: str) -> None:
    step = {**SCENARIOS_STEP, "for_each": {"mode": ["pbl"], "lang": ["en", "xx", "zhTW"]}, "expect": {}}
    results = await run_journey(journey(base_url, [step, CHECK_STEP]))
    assert [(r.labels["lang"], r.outcome) for r in results] == [
        ("en", Outcome.OK),
        ("xx", Outcome.FAILED),
        ("zhTW", Outcome.OK),
    ]
    assert results[1].reason.startswith("status 400 not in [2xx]")
    assert results[1].reason.endswith("[journey login-flow stopped at step scenarios; not run: check]")


async def test_last_step_failure_has_plain_reason(base_url: str) -> None:
    results = await run_journey(journey(base_url, [CHECK_STEP]))  # never logged in
    assert by_step(results) == [("check", "failed", "json authenticated = false, expected true")]


async def test_degraded_step_does_not_stop_the_journey(base_url: str) -> None:
    slow_login = {**LOGIN_STEP, "degraded_when": {"json": [{"path": "data.user.id", "min": 1}]}}
    results = await run_journey(journey(base_url, [slow_login, CHECK_STEP]))
    assert by_step(results) == [("login", "degraded", "json data.user.id = 7"), ("check", "ok", "")]


async def test_undefined_variable_fails_the_step(base_url: str) -> None:
    step = {"name": "whoami", "url": "/echo/{{user_id}}"}
    results = await run_journey(journey(base_url, [step, CHECK_STEP]))
    assert by_step(results) == [
        (
            "whoami",
            "failed",
            "undefined variable {{user_id}} [journey login-flow stopped at step whoami; not run: check]",
        )
    ]


# --- cookies, variables, captures ----------------------------------------------------------------------


async def test_fresh_cookie_jar_per_run(base_url: str) -> None:
    anonymous = {
        "name": "anonymous",
        "url": "/api/auth/check",
        "expect": {"json": [{"path": "authenticated", "equals": False}]},
    }
    probe = JourneyProbe(
        journey(base_url, [anonymous, LOGIN_STEP, CHECK_STEP]), defaults=DEFAULTS, clock=SystemClock()
    )
    try:
        first = await probe.run()
        second = await probe.run()  # a jar shared across runs would make `anonymous` fail here
    finally:
        await probe.aclose()
    assert (
        by_step(first)
        == by_step(second)
        == [("anonymous", "ok", ""), ("login", "ok", ""), ("check", "ok", "")]
    )


async def test_redirect_cookie_lands_in_the_journey_jar(base_url: str) -> None:
    bounce = {
        "name": "bounce",
        "url": "/bounce",
        "follow_redirects": True,
        "expect": {"json": [{"path": "authenticated", "equals": True}]},
    }
    results = await run_journey(journey(base_url, [bounce, CHECK_STEP]))
    assert by_step(results) == [("bounce", "ok", ""), ("check", "ok", "")]


async def test_captures_from_json_header_cookie_regex_feed_later_steps(base_url: str) -> None:
    login = {
        **LOGIN_STEP,
        "capture": {
            "token": {"json": "data.token"},
            "user_id": {"json": "data.user.id"},
            "request_id": {"header": "X-Request-Id"},
            "session": {"cookie": "sessionToken"},
        },
    }
    page = {
        "name": "page",
        "url": "/page",
        "capture": {
            "csrf": {"regex": 'name="csrf" value="([^"]+)"'},
            "build": {"regex": "build \\d+\\.\\d+"},
        },
    }
    use = {
        "name": "use",
        "method": "POST",
        "url": "/echo/users/{{user_id}}",
        "headers": {"Authorization": "Bearer {{token}}", "X-Request-Id": "{{request_id}}"},
        "params": {"csrf": "{{csrf}}", "build": "{{build}}"},
        "json": {"session": "{{session}}", "nested": ["{{token}}", 1, {"who": "{{email}}"}], "flag": True},
        "expect": {
            "json": [
                {"path": "path", "equals": "/echo/users/7"},
                {"path": 'headers."authorization"', "equals": "Bearer tok-42"},
                {"path": 'headers."x-request-id"', "equals": "req-99"},
                {"path": "query.csrf", "equals": "c5rf-token"},
                {"path": "query.build", "equals": "build 2026.11"},
                {"path": "cookies.sessionToken", "equals": "s-1"},
            ]
        },
        "capture": {"echoed": {"json": "body"}},
    }
    raw = {
        "name": "raw",
        "method": "POST",
        "url": "/echo/raw",
        "body": "token={{token}}&lang={{lang}}",
        "for_each": {"lang": ["en"]},
        "expect": {"json": [{"path": "body", "equals": "token=tok-42&lang=en"}]},
    }
    results = await run_journey(journey(base_url, [login, page, use, raw]))
    assert by_step(results) == [("login", "ok", ""), ("page", "ok", ""), ("use", "ok", ""), ("raw", "ok", "")]


async def test_json_body_rendered_with_types_kept(base_url: str) -> None:
    step = {
        "name": "post",
        "method": "POST",
        "url": "/echo/x",
        "json": {"who": "{{email}}", "n": 1, "ok": True, "list": ["{{password}}", None]},
        "expect": {
            "json": [
                {"path": 'headers."content-type"', "equals": "application/json"},
                {
                    "path": "body",
                    "equals": '{"who":"demo@example.com","n":1,"ok":true,"list":["demo1234",null]}',
                },
            ]
        },
    }
    assert by_step(await run_journey(journey(base_url, [step]))) == [("post", "ok", "")]


@pytest.mark.parametrize(
    ("capture", "reason"),
    [
        ({"json": "data.missing"}, "capture v: json data.missing not found"),
        ({"header": "X-Nope"}, "capture v: header X-Nope missing"),
        ({"cookie": "nope"}, "capture v: cookie nope not set"),
        ({"regex": "zzz(\\d+)"}, "capture v: body does not match /zzz(\\d+)/"),
    ],
)
async def test_missing_capture_fails_the_step(base_url: str, capture: dict[str, str], reason: str) -> None:
    login = {**LOGIN_STEP, "capture": {"v": capture}}
    results = await run_journey(journey(base_url, [login, CHECK_STEP]))
    assert by_step(results) == [
        ("login", "failed", reason + " [journey login-flow stopped at step login; not run: check]")
    ]


async def test_relative_urls_join_base_url_with_a_path(base_url: str) -> None:
    step = {
        "name": "echo",
        "url": "users/1",
        "expect": {"json": [{"path": "path", "equals": "/echo/users/1"}]},
    }
    absolute = {"name": "abs", "url": f"{base_url}/api/auth/check"}
    results = await run_journey(journey(base_url + "/echo/", [step, absolute]))
    assert by_step(results) == [("echo", "ok", ""), ("abs", "ok", "")]


async def test_template_parsing() -> None:
    template = Template.parse("/api/{{ mode }}/x?{{lang}}")
    assert template.parts == ("/api/", "mode", "/x?", "lang", "")
    assert template.render({"mode": "pbl", "lang": "en"}) == "/api/pbl/x?en"
    assert Template.parse("plain").constant
    with pytest.raises(UndefinedVariable):
        template.render({"mode": "pbl"})


# --- the journey deadline -------------------------------------------------------------------------------


async def test_journey_timeout_fails_the_step_in_flight(base_url: str) -> None:
    slow = {"name": "slow", "url": "/slow", "params": {"s": "1.5"}}
    config = journey(base_url, [LOGIN_STEP, slow, CHECK_STEP], timeout="600ms")
    started = time.monotonic()
    results = await run_journey(config)
    elapsed = time.monotonic() - started
    assert elapsed < 1.6
    assert by_step(results)[0] == ("login", "ok", "")
    assert len(results) == 2
    assert results[1].labels["step"] == "slow"
    assert results[1].outcome is Outcome.FAILED
    assert results[1].reason.startswith("timeout after 0.6 s")
    assert results[1].reason.endswith("[journey login-flow stopped at step slow; not run: check]")


# --- against the reference service (watchdog.demo) ------------------------------------------------------


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def reference() -> AsyncIterator[ReferenceServer]:
    server = ReferenceServer(rate_limits=False, slow_db_ms=50)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest_asyncio.fixture(loop_scope="module")
async def ref_url(reference: ReferenceServer) -> AsyncIterator[str]:
    async with httpx.AsyncClient(base_url=reference.base_url) as client:
        (await client.delete("/_faults")).raise_for_status()
        yield reference.base_url
        (await client.delete("/_faults")).raise_for_status()


async def set_faults(base_url: str, **faults: Any) -> None:
    async with httpx.AsyncClient(base_url=base_url) as client:
        (await client.post("/_faults", json=faults)).raise_for_status()


HEALTH_PROBE: dict[str, Any] = {
    "kind": "http",
    "name": "api-health",
    "url": "/api/health",
    "expect": {
        "status": [200],
        "json": [
            {"path": "status", "in": ["healthy", "degraded"]},
            {"path": "checks.database.status", "equals": True},
        ],
        "headers": {"content-type": "application/json"},
    },
    "degraded_when": {"json": [{"path": "status", "equals": "degraded"}]},
}


async def health_result(base_url: str) -> ProbeResult:
    config = HttpProbeConfig.model_validate({**HEALTH_PROBE, "url": base_url + "/api/health"})
    probe = HttpProbe(config, defaults=DEFAULTS, clock=SystemClock())
    try:
        (result,) = await probe.run()
    finally:
        await probe.aclose()
    return result


async def test_reference_health_ok_degraded_failed(ref_url: str) -> None:
    healthy = await health_result(ref_url)
    assert healthy.ok, healthy.reason

    await set_faults(ref_url, db_latency_ms=80)  # slower than slow_db_ms=50 → "degraded", still HTTP 200
    degraded = await health_result(ref_url)
    assert degraded.outcome is Outcome.DEGRADED
    assert degraded.reason == 'json status = "degraded"'

    await set_faults(ref_url, db_latency_ms=0, db_down=True)
    down = await health_result(ref_url)
    assert down.outcome is Outcome.FAILED
    assert down.reason.startswith('status 503 not in [200]: {"status":"unhealthy"')
    assert "injected fault: db_down" in down.reason


REFERENCE_JOURNEY: list[dict[str, Any]] = [
    LOGIN_STEP,
    CHECK_STEP,
    {
        "name": "scenarios",
        "url": "/api/{{mode}}/scenarios",
        "params": {"lang": "{{lang}}"},
        "for_each": {"mode": ["pbl", "assessment", "discovery"], "lang": ["en", "zhTW", "zhCN"]},
        # Production may answer /api/discovery/* with a deliberate 503 (without X-Cache, so no header check).
        "expect": {"status": [200, 503]},
    },
]


async def test_reference_content_endpoint(ref_url: str) -> None:
    config = HttpProbeConfig.model_validate(
        {
            "kind": "http",
            "name": "pbl-zhtw",
            "url": ref_url + "/api/pbl/scenarios",
            "params": {"lang": "zhTW", "source": "yaml"},
            "labels": {"cohort": "yaml", "lang": "zhTW"},
            "expect": {
                "headers": {"X-Cache": "^(HIT|MISS)$", "X-Data-Source": "^yaml$"},
                "json": [
                    {"path": "success", "equals": True},
                    {"path": "length(data.scenarios)", "min": 1},
                    {"path": "data.scenarios[0].id", "regex": "^[0-9a-f-]{36}$"},
                ],
            },
        }
    )
    probe = HttpProbe(config, defaults=DEFAULTS, clock=SystemClock())
    try:
        results = [(await probe.run())[0] for _ in range(2)]
    finally:
        await probe.aclose()
    assert [r.reason for r in results] == ["", ""]
    assert results[0].target == ref_url + "/api/pbl/scenarios?lang=zhTW&source=yaml"


async def test_reference_login_journey(ref_url: str) -> None:
    results = await run_journey(journey(ref_url, REFERENCE_JOURNEY))
    assert [r.outcome for r in results] == [Outcome.OK] * 11, [r.reason for r in results]
    assert [r.labels["step"] for r in results[:2]] == ["login", "check"]
    assert {(r.labels["mode"], r.labels["lang"]) for r in results[2:]} == {
        (m, lang) for m in ("pbl", "assessment", "discovery") for lang in ("en", "zhTW", "zhCN")
    }


async def test_reference_wrong_password_and_unverified_user(ref_url: str) -> None:
    wrong = await run_journey(
        journey(ref_url, REFERENCE_JOURNEY, variables={"email": "demo@example.com", "password": "wrong"})
    )
    assert len(wrong) == 1
    assert wrong[0].labels["step"] == "login" and wrong[0].outcome is Outcome.FAILED
    assert wrong[0].reason.startswith(
        'status 401 not in [200]: {"success":false,"error":"Invalid email or password"}'
    )
    assert wrong[0].reason.endswith("[journey login-flow stopped at step login; not run: check, scenarios]")

    unverified = await run_journey(
        journey(
            ref_url, REFERENCE_JOURNEY, variables={"email": "unverified@example.com", "password": "demo1234"}
        )
    )
    assert len(unverified) == 1
    assert unverified[0].reason.startswith("status 403 not in [200]")
    assert "verify your email" in unverified[0].reason


async def test_reference_discovery_unavailable_is_expected(ref_url: str) -> None:
    await set_faults(ref_url, discovery_unavailable=True)
    results = await run_journey(journey(ref_url, REFERENCE_JOURNEY))
    assert [r.reason for r in results] == [""] * 11
    discovery = [r for r in results if r.labels.get("mode") == "discovery"]
    assert [o.value for r in discovery for o in r.observations] == [503.0, 503.0, 503.0]

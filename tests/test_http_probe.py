"""The http probe against real loopback servers (Starlette via uvicorn; TLS with a self-signed cert)."""

from __future__ import annotations

import asyncio
import calendar
import json
import ssl
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from loopback import closed_port, hanging_server, serve_asgi
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from watchdog.config.probes import HttpProbeConfig, TlsCheck
from watchdog.config.settings import ProbeDefaults
from watchdog.core.clock import FakeClock, SystemClock
from watchdog.core.results import Outcome, ProbeResult
from watchdog.probes._assertions import JsonPath
from watchdog.probes._client import describe_error, make_client, read_body
from watchdog.probes.base import Probe
from watchdog.probes.http import HttpProbe, cert_not_after

DEFAULTS = ProbeDefaults(interval=30, timeout=5)

HEALTHY: dict[str, Any] = {
    "status": "healthy",
    "version": "1.4.2",
    "checks": {"database": {"status": True, "responseTime": 3}, "memory": {"percentage": 41.5}},
    "uptime": 1234,
    "debug": None,
}


def make_app() -> Starlette:
    """A small stand-in for the watched service."""
    peers: set[int] = set()

    async def doc(request: Request) -> Response:
        """``?doc=<json>&status=<code>&delay_ms=<n>``: answers that document (default: HEALTHY)."""
        raw = request.query_params.get("doc")
        delay = float(request.query_params.get("delay_ms", "0"))
        if delay:
            await asyncio.sleep(delay / 1000)
        status = int(request.query_params.get("status", "200"))
        body = json.loads(raw) if raw is not None else HEALTHY
        return JSONResponse(body, status_code=status, headers={"X-Cache": "HIT"})

    async def text(request: Request) -> Response:
        return PlainTextResponse(request.query_params.get("text", "hello world"))

    async def empty(_: Request) -> Response:
        return Response(status_code=204)

    async def echo(request: Request) -> Response:
        assert request.client is not None
        peers.add(request.client.port)
        response = JSONResponse(
            {
                "method": request.method,
                "headers": {k.lower(): v for k, v in request.headers.items()},
                "query": dict(request.query_params),
                "body": (await request.body()).decode(),
                "cookies": dict(request.cookies),
                "connections": len(peers),
            }
        )
        if "set" in request.query_params:
            response.set_cookie("session", "abc123")
        return response

    async def redirect(_: Request) -> Response:
        response = RedirectResponse("/echo", status_code=302)
        response.set_cookie("hop", "1")
        return response

    async def latin1(_: Request) -> Response:
        return Response("café".encode("latin-1"), media_type="text/plain; charset=iso-8859-1")

    return Starlette(
        routes=[
            Route("/doc", doc),
            Route("/text", text),
            Route("/empty", empty),
            Route("/echo", echo, methods=["GET", "POST", "PUT", "HEAD"]),
            Route("/redirect", redirect),
            Route("/latin1", latin1),
        ]
    )


# One event loop for the module, so one server serves the stateless tests (starting and stopping uvicorn
# costs ~0.2 s); tests that count connections get their own app (`fresh_url`).
pytestmark = pytest.mark.asyncio(loop_scope="module")  # (so even the pure tests are async defs)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def base_url() -> AsyncIterator[str]:
    async with serve_asgi(make_app()) as url:
        yield url


@pytest_asyncio.fixture(loop_scope="module")
async def fresh_url() -> AsyncIterator[str]:
    async with serve_asgi(make_app()) as url:
        yield url


def http_config(url: str, **fields: Any) -> HttpProbeConfig:
    return HttpProbeConfig.model_validate({"kind": "http", "name": "api-health", "url": url, **fields})


async def run_once(config: HttpProbeConfig, clock: Any = None, **kwargs: Any) -> ProbeResult:
    probe = HttpProbe(config, defaults=DEFAULTS, clock=clock or SystemClock(), **kwargs)
    try:
        (result,) = await probe.run()
    finally:
        await probe.aclose()
    return result


def doc_url(base_url: str, doc: Any = None, status: int = 200) -> str:
    url = httpx.URL(base_url + "/doc", params={"status": str(status)})
    if doc is not None:
        url = url.copy_merge_params({"doc": json.dumps(doc)})
    return str(url)


# --- ok path ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
async def test_healthy_endpoint_passes_every_assertion_kind(base_url: str, transport: str) -> None:
    clock = FakeClock()
    config = http_config(
        doc_url(base_url),
        labels={"cohort": "baseline"},
        expect={
            "status": [200],
            "body_regex": '"status":\\s*"healthy"',
            "headers": {"X-Cache": "^(HIT|MISS)$", "content-type": "json"},
            "max_latency": "5s",
            "json": [
                {"path": "status", "in": ["healthy", "degraded"]},
                {"path": "checks.database.status", "equals": True},
                {"path": "version", "regex": "^\\d+\\.\\d+\\.\\d+$"},
                {"path": "checks.memory.percentage", "min": 0, "max": 90},
                {"path": "uptime", "exists": True},
                {"path": "checks.redis", "exists": False},
                {"path": "status", "not_equals": "unhealthy"},
                {"path": "checks.database.responseTime"},
            ],
        },
    )
    client = make_client(5.0, transport=transport)  # type: ignore[arg-type]
    try:
        result = await run_once(config, clock, client=client)
    finally:
        await client.aclose()
    assert result.outcome is Outcome.OK, result.reason
    assert result.reason == ""
    assert result.probe == "api-health" and result.kind == "http"
    assert result.started_at == clock.now()
    assert dict(result.labels) == {"cohort": "baseline"}
    assert [(o.name, o.value) for o in result.observations] == [("http_status_code", 200.0)]
    assert result.target == doc_url(base_url)


async def test_status_classes_and_lists(base_url: str) -> None:
    assert (await run_once(http_config(base_url + "/empty", expect={"status": ["2xx"]}))).ok
    assert (await run_once(http_config(doc_url(base_url, status=503), expect={"status": [200, 503]}))).ok
    result = await run_once(http_config(doc_url(base_url, {"error": "gone"}, status=404)))
    assert result.outcome is Outcome.FAILED
    assert result.reason == 'status 404 not in [2xx]: {"error":"gone"}'


async def test_unexpected_status_reason_quotes_the_body(base_url: str) -> None:
    doc = {"status": "unhealthy", "checks": {"database": {"status": False, "error": "connection refused"}}}
    result = await run_once(
        http_config(
            doc_url(base_url, doc, status=503),
            expect={"status": [200], "json": [{"path": "status", "in": ["healthy", "degraded"]}]},
        )
    )
    assert result.outcome is Outcome.FAILED
    assert result.reason.startswith("status 503 not in [200]: ")
    assert "connection refused" in result.reason
    assert [(o.name, o.value) for o in result.observations] == [("http_status_code", 503.0)]


# --- each assertion kind failing, with the reason an on-call engineer reads ----------------------------


@pytest.mark.parametrize(
    ("assertion", "reason"),
    [
        ({"path": "status", "equals": "ok"}, 'json status = "healthy", expected "ok"'),
        (
            {"path": "status", "in": ["degraded", "unhealthy"]},
            'json status = "healthy", expected one of ["degraded", "unhealthy"]',
        ),
        ({"path": "status", "not_equals": "healthy"}, 'json status = "healthy", expected anything else'),
        ({"path": "version", "regex": "^2\\."}, 'json version = "1.4.2", expected to match /^2\\./'),
        ({"path": "uptime", "min": 3600}, "json uptime = 1234, expected ≥ 3600"),
        (
            {"path": "checks.memory.percentage", "max": 40},
            "json checks.memory.percentage = 41.5, expected ≤ 40",
        ),
        ({"path": "status", "min": 1}, 'json status = "healthy", expected a number'),
        ({"path": "checks.redis.status", "exists": True}, "json checks.redis.status is missing"),
        ({"path": "checks.redis.status"}, "json checks.redis.status is missing"),
        ({"path": "uptime", "exists": False}, "json uptime = 1234, expected it to be absent"),
        ({"path": "checks.redis", "equals": "up"}, 'json checks.redis is missing, expected "up"'),
        ({"path": "checks.database.status", "equals": 1}, "json checks.database.status = true, expected 1"),
    ],
)
async def test_json_assertion_failures(base_url: str, assertion: dict[str, Any], reason: str) -> None:
    result = await run_once(http_config(doc_url(base_url), expect={"json": [assertion]}))
    assert result.outcome is Outcome.FAILED
    assert result.reason == reason


async def test_json_null_only_passes_explicit_equals_null(base_url: str) -> None:
    ok = await run_once(http_config(doc_url(base_url), expect={"json": [{"path": "debug", "equals": None}]}))
    assert ok.ok, ok.reason
    failed = await run_once(http_config(doc_url(base_url), expect={"json": [{"path": "debug"}]}))
    assert failed.reason == "json debug is missing"


async def test_body_not_json(base_url: str) -> None:
    result = await run_once(
        http_config(base_url + "/text", expect={"json": [{"path": "status", "equals": "healthy"}]})
    )
    assert result.outcome is Outcome.FAILED
    assert result.reason == "body is not JSON: hello world"


async def test_body_regex_and_charset(base_url: str) -> None:
    failed = await run_once(http_config(base_url + "/text", expect={"body_regex": "^goodbye"}))
    assert failed.reason == "body does not match /^goodbye/"
    latin = await run_once(http_config(base_url + "/latin1", expect={"body_regex": "^café$"}))
    assert latin.ok, latin.reason


async def test_header_missing_and_mismatch(base_url: str) -> None:
    result = await run_once(
        http_config(doc_url(base_url), expect={"headers": {"X-Cache": "^MISS$", "X-Request-Id": "."}})
    )
    assert result.outcome is Outcome.FAILED
    assert result.reason == 'header X-Cache = "HIT", expected to match /^MISS$/; header X-Request-Id missing'


async def test_max_latency_fails_and_latency_over_degrades(base_url: str) -> None:
    slow = str(httpx.URL(doc_url(base_url)).copy_merge_params({"delay_ms": "120"}))
    failed = await run_once(http_config(slow, expect={"max_latency": "50ms"}))
    assert failed.outcome is Outcome.FAILED
    assert failed.reason.startswith("latency ") and failed.reason.endswith(" ms over 50 ms")
    assert failed.latency_s >= 0.12

    degraded = await run_once(http_config(slow, degraded_when={"latency_over": "50ms"}))
    assert degraded.outcome is Outcome.DEGRADED
    assert degraded.reason.endswith(" ms over 50 ms")
    measured_ms = float(degraded.reason.split()[1])
    assert measured_ms == pytest.approx(degraded.latency_s * 1000, abs=1)


async def test_degraded_when_json_and_status(base_url: str) -> None:
    doc = {**HEALTHY, "status": "degraded"}
    result = await run_once(
        http_config(
            doc_url(base_url, doc),
            expect={"json": [{"path": "status", "in": ["healthy", "degraded"]}]},
            degraded_when={"json": [{"path": "status", "equals": "degraded"}]},
        )
    )
    assert result.outcome is Outcome.DEGRADED
    assert result.reason == 'json status = "degraded"'

    healthy = await run_once(
        http_config(doc_url(base_url), degraded_when={"json": [{"path": "status", "equals": "degraded"}]})
    )
    assert healthy.ok

    throttled = await run_once(
        http_config(
            doc_url(base_url, status=429), expect={"status": [200, 429]}, degraded_when={"status": [429]}
        )
    )
    assert throttled.outcome is Outcome.DEGRADED
    assert throttled.reason == "status 429 (degraded when in [429])"


async def test_failure_wins_over_degraded(base_url: str) -> None:
    doc = {**HEALTHY, "status": "degraded"}
    result = await run_once(
        http_config(
            doc_url(base_url, doc),
            expect={"json": [{"path": "status", "equals": "healthy"}]},
            degraded_when={"json": [{"path": "status", "equals": "degraded"}]},
        )
    )
    assert result.outcome is Outcome.FAILED
    assert result.reason == 'json status = "degraded", expected "healthy"'


# --- requests: method, headers, params, bodies, redirects, cookies, reuse --------------------------------


async def test_post_json_with_headers_and_params(base_url: str) -> None:
    config = http_config(
        base_url + "/echo?fixed=1",
        method="POST",
        headers={"X-Probe": "watchdog"},
        params={"lang": "zhTW"},
        json={"email": "demo@example.com", "rememberMe": False},
        expect={
            "json": [
                {"path": "method", "equals": "POST"},
                {"path": 'headers."x-probe"', "equals": "watchdog"},
                {"path": 'headers."content-type"', "equals": "application/json"},
                {"path": "query.lang", "equals": "zhTW"},
                {"path": "query.fixed", "equals": "1"},
                {"path": "body", "equals": '{"email":"demo@example.com","rememberMe":false}'},
            ]
        },
    )
    result = await run_once(config)
    assert result.ok, result.reason
    assert result.target == base_url + "/echo?fixed=1&lang=zhTW"


async def test_raw_body_and_head(base_url: str) -> None:
    put = await run_once(
        http_config(base_url + "/echo", method="PUT", body="plain text", expect={"body_regex": "plain text"})
    )
    assert put.ok, put.reason
    head = await run_once(http_config(base_url + "/echo", method="HEAD"))
    assert head.ok, head.reason


async def test_redirects_followed_only_when_asked(base_url: str) -> None:
    not_followed = await run_once(http_config(base_url + "/redirect"))
    assert not_followed.outcome is Outcome.FAILED
    assert not_followed.reason.startswith("status 302 not in [2xx]")
    followed = await run_once(
        http_config(
            base_url + "/redirect",
            follow_redirects=True,
            expect={"json": [{"path": "cookies.hop", "equals": "1"}]},  # cookie set on the 302 is sent on
        )
    )
    assert followed.ok, followed.reason


async def test_connections_reused_across_runs(fresh_url: str) -> None:
    config = http_config(fresh_url + "/echo", expect={"json": [{"path": "connections", "equals": 1}]})
    probe = HttpProbe(config, defaults=DEFAULTS, clock=SystemClock())
    try:
        results = [(await probe.run())[0] for _ in range(5)]
    finally:
        await probe.aclose()
    assert [r.reason for r in results] == [""] * 5  # five runs, one TCP connection


async def test_cookies_not_kept_across_runs(base_url: str) -> None:
    config = http_config(base_url + "/echo?set=1", expect={"json": [{"path": "cookies", "equals": {}}]})
    probe = HttpProbe(config, defaults=DEFAULTS, clock=SystemClock())
    try:
        results = [(await probe.run())[0] for _ in range(2)]
    finally:
        await probe.aclose()
    assert [r.reason for r in results] == ["", ""]


async def test_probe_client_keeps_no_cookies(base_url: str) -> None:
    client = make_client(5.0)
    try:
        await client.get(base_url + "/echo?set=1")
        seen = (await client.get(base_url + "/echo")).json()
    finally:
        await client.aclose()
    assert seen["cookies"] == {}
    assert len(client.cookies) == 0


async def test_injected_client_is_not_closed_by_the_probe(base_url: str) -> None:
    client = make_client(5.0)
    probe = HttpProbe(http_config(base_url + "/echo"), defaults=DEFAULTS, clock=SystemClock(), client=client)
    await probe.run()
    await probe.aclose()
    assert not client.is_closed
    assert (await client.get(base_url + "/echo")).status_code == 200
    await client.aclose()


async def test_read_body_limit(base_url: str) -> None:
    client = make_client(5.0)
    try:
        async with client.stream("GET", base_url + "/text") as response:
            assert await read_body(response, limit=5) is None
        async with client.stream("GET", base_url + "/text") as response:
            assert await read_body(response, limit=1000) == b"hello world"
    finally:
        await client.aclose()


# --- errors, timeouts ------------------------------------------------------------------------------------


async def test_dead_port_fails_with_connect_reason() -> None:
    started = time.monotonic()
    result = await run_once(http_config(f"http://127.0.0.1:{closed_port()}/api/health", timeout="2s"))
    assert time.monotonic() - started < 2
    assert result.outcome is Outcome.FAILED
    assert result.reason.startswith("ClientConnectorError: Cannot connect to host 127.0.0.1")


async def test_hanging_server_times_out_within_bound() -> None:
    async with hanging_server() as url:
        started = time.monotonic()
        result = await run_once(http_config(url + "/api/health", timeout="500ms"))
        elapsed = time.monotonic() - started
    assert result.outcome is Outcome.FAILED
    assert result.reason.startswith("timeout after 0.5 s")
    assert 0.4 <= elapsed < 1.5
    assert result.latency_s == pytest.approx(0.5, abs=0.2)


async def test_cancellation_propagates() -> None:
    async with hanging_server() as url:
        probe = HttpProbe(http_config(url, timeout="5s"), defaults=DEFAULTS, clock=SystemClock())
        task = asyncio.create_task(probe.run())
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await probe.aclose()


async def test_run_after_aclose_fails_instead_of_raising(base_url: str) -> None:
    probe = HttpProbe(http_config(base_url + "/echo"), defaults=DEFAULTS, clock=SystemClock())
    await probe.aclose()
    await probe.aclose()
    (result,) = await probe.run()
    assert result.outcome is Outcome.FAILED
    assert "closed" in result.reason


async def test_describe_error_unwraps_transport_causes() -> None:
    wrapped = httpx.ConnectTimeout("Server disconnected")
    wrapped.__cause__ = ConnectionResetError("Server disconnected")
    assert describe_error(wrapped, 5) == "ConnectionResetError: Server disconnected"
    assert describe_error(TimeoutError(), 2.5) == "timeout after 2.5 s"
    assert (
        describe_error(httpx.ReadTimeout("read timed out"), 3)
        == "timeout after 3 s (ReadTimeout: read timed out)"
    )
    assert describe_error(ValueError("bad\n  thing"), 1) == "ValueError: bad thing"


# --- config plumbing, target redaction -------------------------------------------------------------------


async def test_interval_and_timeout_from_defaults_or_config() -> None:
    probe = HttpProbe(http_config("http://127.0.0.1:1/"), defaults=DEFAULTS, clock=SystemClock())
    assert (probe.name, probe.kind, probe.interval_s, probe.timeout_s) == ("api-health", "http", 30.0, 5.0)
    assert isinstance(probe, Probe)
    own = HttpProbe(
        http_config("http://127.0.0.1:1/", interval="1m", timeout="3s"),
        defaults=DEFAULTS,
        clock=SystemClock(),
    )
    assert (own.interval_s, own.timeout_s) == (60.0, 3.0)


async def test_target_is_redacted_including_params() -> None:
    probe = HttpProbe(
        http_config("https://bot:pw@example.com/api/health", params={"access_token": "t0k"}),
        defaults=DEFAULTS,
        clock=SystemClock(),
    )
    assert probe.target == "https://***@example.com/api/health?access_token=***"


# --- TLS ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed EC certificate for 127.0.0.1, valid 30 days, made with the openssl CLI."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "30", "-subj", "/CN=127.0.0.1",
            "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def tls_url(self_signed: tuple[Path, Path]) -> AsyncIterator[str]:
    cert, key = self_signed
    async with serve_asgi(make_app(), certfile=cert, keyfile=key) as url:
        yield url


def openssl_not_after(cert: Path) -> float:
    out = subprocess.run(
        ["openssl", "x509", "-noout", "-enddate", "-in", str(cert)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout  # notAfter=Jan  5 09:34:43 2026 GMT
    return float(calendar.timegm(time.strptime(out.strip().split("=", 1)[1], "%b %d %H:%M:%S %Y %Z")))


async def test_cert_not_after_matches_openssl(self_signed: tuple[Path, Path]) -> None:
    cert, _ = self_signed
    der = ssl.PEM_cert_to_DER_cert(cert.read_text())
    assert cert_not_after(der) == openssl_not_after(cert)


async def test_tls_expiry_ok_warn_fail_with_self_signed(tls_url: str, self_signed: tuple[Path, Path]) -> None:
    not_after = openssl_not_after(self_signed[0])
    clock = FakeClock(start=not_after - 30 * 86400)
    probe = HttpProbe(
        http_config(tls_url + "/echo", tls={"verify": False, "warn_days": 21, "fail_days": 7}),
        defaults=DEFAULTS,
        clock=clock,
    )
    try:
        (fresh,) = await probe.run()
        assert fresh.ok, fresh.reason
        expiry = {o.name: o.value for o in fresh.observations}["tls_cert_expiry_days"]
        assert expiry == pytest.approx(30.0)

        clock.advance(15 * 86400)
        (warn,) = await probe.run()
        assert warn.outcome is Outcome.DEGRADED
        assert warn.reason == "TLS certificate expires in 15.0 days (warn under 21)"

        clock.advance(10 * 86400)
        (fail,) = await probe.run()
        assert fail.outcome is Outcome.FAILED
        assert fail.reason == "TLS certificate expires in 5.0 days (fail under 7)"

        clock.advance(6 * 86400)
        (expired,) = await probe.run()
        assert expired.reason == "TLS certificate expired 1.0 days ago"
    finally:
        await probe.aclose()


async def test_tls_handshake_cached_for_an_hour(tls_url: str) -> None:
    clock = FakeClock()
    probe = HttpProbe(http_config(tls_url + "/echo", tls={"verify": False}), defaults=DEFAULTS, clock=clock)
    try:
        for _ in range(3):
            await probe.run()
        assert probe._tls is not None and probe._tls.handshakes == 1
        clock.advance(3601)
        await probe.run()
        assert probe._tls.handshakes == 2
    finally:
        await probe.aclose()


async def test_tls_verify_fails_clearly_on_self_signed(tls_url: str) -> None:
    result = await run_once(http_config(tls_url + "/echo", tls={"verify": True}))
    assert result.outcome is Outcome.FAILED
    assert "CERTIFICATE_VERIFY_FAILED" in result.reason
    assert "self-signed certificate" in result.reason


async def test_tls_check_on_plain_http_url_fails(base_url: str) -> None:
    # `validate` rejects this (tests/test_probe_hardening.py); a config built in code still fails clearly.
    result = await run_once(http_config(base_url + "/echo").model_copy(update={"tls": TlsCheck()}))
    assert result.outcome is Outcome.FAILED
    assert result.reason == "tls check needs an https:// URL, got http://"


@pytest.mark.parametrize(
    "path",
    [
        "status",
        "checks.database.status",
        'checks."database".responseTime',
        "checks.database.status.deeper",
        "missing.path",
        "items[0].id",
        "length(items)",
        "items[?id > `1`].id",
        "checks.*.status",
    ],
)
async def test_json_path_fast_path_agrees_with_jmespath(path: str) -> None:
    import jmespath
    import jmespath.exceptions

    doc = {**HEALTHY, "items": [{"id": 1}, {"id": 2}]}
    for data in (doc, [doc], "text", None, {"checks": 5}):
        try:
            expected = jmespath.search(path, data)
        except jmespath.exceptions.JMESPathTypeError:
            expected = None  # JsonPath reports a runtime type error as "no value"
        assert JsonPath(path).search(data) == expected


async def test_jmespath_type_error_reads_as_missing(base_url: str) -> None:
    result = await run_once(
        http_config(doc_url(base_url), expect={"json": [{"path": "length(items)", "min": 1}]})
    )
    assert result.reason == "json length(items) is missing, expected ≥ 1"

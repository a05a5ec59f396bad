"""Issue 8, probes: credentials (in the URL and ``basic_auth``), redirect loops, TLS on http:// URLs, and the
shipped example config checked against the reference service. Every server is a real one on loopback."""

from __future__ import annotations

import asyncio
import base64
import json
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import pytest_asyncio
from loopback import serve_asgi
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from watchdog.config import ConfigError, load_config
from watchdog.config.probes import HttpProbeConfig, JourneyProbeConfig
from watchdog.config.settings import ProbeDefaults
from watchdog.core.clock import SystemClock
from watchdog.core.results import Outcome, ProbeResult
from watchdog.demo import ReferenceServer
from watchdog.probes._client import make_client
from watchdog.probes.http import MAX_REDIRECTS, HttpProbe
from watchdog.probes.journey import JourneyProbe

pytestmark = pytest.mark.asyncio(loop_scope="module")

REPO_ROOT = Path(__file__).resolve().parents[1]
PG_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULTS = ProbeDefaults(interval=30, timeout=5)
TRANSPORTS = ["aiohttp", "httpx"]

USER = "bot"
PASSWORD = "p@ss:w/rd s3cret"
"""Needs percent-encoding in a URL (``@ : / space``), so decoding is exercised too."""
PASSWORD_ENV = "WATCHDOG_TEST_BASIC_PASSWORD"


def authorization(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


EXPECTED = authorization(USER, PASSWORD)


def secret_spellings() -> set[str]:
    """What must never appear in a target or a reason: the password however it may be spelled."""
    token = EXPECTED.removeprefix("Basic ")
    return {PASSWORD, quote(PASSWORD, safe=""), quote(PASSWORD), token}


def assert_no_secret(results: Iterable[ProbeResult]) -> None:
    for result in results:
        shown = json.dumps(result.to_dict(), ensure_ascii=False)
        for secret in secret_spellings():
            assert secret not in shown, f"{secret!r} leaked into {shown}"


def with_credentials(url: str, user: str = USER, password: str = PASSWORD) -> str:
    scheme, rest = url.split("://", 1)
    return f"{scheme}://{quote(user, safe='')}:{quote(password, safe='')}@{rest}"


def masked(url: str) -> str:
    return url.replace("://", "://***@", 1)


@dataclass
class Site:
    url: str
    authorizations: list[str] = field(default_factory=list)
    """The Authorization header of every request to /private (empty string when none was sent)."""


def make_app(site: Site) -> Starlette:
    """``/private`` answers 200 only to basic auth ``USER:PASSWORD``; ``/hop`` redirects to it;
    ``/loop`` redirects to itself and ``/ping`` ↔ ``/pong`` to each other; ``/tattle`` answers 401 with
    the credentials it received in the body (a debug server echoing them)."""

    async def private(request: Request) -> Response:
        header = request.headers.get("authorization", "")
        site.authorizations.append(header)
        if header != EXPECTED:
            return JSONResponse({"error": "unauthorized"}, 401, headers={"WWW-Authenticate": "Basic"})
        return JSONResponse({"user": USER})

    async def hop(_: Request) -> Response:
        return RedirectResponse("/private", status_code=302)

    async def loop(_: Request) -> Response:
        return RedirectResponse("/loop", status_code=302)

    async def ping(_: Request) -> Response:
        return RedirectResponse("/pong", status_code=302)

    async def pong(_: Request) -> Response:
        return RedirectResponse("/ping", status_code=302)

    async def tattle(request: Request) -> Response:
        header = request.headers.get("authorization", "")
        decoded = base64.b64decode(header.removeprefix("Basic ")).decode() if header else ""
        return PlainTextResponse(f"rejected {header} ({decoded})", status_code=401)

    return Starlette(
        routes=[
            Route("/private", private),
            Route("/hop", hop),
            Route("/loop", loop),
            Route("/ping", ping),
            Route("/pong", pong),
            Route("/tattle", tattle),
        ]
    )


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def served() -> AsyncIterator[Site]:
    site = Site(url="")
    async with serve_asgi(make_app(site)) as url:
        site.url = url
        yield site


@pytest.fixture
def site(served: Site) -> Site:
    served.authorizations.clear()
    return served


def http_config(url: str, **fields: Any) -> HttpProbeConfig:
    return HttpProbeConfig.model_validate({"kind": "http", "name": "private-api", "url": url, **fields})


def journey_config(base_url: str, steps: list[dict[str, Any]]) -> JourneyProbeConfig:
    return JourneyProbeConfig.model_validate(
        {"kind": "journey", "name": "private-journey", "base_url": base_url, "steps": steps}
    )


async def run_http(config: HttpProbeConfig, transport: str = "aiohttp") -> ProbeResult:
    client = make_client(5.0, transport=transport)  # type: ignore[arg-type]
    probe = HttpProbe(config, defaults=DEFAULTS, clock=SystemClock(), client=client)
    try:
        (result,) = await probe.run()
    finally:
        await probe.aclose()
        await client.aclose()
    return result


async def run_journey(config: JourneyProbeConfig) -> list[ProbeResult]:
    probe = JourneyProbe(config, defaults=DEFAULTS, clock=SystemClock())
    try:
        return list(await probe.run())
    finally:
        await probe.aclose()


# --- item 8: credentials -----------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_credentials_in_the_url_are_sent_as_basic_auth(site: Site, transport: str) -> None:
    result = await run_http(http_config(with_credentials(site.url + "/private")), transport)
    assert result.ok, result.reason
    assert site.authorizations == [EXPECTED]
    assert result.target == masked(site.url) + "/private"  # the target still says credentials are used
    assert_no_secret([result])


async def test_credentials_in_the_url_survive_a_same_origin_redirect(site: Site) -> None:
    result = await run_http(http_config(with_credentials(site.url + "/hop"), follow_redirects=True))
    assert result.ok, result.reason
    assert site.authorizations == [EXPECTED]
    assert_no_secret([result])


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_basic_auth_with_password_from_the_environment(
    site: Site, transport: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    config = http_config(site.url + "/private", basic_auth={"username": USER, "password_env": PASSWORD_ENV})
    result = await run_http(config, transport)
    assert result.ok, result.reason
    assert site.authorizations == [EXPECTED]
    assert_no_secret([result])
    assert PASSWORD not in repr(config) and PASSWORD not in config.model_dump_json()


async def test_wrong_url_password_fails_without_showing_it(site: Site) -> None:
    wrong = "n0t-the-p@ssword"
    result = await run_http(http_config(with_credentials(site.url + "/private", password=wrong)))
    assert result.outcome is Outcome.FAILED
    assert result.reason.startswith("status 401 not in [2xx]"), result.reason
    assert site.authorizations == [authorization(USER, wrong)]
    shown = json.dumps(result.to_dict())
    assert wrong not in shown and quote(wrong, safe="") not in shown


async def test_a_server_echoing_the_credentials_does_not_leak_them_into_the_reason(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    from_url = await run_http(http_config(with_credentials(site.url + "/tattle")))
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    from_env = await run_http(
        http_config(site.url + "/tattle", basic_auth={"username": USER, "password_env": PASSWORD_ENV})
    )
    for result in (from_url, from_env):
        assert result.outcome is Outcome.FAILED
        assert result.reason.startswith("status 401 not in [2xx]"), result.reason
        assert "***" in result.reason
    assert_no_secret([from_url, from_env])


async def test_unset_password_variable_fails_without_sending_the_request(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    result = await run_http(
        http_config(site.url + "/private", basic_auth={"username": USER, "password_env": PASSWORD_ENV})
    )
    assert result.outcome is Outcome.FAILED
    assert result.reason == f"basic_auth: environment variable {PASSWORD_ENV} is not set"
    assert site.authorizations == []


async def test_journey_credentials_from_base_url_and_from_basic_auth(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    from_url = await run_journey(
        journey_config(
            with_credentials(site.url),
            [
                {"name": "first", "url": "/private"},
                {"name": "again", "url": "/hop", "follow_redirects": True},
            ],
        )
    )
    from_env = await run_journey(
        journey_config(
            site.url,
            [
                {
                    "name": "private",
                    "url": "/private",
                    "basic_auth": {"username": USER, "password_env": PASSWORD_ENV},
                },
                {"name": "anonymous", "url": "/private", "expect": {"status": [401]}},
            ],
        )
    )
    assert [(r.labels["step"], r.outcome, r.reason) for r in from_url + from_env] == [
        ("first", Outcome.OK, ""),
        ("again", Outcome.OK, ""),
        ("private", Outcome.OK, ""),
        ("anonymous", Outcome.OK, ""),
    ]
    assert site.authorizations == [EXPECTED, EXPECTED, EXPECTED, ""]
    assert {r.target for r in from_url} == {masked(site.url) + "/private", masked(site.url) + "/hop"}
    assert {r.target for r in from_env} == {site.url + "/private"}
    assert_no_secret(from_url + from_env)


async def test_journey_step_with_unset_password_variable_fails(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    results = await run_journey(
        journey_config(
            site.url,
            [
                {
                    "name": "private",
                    "url": "/private",
                    "basic_auth": {"username": USER, "password_env": PASSWORD_ENV},
                },
                {"name": "later", "url": "/private"},
            ],
        )
    )
    assert [(r.labels["step"], r.outcome) for r in results] == [("private", Outcome.FAILED)]
    assert results[0].reason.startswith(f"basic_auth: environment variable {PASSWORD_ENV} is not set")
    assert site.authorizations == []


# --- item 9: redirect loops --------------------------------------------------------------------------------


@asynccontextmanager
async def strict_server() -> AsyncIterator[str]:
    """Refuses a GET that carries a body (``Transfer-Encoding`` or a non-zero ``Content-Length``) with 400
    and closes, as some servers and proxies do. ``/loop`` redirects to itself, ``/hop`` to ``/done``, which
    answers 200."""

    def answer(status: bytes, extra: bytes = b"", body: bytes = b"") -> bytes:
        return b"HTTP/1.1 " + status + b"\r\n" + extra + b"Content-Length: %d\r\n\r\n" % len(body) + body

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            # The client closing its side ends the conversation; that is not an error here.
            with suppress(asyncio.IncompleteReadError, ConnectionError):
                while True:
                    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").lower()
                    request_line, *header_lines = head.strip().split("\r\n")
                    headers = dict(line.split(":", 1) for line in header_lines)
                    path = request_line.split(" ")[1]
                    if "transfer-encoding" in headers or int(headers.get("content-length", "0")) > 0:
                        writer.write(answer(b"400 Bad Request", b"Connection: close\r\n", b"GET with a body"))
                        await writer.drain()
                        break
                    if path == "/done":
                        writer.write(answer(b"200 OK", body=b"done"))
                    else:
                        target = b"/done" if path == "/hop" else b"/loop"
                        writer.write(answer(b"302 Found", b"Location: " + target + b"\r\n"))
                    await writer.drain()
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_redirected_get_sends_no_body(transport: str) -> None:
    async with strict_server() as url:
        loop = await run_http(http_config(url + "/loop", follow_redirects=True), transport)
        hop = await run_http(
            http_config(url + "/hop", follow_redirects=True, expect={"body_regex": "done"}), transport
        )
    assert loop.outcome is Outcome.FAILED
    assert loop.reason == f"too many redirects ({MAX_REDIRECTS}); the last pointed to {url}/loop"
    assert hop.ok, hop.reason


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("path", ["/loop", "/ping"])
async def test_redirect_loop_reports_too_many_redirects(site: Site, transport: str, path: str) -> None:
    result = await run_http(http_config(site.url + path, follow_redirects=True), transport)
    assert result.outcome is Outcome.FAILED
    assert result.reason.startswith(f"too many redirects ({MAX_REDIRECTS})"), result.reason


async def test_journey_step_in_a_redirect_loop_reports_too_many_redirects(site: Site) -> None:
    (result,) = await run_journey(
        journey_config(site.url, [{"name": "loop", "url": "/loop", "follow_redirects": True}])
    )
    assert result.outcome is Outcome.FAILED
    assert result.reason.startswith(f"too many redirects ({MAX_REDIRECTS})"), result.reason


async def test_redirect_loop_with_credentials_keeps_them_out_of_the_reason(site: Site) -> None:
    result = await run_http(http_config(with_credentials(site.url + "/loop"), follow_redirects=True))
    assert result.reason.startswith(f"too many redirects ({MAX_REDIRECTS})"), result.reason
    assert_no_secret([result])


# --- item 10: TLS on http:// is a config problem; the shipped config works ----------------------------------


PROBLEMS = """\
probes:
  - name: tls-on-plain-http
    kind: http
    url: ${PLAIN_URL}/api/health
    tls: {warn_days: 21, fail_days: 7}
  - name: tls-when-https
    kind: http
    url: ${PLAIN_URL}/api/health
    tls: {warn_days: 21, fail_days: 7, only_when_https: true}
  - name: auth-twice
    kind: http
    url: http://bot:pw@127.0.0.1:1/x
    basic_auth: {username: bot, password_env: SOME_PASSWORD}
  - name: auth-and-header
    kind: http
    url: http://127.0.0.1:1/x
    headers: {authorization: Bearer abc}
    basic_auth: {username: bot, password_env: SOME_PASSWORD}
  - name: bad-env-name
    kind: http
    url: http://127.0.0.1:1/x
    basic_auth: {username: bot, password_env: "not a name"}
  - name: journey-auth-and-header
    kind: journey
    base_url: http://127.0.0.1:1
    steps:
      - name: one
        url: /x
        headers: {Authorization: "Bearer {{token}}"}
        basic_auth: {username: bot, password_env: SOME_PASSWORD}
  - name: url-and-header
    kind: http
    url: http://bot:pw@127.0.0.1:1/x
    headers: {Authorization: Bearer abc}
"""


def config_problems(tmp_path: Path, text: str, environ: dict[str, str]) -> list[str]:
    (tmp_path / "probes").mkdir()
    (tmp_path / "probes" / "p.yaml").write_text(text)
    try:
        load_config(tmp_path, environ=environ)
    except ConfigError as exc:
        return [str(p) for p in exc.problems]
    return []


async def test_validate_reports_tls_on_http_and_conflicting_credentials_with_file_and_line(
    tmp_path: Path,
) -> None:
    problems = config_problems(tmp_path, PROBLEMS, {"PLAIN_URL": "http://127.0.0.1:3000"})
    assert problems == [
        "probes/p.yaml:5: probes[0].tls: tls check needs an https:// URL, "
        "got http://127.0.0.1:3000/api/health (use an https:// URL, "
        "or set only_when_https: true to check the certificate only when it is one)",
        "probes/p.yaml:13: probes[2].basic_auth: credentials are given twice: in the URL and in basic_auth",
        "probes/p.yaml:18: probes[3].basic_auth: credentials are given twice: "
        "an Authorization header and basic_auth",
        "probes/p.yaml:22: probes[4].basic_auth.password_env: "
        "'not a name' is not an environment variable name",
        "probes/p.yaml:30: probes[5].steps[0].basic_auth: credentials are given twice: "
        "an Authorization header and basic_auth",
        "probes/p.yaml:34: probes[6].headers: "
        "credentials are given twice: in the URL and an Authorization header",
    ]


async def test_tls_on_https_url_from_the_environment_is_valid(tmp_path: Path) -> None:
    problems = config_problems(
        tmp_path, "\n".join(PROBLEMS.splitlines()[:9]) + "\n", {"PLAIN_URL": "https://example.com"}
    )
    assert problems == []


async def test_tls_only_when_https_skips_the_check_on_http(site: Site) -> None:
    with pytest.raises(ValidationError, match="tls check needs an https:// URL"):
        http_config(with_credentials(site.url + "/private"), tls={})
    result = await run_http(
        http_config(with_credentials(site.url + "/private"), tls={"only_when_https": True})
    )
    assert result.ok, result.reason
    assert [o.name for o in result.observations] == ["http_status_code"]


def prometheus_app() -> Starlette:
    """Answers every instant query with one sample of 25 (percent): the database host's CPU and memory."""

    async def query(_: Request) -> Response:
        sample = {"metric": {"instance": "db-1:9100"}, "value": [time.time(), "25"]}
        return JSONResponse({"status": "success", "data": {"resultType": "vector", "result": [sample]}})

    return Starlette(routes=[Route("/api/v1/query", query)])


@pytest.mark.postgres
async def test_the_shipped_example_config_passes_check_against_the_reference_service(tmp_path: Path) -> None:
    async with (
        ReferenceServer(sqlite_path=tmp_path / "content.db") as service,
        serve_asgi(prometheus_app()) as prometheus_url,
    ):
        # Every variable the example probes read (probes/*.yaml): the service, its probe account (the
        # reference service's own), the database (the local server) and Prometheus (the fake above).
        env = {
            "PATH": "/usr/bin:/bin",
            "TARGET_BASE_URL": service.base_url,
            "PROBE_USER_EMAIL": "demo@example.com",
            "PROBE_USER_PASSWORD": "demo1234",
            "DATABASE_URL": PG_DSN,
            "PROMETHEUS_URL": prometheus_url,
        }
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "watchdog.cli.main",
            "check",
            "--config",
            str(REPO_ROOT),
            "--json",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            cwd=tmp_path,
        )
        stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode in (0, 1), stderr.decode()
    results = [ProbeResult.from_dict(item) for item in json.loads(stdout)]
    shown = textwrap.indent(
        "\n".join(f"{r.probe} {dict(r.labels)} {r.outcome.value}: {r.reason}" for r in results), "  "
    )
    expected = {p.name for p in load_config(REPO_ROOT, environ=env).enabled_probes()}
    assert {r.probe for r in results} == expected
    assert [r for r in results if r.outcome is Outcome.FAILED] == [], "failed results:\n" + shown
    assert all(r.reason for r in results if r.outcome is Outcome.DEGRADED), shown
    assert proc.returncode == 0, shown


async def test_the_shipped_configs_are_valid_with_http_and_https_targets() -> None:
    from watchdog.cli.demo import demo_config_dir

    for base in ("http://127.0.0.1:3000", "https://ai-square.example"):
        assert load_config(REPO_ROOT, environ={"TARGET_BASE_URL": base}).probes
        assert load_config(demo_config_dir(), environ={"TARGET_BASE_URL": base}).probes

"""The Probe contract, one suite for every kind here: HttpProbe, JourneyProbe, PostgresProbe and the FakeProbe
test double.

* ``run()`` returns ProbeResults carrying the probe's name and kind, ``started_at`` from the injected clock;
* it never raises on a dead target (closed loopback port) or a hanging one (accepts, never answers): it
  returns ``failed`` with a reason, the hang bounded by ``timeout_s`` (checked within timeout + 1 s);
* cancellation is not swallowed; ``aclose`` is idempotent and ``run`` after it still does not raise.

PostgresProbe's healthy target is the local server (127.0.0.1:5432, trust auth; ``WATCHDOG_TEST_PG_DSN``
overrides): like the store contract, it fails rather than skips when that server is missing. It returns one
result per check family, so where the others return one failed result it returns one per family, all failed.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import pytest
import pytest_asyncio
from loopback import closed_port, hanging_server, serve_asgi
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from watchdog.config.postgres import PostgresProbeConfig
from watchdog.config.probes import HttpProbeConfig, JourneyProbeConfig
from watchdog.config.settings import ProbeDefaults
from watchdog.core.clock import Clock, FakeClock
from watchdog.core.results import Outcome, ProbeResult
from watchdog.probes.base import Probe
from watchdog.probes.fake import FakeProbe
from watchdog.probes.http import HttpProbe
from watchdog.probes.journey import JourneyProbe
from watchdog.probes.postgres.probe import PostgresProbe

pytestmark = pytest.mark.asyncio(loop_scope="module")

TIMEOUT_S = 0.5
DEFAULTS = ProbeDefaults(interval=15, timeout=TIMEOUT_S)
PG_DSN = os.environ.get("WATCHDOG_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
PG_FAMILIES = ["connectivity", "connections", "queries", "locks", "replication", "vitals"]


@dataclass(frozen=True)
class Scenario:
    base_url: str
    """Where the probe points: a healthy app, a closed port or a hanging server."""
    state: str
    """"ok", "dead" or "hang"."""


ProbeFactory = Callable[[Scenario, Clock], Probe]


def make_http(scenario: Scenario, clock: Clock) -> Probe:
    config = HttpProbeConfig.model_validate(
        {
            "kind": "http",
            "name": "contract-http",
            "url": scenario.base_url + "/api/health",
            "labels": {"cohort": "baseline"},
            "expect": {"json": [{"path": "status", "equals": "healthy"}]},
        }
    )
    return HttpProbe(config, defaults=DEFAULTS, clock=clock)


def make_journey(scenario: Scenario, clock: Clock) -> Probe:
    config = JourneyProbeConfig.model_validate(
        {
            "kind": "journey",
            "name": "contract-journey",
            "base_url": scenario.base_url,
            "labels": {"cohort": "baseline"},
            "steps": [
                {"name": "health", "url": "/api/health", "capture": {"state": {"json": "status"}}},
                {"name": "again", "url": "/api/health?seen={{state}}"},
            ],
        }
    )
    return JourneyProbe(config, defaults=DEFAULTS, clock=clock)


def make_fake(scenario: Scenario, clock: Clock) -> Probe:
    if scenario.state == "dead":
        refused = ConnectionRefusedError(111, f"Connect call failed {scenario.base_url}")
        return FakeProbe(
            "contract-fake", [refused], clock=clock, timeout_s=TIMEOUT_S, labels={"cohort": "baseline"}
        )
    delay = 60.0 if scenario.state == "hang" else 0.0
    return FakeProbe(
        "contract-fake",
        [Outcome.OK],
        clock=clock,
        timeout_s=TIMEOUT_S,
        delay_s=delay,
        labels={"cohort": "baseline"},
    )


def make_postgres(scenario: Scenario, clock: Clock) -> Probe:
    # Healthy: the local server. Dead / hanging: the same loopback port the other kinds get, spoken to as
    # PostgreSQL (a hanging server accepts the connection and never answers the startup packet).
    if scenario.state == "ok":
        dsn = PG_DSN
    else:
        dsn = scenario.base_url.replace("http://", "postgresql://postgres@", 1) + "/postgres"
    config = PostgresProbeConfig.model_validate(
        {"kind": "postgres", "name": "contract-postgres", "dsn": dsn, "labels": {"cohort": "baseline"}}
    )
    return PostgresProbe(config, defaults=DEFAULTS, clock=clock)


FACTORIES: dict[str, ProbeFactory] = {
    "http": make_http,
    "journey": make_journey,
    "fake": make_fake,
    "postgres": make_postgres,
}


@dataclass(frozen=True)
class Failing:
    """What a kind returns for a dead or hanging target."""

    results: int
    """How many results: one (a journey stops at its first step), or one per check family (postgres)."""
    dead: str
    """The first result's reason on a closed port contains this."""
    hang: str
    """The first result's reason on a hanging server starts with this."""


FAILING: dict[str, Failing] = {
    "http": Failing(1, "Connect call failed", f"timeout after {TIMEOUT_S:g} s"),
    "journey": Failing(1, "Connect call failed", f"timeout after {TIMEOUT_S:g} s"),
    "fake": Failing(1, "Connect call failed", f"timeout after {TIMEOUT_S:g} s"),
    "postgres": Failing(len(PG_FAMILIES), "connection refused at 127.0.0.1:", "timed out: no answer within"),
}


@pytest.fixture(
    params=[pytest.param(k, marks=pytest.mark.postgres) if k == "postgres" else k for k in sorted(FACTORIES)]
)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def factory(kind: str) -> ProbeFactory:
    return FACTORIES[kind]


@pytest.fixture
def failing(kind: str) -> Failing:
    return FAILING[kind]


def health_app() -> Starlette:
    async def health(_: Request) -> Response:
        return JSONResponse({"status": "healthy"})

    return Starlette(routes=[Route("/api/health", health)])


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def healthy_url() -> AsyncIterator[str]:
    async with serve_asgi(health_app()) as url:
        yield url


def check_identity(probe: Probe, results: list[ProbeResult], clock: FakeClock) -> None:
    assert results, "run() must return at least one result"
    for result in results:
        assert isinstance(result, ProbeResult)
        assert result.probe == probe.name
        assert result.kind == probe.kind
        assert result.started_at == clock.now()
        assert result.latency_s >= 0
        assert result.target
        assert result.labels.get("cohort") == "baseline"
        if result.outcome is not Outcome.OK:
            assert result.reason, "a result that is not ok always says why"


async def test_satisfies_the_protocol(factory: ProbeFactory, healthy_url: str) -> None:
    probe = factory(Scenario(healthy_url, "ok"), FakeClock())
    try:
        assert isinstance(probe, Probe)
        assert probe.kind in {"http", "journey", "fake", "postgres"}
        assert probe.interval_s > 0 and probe.timeout_s == TIMEOUT_S
    finally:
        await probe.aclose()


async def test_ok_results_carry_name_kind_and_clock_time(factory: ProbeFactory, healthy_url: str) -> None:
    clock = FakeClock()
    probe = factory(Scenario(healthy_url, "ok"), clock)
    try:
        results = list(await probe.run())
        check_identity(probe, results, clock)
        assert [r.outcome for r in results] == [Outcome.OK] * len(results), [r.reason for r in results]
        clock.advance(60)
        again = list(await probe.run())
        check_identity(probe, again, clock)  # started_at follows the clock, run after run
    finally:
        await probe.aclose()


async def test_dead_target_fails_without_raising(factory: ProbeFactory, failing: Failing) -> None:
    clock = FakeClock()
    probe = factory(Scenario(f"http://127.0.0.1:{closed_port()}", "dead"), clock)
    try:
        started = time.monotonic()
        results = list(await probe.run())
        assert time.monotonic() - started < TIMEOUT_S + 1
    finally:
        await probe.aclose()
    check_identity(probe, results, clock)
    assert len(results) == failing.results  # a journey stops at its first step
    assert all(r.outcome is Outcome.FAILED for r in results)
    assert failing.dead in results[0].reason


async def test_hanging_target_times_out_within_bound(factory: ProbeFactory, failing: Failing) -> None:
    clock = FakeClock()
    async with hanging_server() as url:
        probe = factory(Scenario(url, "hang"), clock)
        try:
            started = time.monotonic()
            results = list(await probe.run())
            elapsed = time.monotonic() - started
        finally:
            await probe.aclose()
    assert elapsed < TIMEOUT_S + 1
    check_identity(probe, results, clock)
    assert len(results) == failing.results
    assert all(r.outcome is Outcome.FAILED for r in results)
    assert results[0].reason.startswith(failing.hang), results[0].reason


async def test_cancellation_is_not_swallowed(factory: ProbeFactory) -> None:
    async with hanging_server() as url:
        probe = factory(Scenario(url, "hang"), FakeClock())
        task = asyncio.create_task(probe.run())
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await probe.aclose()


async def test_aclose_is_idempotent_and_run_after_close_does_not_raise(
    factory: ProbeFactory, healthy_url: str
) -> None:
    probe = factory(Scenario(healthy_url, "ok"), FakeClock())
    await probe.run()
    await probe.aclose()
    await probe.aclose()
    results = list(await probe.run())
    assert results and all(isinstance(r, ProbeResult) for r in results)
    await probe.aclose()


# --- FakeProbe specifics (it must be a faithful double) -------------------------------------------------


async def test_fake_probe_script_order_sticky_and_cycling() -> None:
    clock = FakeClock()
    scripted = ProbeResult(
        probe="x",
        kind="fake",
        target="t",
        outcome=Outcome.DEGRADED,
        latency_s=9.0,
        started_at=0.0,
        reason="r",
    )
    probe = FakeProbe("f", [Outcome.OK, Outcome.FAILED, scripted, ValueError("boom")], clock=clock)
    outcomes = [(await probe.run())[0] for _ in range(6)]
    assert [(r.outcome, r.reason) for r in outcomes] == [
        (Outcome.OK, ""),
        (Outcome.FAILED, "scripted failed"),
        (Outcome.DEGRADED, "r"),
        (Outcome.FAILED, "ValueError: boom"),
        (Outcome.FAILED, "ValueError: boom"),  # sticks on the last item
        (Outcome.FAILED, "ValueError: boom"),
    ]
    assert outcomes[2].started_at == clock.now()  # re-stamped by the run
    assert probe.calls == 6

    cycling = FakeProbe("c", [Outcome.OK, Outcome.DEGRADED], clock=clock, cycle=True)
    assert [(await cycling.run())[0].outcome for _ in range(4)] == [Outcome.OK, Outcome.DEGRADED] * 2


async def test_fake_probe_delay_within_timeout_succeeds() -> None:
    probe = FakeProbe("slowish", [Outcome.OK], clock=FakeClock(), delay_s=0.05, timeout_s=1)
    started = time.monotonic()
    (result,) = await probe.run()
    assert result.ok
    assert time.monotonic() - started >= 0.05


async def test_fake_probe_needs_a_script() -> None:
    with pytest.raises(ValueError, match="at least one"):
        FakeProbe("empty", [], clock=FakeClock())


# --- PostgresProbe specifics (one result per check family) --------------------------------------------------


@pytest.mark.postgres
async def test_postgres_probe_reports_every_family_and_keeps_the_password_out() -> None:
    clock = FakeClock()
    ok = make_postgres(Scenario("", "ok"), clock)
    try:
        results = list(await ok.run())
    finally:
        await ok.aclose()
    assert [r.labels["check"] for r in results] == PG_FAMILIES
    connectivity = results[0]
    assert {o.name: o.value for o in connectivity.observations}["pg_up"] == 1.0

    port = closed_port()
    config = PostgresProbeConfig.model_validate(
        {
            "kind": "postgres",
            "name": "contract-postgres",
            "dsn": f"postgresql://postgres:hunter2@127.0.0.1:{port}/postgres",
        }
    )
    dead = PostgresProbe(config, defaults=DEFAULTS, clock=clock)
    try:
        failed = list(await dead.run())
    finally:
        await dead.aclose()
    assert [r.labels["check"] for r in failed] == PG_FAMILIES
    assert {o.name: o.value for o in failed[0].observations}["pg_up"] == 0.0
    assert all(r.reason.startswith("not checked: ") for r in failed[1:])
    for r in failed:
        assert "hunter2" not in r.target and "hunter2" not in r.reason

"""SLIs from Cloud Run's real traffic per revision (issue 12, build item 1): the ``cloud_run_traffic`` probe
reads request counts, 5xx and slow requests per revision and minute through the real google-cloud-monitoring
client from the loopback MetricService (``gcp_fake_monitoring``) and records them as observations; a
``counted_ratio`` SLO over them is evaluated by the real SloEngine from the store, budget, burn rates and a
page included. Refused reads are failed results with a clear reason; config mistakes are refused."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Iterable, Iterator
from pathlib import Path
from typing import Any

import grpc  # type: ignore[import-untyped]
import pytest
from gcp_fake_monitoring import FakeMonitoring, add_revision_traffic
from pydantic import ValidationError

from watchdog.config.gcp import GoogleCloud
from watchdog.config.loader import ConfigError, load_config
from watchdog.config.probes import CloudRunTrafficProbeConfig
from watchdog.config.settings import ProbeDefaults
from watchdog.config.slo import CountedRatioSli, SloConfig
from watchdog.core.clock import FakeClock
from watchdog.core.results import Outcome, ProbeResult
from watchdog.probes.cloud_run_traffic import CloudRunTrafficProbe
from watchdog.probes.registry import ProbeBuilder
from watchdog.slo import SloEngine
from watchdog.sources.cloud_monitoring import COMPLETE_AFTER_S
from watchdog.store.memory import MemoryStore

START = 1_767_225_600.0  # 2026-01-01 00:00:00 UTC, a minute boundary
PROJECT = "demo-project"
SERVICE = f"projects/{PROJECT}/locations/asia-east1/services/ai-square"
CANARY, STABLE = "ai-square-00042-def", "ai-square-00041-abc"
SLOW_MS = 1.4**12  # a bucket bound of the fake's latency distribution (~56.7 ms): 60 and 65 ms are slower


def minute(k: int) -> float:
    """The end of the k-th minute after START."""
    return START + 60.0 * k


def complete_until(now: float) -> float:
    return math.floor((now - COMPLETE_AFTER_S) / 60) * 60


def traffic(
    fake: FakeMonitoring,
    revision: str,
    ends: Iterable[float],
    requests: int,
    errors: int,
    service: str = "ai-square",
) -> None:
    add_revision_traffic(fake, revision, ends, requests, errors, project=PROJECT, service=service)


@pytest.fixture(scope="module")
def server() -> Iterator[FakeMonitoring]:
    fake = FakeMonitoring(project=PROJECT)
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def fake(server: FakeMonitoring) -> FakeMonitoring:
    server.reset()
    return server


def _settings(fake: FakeMonitoring) -> GoogleCloud:
    return GoogleCloud(project=PROJECT, cloud_run_service=SERVICE, endpoints={"monitoring": fake.endpoint})


def _config(**fields: Any) -> CloudRunTrafficProbeConfig:
    return CloudRunTrafficProbeConfig.model_validate(
        {"name": "run-traffic", "kind": "cloud_run_traffic", **fields}
    )


@pytest.fixture
async def clock() -> FakeClock:
    return FakeClock(minute(10) + 30.0)


async def _run(probe: CloudRunTrafficProbe, fake: FakeMonitoring, clock: FakeClock, at: float) -> ProbeResult:
    """One run at ``at``, Cloud Monitoring showing only points at least 3 min old (its ingestion delay)."""
    clock.set(at)
    fake.visible_until = at - 180.0
    (result,) = await probe.run()
    return result


def _obs(result: ProbeResult) -> dict[tuple[str, str], list[float]]:
    out: dict[tuple[str, str], list[float]] = {}
    for o in result.observations:
        out.setdefault((o.labels["revision"], o.name), []).append(o.value)
    return out


def _interval(req: Any) -> tuple[float, float]:
    i = req.interval
    return (i.start_time.seconds + i.start_time.nanos / 1e9, i.end_time.seconds + i.end_time.nanos / 1e9)


# -- the probe ---------------------------------------------------------------------------------------------


async def test_the_probe_records_each_revisions_minutes_once(fake: FakeMonitoring, clock: FakeClock) -> None:
    ends = [minute(k) for k in range(0, 30)]
    traffic(fake, CANARY, ends, 100, 5)
    traffic(fake, STABLE, ends, 200, 0)
    builder = ProbeBuilder(defaults=ProbeDefaults(), clock=clock, google_cloud=_settings(fake))
    probe = builder.build(_config(latency_threshold=SLOW_MS / 1000.0))
    assert isinstance(probe, CloudRunTrafficProbe)
    assert (probe.interval_s, probe.kind) == (60.0, "cloud_run_traffic")
    try:
        # The first run: the newest complete minute only.
        now = minute(10) + 30.0
        first = await _run(probe, fake, clock, now)
        assert first.outcome is Outcome.OK, first.reason
        assert first.started_at == now  # recorded with the run: the data's minute is ~3.5-4.5 min older
        end = complete_until(now)
        reads = fake.calls("ListTimeSeries")
        assert [_interval(r) for r in reads] == [(end - 60, end)] * 2  # counts, then latencies
        assert 'resource.labels.service_name="ai-square"' in reads[0].filter
        assert "revision_name" not in reads[0].filter  # every revision
        assert list(reads[0].aggregation.group_by_fields) == [
            "resource.label.revision_name",
            "metric.label.response_code_class",
        ]
        assert _obs(first) == {
            (CANARY, "cloud_run_requests"): [100],
            (CANARY, "cloud_run_5xx"): [5],
            (CANARY, "cloud_run_slow"): [pytest.approx(20, abs=0.01)],
            (STABLE, "cloud_run_requests"): [200],
            (STABLE, "cloud_run_5xx"): [0],
            (STABLE, "cloud_run_slow"): [pytest.approx(40, abs=0.01)],
        }
        # A run within the same minute reads nothing new and records nothing.
        fake.requests.clear()
        same = await _run(probe, fake, clock, now + 20)
        assert same.outcome is Outcome.OK and same.observations == ()
        assert fake.calls("ListTimeSeries") == []
        # Three minutes later: the three minutes since, each once.
        later = await _run(probe, fake, clock, now + 180)
        (counts, _) = fake.calls("ListTimeSeries")
        assert _interval(counts) == (end, end + 180)
        assert _obs(later)[(CANARY, "cloud_run_requests")] == [100, 100, 100]
        assert _obs(later)[(CANARY, "cloud_run_5xx")] == [5, 5, 5]
        assert "3 minutes" in later.reason and CANARY in later.reason
    finally:
        await builder.aclose()
        await probe.aclose()


async def test_one_revision_and_quiet_minutes(fake: FakeMonitoring, clock: FakeClock) -> None:
    traffic(fake, CANARY, [minute(k) for k in range(0, 30)], 50, 1)
    traffic(fake, STABLE, [minute(k) for k in range(0, 30)], 50, 0)
    probe = CloudRunTrafficProbe(
        _config(revision=CANARY, labels={"team": "web"}),
        defaults=ProbeDefaults(),
        clock=clock,
        google_cloud=_settings(fake),
    )
    try:
        result = await _run(probe, fake, clock, minute(10) + 30.0)
        assert f'resource.labels.revision_name="{CANARY}"' in fake.calls("ListTimeSeries")[0].filter
        assert len(fake.calls("ListTimeSeries")) == 1  # no latency threshold: no latency read
        assert {(o.name, o.value) for o in result.observations} == {
            ("cloud_run_requests", 50),
            ("cloud_run_5xx", 1),
        }
        assert all(o.labels == {"team": "web", "revision": CANARY} for o in result.observations)
        # Later runs catch up (minutes 8-29 had traffic), then past the traffic: OK, nothing recorded (no
        # requests is not a measurement).
        catch_up = await _run(probe, fake, clock, minute(40))
        assert _obs(catch_up)[(CANARY, "cloud_run_requests")] == [50] * 22
        quiet = await _run(probe, fake, clock, minute(41))
        assert quiet.outcome is Outcome.OK and quiet.observations == ()
        assert "no requests" in quiet.reason
    finally:
        await probe.aclose()


async def test_refused_reads_fail_with_a_clear_reason_and_are_caught_up(
    fake: FakeMonitoring, clock: FakeClock
) -> None:
    traffic(fake, CANARY, [minute(k) for k in range(0, 30)], 100, 0)
    probe = CloudRunTrafficProbe(
        _config(), defaults=ProbeDefaults(), clock=clock, google_cloud=_settings(fake)
    )
    try:
        assert (await _run(probe, fake, clock, minute(10) + 30.0)).outcome is Outcome.OK
        fake.fail(
            "ListTimeSeries", grpc.StatusCode.PERMISSION_DENIED, "caller lacks monitoring.timeSeries.list"
        )
        denied = await _run(probe, fake, clock, minute(11) + 30.0)
        assert denied.outcome is Outcome.FAILED and denied.observations == ()
        assert "permission denied" in denied.reason and "roles/monitoring.viewer" in denied.reason
        assert PROJECT in denied.reason and "token" not in denied.reason.lower()
        fake.fail("ListTimeSeries", grpc.StatusCode.RESOURCE_EXHAUSTED, "quota")
        exhausted = await _run(probe, fake, clock, minute(12) + 30.0)
        assert exhausted.outcome is Outcome.FAILED and "RESOURCE_EXHAUSTED" in exhausted.reason
        # The next read takes the minutes the refused ones missed.
        back = await _run(probe, fake, clock, minute(13) + 30.0)
        assert back.outcome is Outcome.OK
        assert _obs(back)[(CANARY, "cloud_run_requests")] == [100, 100, 100]
    finally:
        await probe.aclose()


async def test_without_settings_the_probe_fails_with_a_reason(clock: FakeClock) -> None:
    probe = CloudRunTrafficProbe(_config(), defaults=ProbeDefaults(), clock=clock, google_cloud=None)
    (result,) = await probe.run()
    assert result.outcome is Outcome.FAILED and "Cloud Run service" in result.reason
    bad = CloudRunTrafficProbe(
        _config(service="projects/x/services"),
        defaults=ProbeDefaults(),
        clock=clock,
        google_cloud=GoogleCloud(project=PROJECT),
    )
    (result,) = await bad.run()
    assert result.outcome is Outcome.FAILED and "is not a Cloud Run service" in result.reason


# -- the SLO over the real traffic -------------------------------------------------------------------------


def _slo(**overrides: Any) -> SloConfig:
    spec: dict[str, Any] = {
        "name": "canary-availability",
        "objective": 99.9,
        "sli": {
            "kind": "counted_ratio",
            "probe": "run-traffic",
            "labels": {"revision": CANARY},
            "total": "cloud_run_requests",
            "bad": "cloud_run_5xx",
        },
    }
    spec.update(overrides)
    return SloConfig.model_validate(spec)


@pytest.fixture
async def store() -> AsyncIterator[MemoryStore]:
    s = MemoryStore()
    await s.open()
    try:
        yield s
    finally:
        await s.close()


async def test_a_counted_ratio_slo_budget_and_a_5xx_burst_pages(
    fake: FakeMonitoring, store: MemoryStore
) -> None:
    # The canary: 1,000 requests a minute, 1 of them 5xx (the objective exactly), then from minute 40 a
    # burst of 100 5xx a minute (100x the budget rate). The stable revision is busy and never fails.
    traffic(fake, CANARY, [minute(k) for k in range(1, 41)], 1000, 1)
    traffic(fake, CANARY, [minute(k) for k in range(41, 80)], 1000, 100)
    traffic(fake, STABLE, [minute(k) for k in range(1, 80)], 5000, 0)
    clock = FakeClock(minute(5))
    probe = CloudRunTrafficProbe(
        _config(), defaults=ProbeDefaults(), clock=clock, google_cloud=_settings(fake)
    )
    stable_sli = {**_slo().sli.model_dump(), "labels": {"revision": STABLE}}
    engine = SloEngine([_slo(), _slo(name="stable", sli=stable_sli)], store, clock)
    try:
        pages: list[float] = []
        now = minute(5)
        while now < minute(60):
            result = await _run(probe, fake, clock, now)
            assert result.outcome is Outcome.OK, result.reason
            await store.record([result])
            ev = await engine.evaluate()
            pages += [s.at for s in ev.signals if s.severity == "page" and s.state == "firing"]
            assert all(s.slo == "canary-availability" for s in ev.signals)
            if complete_until(now) == minute(40):
                # Minutes 1-40 recorded (the first run read minute 1 only): exactly on objective.
                canary, stable = ev.statuses
                assert (canary.total, canary.good, canary.events) == (40_000, 40_000 - 40, 40_000)
                assert canary.budget.spent == 40 and canary.budget.allowed == pytest.approx(40)
                assert canary.budget_remaining == pytest.approx(0.0, abs=1e-9)
                assert canary.sli == pytest.approx(0.999)
                assert canary.firing == () and not canary.no_data
                assert (stable.total, stable.good) == (200_000, 200_000)
            now += 60.0
        # The burst's first minute (ending at minute 41) is complete at minute 41 + 3.5 min, read by the run
        # at 44:30 + 30 s; the page needs the 5-minute and 1-hour windows over 14.4x.
        assert pages, "the 5xx burst did not page"
        burst_visible = minute(41) + COMPLETE_AFTER_S
        assert burst_visible <= pages[0] <= burst_visible + 15 * 60
        final = ev.status("canary-availability")
        assert "page" in final.firing
        assert final.burn_rates["5m"] == pytest.approx(100.0)  # 10 % 5xx against a 0.1 % budget
        assert ev.status("stable").firing == ()
    finally:
        await probe.aclose()


# -- config ------------------------------------------------------------------------------------------------


def test_counted_ratio_config() -> None:
    sli = _slo().sli
    assert isinstance(sli, CountedRatioSli) and not _slo().time_slices
    with pytest.raises(ValidationError, match="total and bad must be different"):
        _slo(sli={"kind": "counted_ratio", "probe": "p", "total": "x", "bad": "x"})
    with pytest.raises(ValidationError):
        _slo(sli={"kind": "counted_ratio", "probe": "p", "total": "x"})
    with pytest.raises(ValidationError):
        _config(revisions="all")  # unknown field
    assert _config().interval == 60.0 and _config().latency_thresholds() == ()


def _config_dir(root: Path, settings: str, probes: str, slos: str) -> Path:
    for folder in ("probes", "slo", "runbooks"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    (root / "watchdog.yaml").write_text(settings)
    (root / "probes" / "p.yaml").write_text(probes)
    (root / "slo" / "s.yaml").write_text(slos)
    return root


def test_the_loader_accepts_and_refuses(tmp_path: Path) -> None:
    settings = (
        f"state: {tmp_path / 'state.db'}\n"
        f"google_cloud: {{project: {PROJECT}, cloud_run_service: {SERVICE}}}\n"
    )
    probes = "probes:\n  - {name: run-traffic, kind: cloud_run_traffic, latency_threshold: 300ms}\n"
    slos = (
        "slos:\n  - name: canary-availability\n    objective: 99.9\n"
        "    sli: {kind: counted_ratio, probe: run-traffic, labels: {revision: r1},"
        " total: cloud_run_requests, bad: cloud_run_5xx}\n"
    )
    config = load_config(_config_dir(tmp_path / "ok", settings, probes, slos))
    (probe,) = config.probes
    assert isinstance(probe, CloudRunTrafficProbeConfig) and probe.latency_threshold == 0.3
    assert isinstance(config.slos[0].sli, CountedRatioSli)
    # The SLI's probe must exist.
    with pytest.raises(ConfigError, match=r"slos\[0\].sli.probe: no probe named 'other'"):
        load_config(_config_dir(tmp_path / "a", settings, probes, slos.replace("run-traffic", "other")))
    # Without google_cloud (or a service), the probe is refused.
    with pytest.raises(
        ConfigError, match=r"probes\[0\].service: a cloud_run_traffic probe needs google_cloud"
    ):
        load_config(_config_dir(tmp_path / "b", f"state: {tmp_path / 'state.db'}\n", probes, slos))
    no_service = f"state: {tmp_path / 'state.db'}\ngoogle_cloud: {{project: {PROJECT}}}\n"
    with pytest.raises(ConfigError, match=r"probes\[0\].service"):
        load_config(_config_dir(tmp_path / "c", no_service, probes, slos))
    # Same bad and total: refused with the SLO's location.
    with pytest.raises(ConfigError, match="total and bad must be different"):
        load_config(
            _config_dir(tmp_path / "d", settings, probes, slos.replace("cloud_run_5xx", "cloud_run_requests"))
        )

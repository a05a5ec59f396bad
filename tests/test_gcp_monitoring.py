"""Cloud Monitoring, wire level: the real google-cloud-monitoring client (gRPC asyncio transport) against a
``google.monitoring.v3.MetricService`` on loopback (tests/gcp_fake_monitoring.py) that records what it is
sent and answers from the series it holds. No Google account, no network.

Reader: the filters, intervals and aggregations sent and what comes back; ingestion delay; errors
(PERMISSION_DENIED, UNAVAILABLE retried, RESOURCE_EXHAUSTED, INVALID_ARGUMENT), empty series; the MetricSource
contract; nothing Google imported without the feature.
"""

from __future__ import annotations

import math
import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc  # type: ignore[import-untyped]
import pytest
from gcp_fake_monitoring import FakeMonitoring, populate
from google.cloud import monitoring_v3
from loopback import closed_port
from test_pg_metric_sources import Subject, _host_memory_percent
from test_pg_metric_sources import test_concurrent_queries as test_contract_concurrent_queries
from test_pg_metric_sources import test_cpu_and_memory_are_percentages as test_contract_percentages
from test_pg_metric_sources import test_invalid_query_raises_metric_source_error as test_contract_invalid
from test_pg_metric_sources import test_memory_agrees_with_this_host as test_contract_memory_agrees

from watchdog.config.gcp import GoogleCloud
from watchdog.config.postgres import HostMetrics, PostgresProbeConfig
from watchdog.config.settings import ProbeDefaults
from watchdog.core.clock import FakeClock
from watchdog.core.results import Outcome
from watchdog.probes.postgres.host import check_host
from watchdog.probes.registry import ProbeBuilder
from watchdog.sources.base import MetricSourceError
from watchdog.sources.cloud_monitoring import (
    COMPLETE_AFTER_S,
    DEFAULT_LOOKBACK_S,
    CloudMonitoringMetricSource,
    cloud_run_latencies,
    cloud_run_request_counts,
    parse_query,
)
from watchdog.sources.registry import build_source

# The MetricSource contract (tests/test_pg_metric_sources.py) runs here against this module's ``subject``.
CONTRACT = (
    test_contract_concurrent_queries,
    test_contract_percentages,
    test_contract_invalid,
    test_contract_memory_agrees,
)

PROJECT = "demo-project"
INSTANCE = "demo-project:asia-east1:content-db"
DATABASE_ID = "demo-project:content-db"
SERVICE = "projects/demo-project/locations/asia-east1/services/ai-square"
NOW = 1_767_225_600.0 + 37.0  # 37 s into a minute
MINUTE = float(math.floor(NOW / 60) * 60)
Aligner = monitoring_v3.Aggregation.Aligner
Reducer = monitoring_v3.Aggregation.Reducer


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
    server.page_size = 100
    populate(server, now=NOW, instance=INSTANCE, service="ai-square")
    return server


@pytest.fixture
async def source(fake: FakeMonitoring) -> AsyncIterator[CloudMonitoringMetricSource]:
    src = CloudMonitoringMetricSource(
        PROJECT, endpoint=fake.endpoint, cloud_sql_instance=INSTANCE, clock=FakeClock(NOW)
    )
    try:
        yield src
    finally:
        await src.aclose()


def _interval(req: object) -> tuple[float, float]:
    interval = req.interval  # type: ignore[attr-defined]
    return (
        interval.start_time.seconds + interval.start_time.nanos / 1e9,
        interval.end_time.seconds + interval.end_time.nanos / 1e9,
    )


# -- reading Cloud SQL -----------------------------------------------------------------------------------


async def test_cpu_shortcut_reads_the_instance_and_returns_percent_with_the_point_time(
    fake: FakeMonitoring, source: CloudMonitoringMetricSource
) -> None:
    samples = await source.query("cloudsql:cpu_percent", timeout_s=5)
    [req] = fake.calls("ListTimeSeries")
    assert req.name == f"projects/{PROJECT}"
    assert req.filter == (
        'metric.type="cloudsql.googleapis.com/database/cpu/utilization" '
        f'AND resource.type="cloudsql_database" AND resource.labels.database_id="{DATABASE_ID}"'
    )
    # A raw read: the last 10 minutes up to now, no aggregation.
    assert _interval(req) == (NOW - DEFAULT_LOOKBACK_S, NOW)
    assert req.aggregation.per_series_aligner == Aligner.ALIGN_NONE
    assert [(round(s.value, 9), s.timestamp) for s in samples] == [(35.0, MINUTE)]
    assert samples[0].labels["database_id"] == DATABASE_ID
    assert samples[0].labels["region"] == "asia-east1"


async def test_ingestion_delay_is_not_no_data_and_the_check_says_how_old(
    fake: FakeMonitoring, source: CloudMonitoringMetricSource
) -> None:
    # The last 3.5 minutes are sampled but not yet visible, as Cloud Monitoring documents for Cloud SQL.
    fake.visible_until = NOW - 210
    samples = await source.query("cloudsql:memory_percent", timeout_s=5)
    newest = float(math.floor((NOW - 210) / 60) * 60)
    assert [(round(s.value, 9), s.timestamp) for s in samples] == [(45.0, newest)]
    report = await check_host(source, HostMetrics(source="cloud_monitoring"), now=NOW)
    assert report.outcome is Outcome.OK, report.reason
    age = f"{(NOW - newest) / 60:.1f} min old"
    assert report.reason == f"database host CPU 35% (point {age}), memory 45% (point {age})"
    # A fresh point is not annotated.
    fake.visible_until = None
    report = await check_host(source, HostMetrics(source="cloud_monitoring"), now=NOW)
    assert report.reason == "database host CPU 35%, memory 45%"


async def test_host_thresholds_from_cloud_monitoring(
    fake: FakeMonitoring, source: CloudMonitoringMetricSource
) -> None:
    fake.add(
        "cloudsql.googleapis.com/database/cpu/utilization",
        [(MINUTE + 60, 0.86)],
        resource_type="cloudsql_database",
        resource_labels={"project_id": PROJECT, "database_id": DATABASE_ID, "region": "asia-east1"},
    )
    source.clock = FakeClock(MINUTE + 61)
    report = await check_host(source, HostMetrics(source="cloud_monitoring"), now=MINUTE + 61)
    assert report.outcome is Outcome.DEGRADED
    assert report.reason == "database host CPU at 86% (limit 80%)"
    assert {o.name: round(o.value, 6) for o in report.observations} == {
        "db_cpu_percent": 86.0,
        "db_memory_percent": 45.0,
    }


async def test_postgres_probe_reads_cloud_sql_host_metrics_while_the_database_is_unreachable(
    fake: FakeMonitoring,
) -> None:
    """Through the probe registry, as the daemon builds it: google_cloud settings reach the source (which
    reads with the system clock: data up to now)."""
    fake.reset()
    populate(fake, now=time.time(), instance=INSTANCE, service="ai-square")
    gc = GoogleCloud(project=PROJECT, cloud_sql_instance=INSTANCE, endpoints={"monitoring": fake.endpoint})
    config = PostgresProbeConfig(
        kind="postgres",
        name="content-db",
        dsn=f"postgresql://watchdog:pw@127.0.0.1:{closed_port()}/content",
        checks=["connectivity", "host"],
        host_metrics=HostMetrics(source="cloud_monitoring"),
    )
    builder = ProbeBuilder(defaults=ProbeDefaults(timeout=5), clock=FakeClock(NOW), google_cloud=gc)
    probe = builder.build(config)
    try:
        results = {r.labels["check"]: r for r in await probe.run()}
    finally:
        await probe.aclose()
        await builder.aclose()
    assert results["connectivity"].outcome is Outcome.FAILED
    assert results["host"].outcome is Outcome.OK, results["host"].reason
    assert results["host"].reason.startswith("database host CPU 35%, memory 45%")
    filters = [r.filter for r in fake.calls("ListTimeSeries")]
    assert sorted(f.split('"')[1] for f in filters) == [
        "cloudsql.googleapis.com/database/cpu/utilization",
        "cloudsql.googleapis.com/database/memory/utilization",
    ]


def test_cloud_monitoring_source_needs_google_cloud_settings() -> None:
    with pytest.raises(ValueError, match="google_cloud section"):
        build_source(HostMetrics(source="cloud_monitoring"))
    with pytest.raises(ValueError, match="cloud_sql_instance"):
        build_source(HostMetrics(source="cloud_monitoring"), GoogleCloud(project=PROJECT))


async def test_aligned_query_ends_where_data_is_complete(
    fake: FakeMonitoring, source: CloudMonitoringMetricSource
) -> None:
    samples = await source.query("cloudsql:num_backends_by_state", timeout_s=5)
    [req] = fake.calls("ListTimeSeries")
    end = math.floor((NOW - COMPLETE_AFTER_S) / 60) * 60
    assert _interval(req) == (end - DEFAULT_LOOKBACK_S, end)
    agg = req.aggregation
    assert (agg.alignment_period.seconds, agg.per_series_aligner, agg.cross_series_reducer) == (
        60,
        Aligner.ALIGN_MAX,
        Reducer.REDUCE_SUM,
    )
    assert list(agg.group_by_fields) == ["metric.label.state"]
    assert sorted((s.labels["state"], s.value, s.timestamp) for s in samples) == [
        ("active", 3.0, end),
        ("idle", 10.0, end),
        ("idle_in_transaction", 1.0, end),
    ]
    # The instance total sums its databases (12 + 2).
    assert [s.value for s in await source.query("cloudsql:num_backends", timeout_s=5)] == [14.0]


async def test_query_text_options_reach_the_request(
    fake: FakeMonitoring, source: CloudMonitoringMetricSource
) -> None:
    text = (
        'metric.type="run.googleapis.com/request_count" AND resource.labels.service_name="ai-square" '
        "| aligner=ALIGN_RATE period=120s reducer=REDUCE_SUM group_by=metric.label.response_code_class "
        "lookback=240s delay=60s"
    )
    assert parse_query(text).render() == text
    samples = await source.query(text, timeout_s=5)
    [req] = fake.calls("ListTimeSeries")
    end = math.floor((NOW - 60) / 60) * 60
    assert _interval(req) == (end - 240, end)
    agg = req.aggregation
    assert (agg.alignment_period.seconds, agg.per_series_aligner) == (120, Aligner.ALIGN_RATE)
    rates = {s.labels["response_code_class"]: s.value for s in samples}
    # Per second over two minutes, both revisions: (939 + 36) 2xx, 20 4xx, 5 5xx a minute.
    assert rates == pytest.approx({"2xx": 975 / 60, "4xx": 20 / 60, "5xx": 5 / 60})


# -- Cloud Run per revision ------------------------------------------------------------------------------


async def test_cloud_run_request_counts_per_revision(
    fake: FakeMonitoring, source: CloudMonitoringMetricSource
) -> None:
    counts = await cloud_run_request_counts(source, SERVICE, 300)
    [req] = fake.calls("ListTimeSeries")
    assert req.filter == (
        'metric.type="run.googleapis.com/request_count" AND resource.type="cloud_run_revision" '
        'AND resource.labels.service_name="ai-square" AND resource.labels.location="asia-east1"'
    )
    end = math.floor((NOW - COMPLETE_AFTER_S) / 60) * 60
    assert _interval(req) == (end - 300, end)
    agg = req.aggregation
    assert (agg.alignment_period.seconds, agg.per_series_aligner, agg.cross_series_reducer) == (
        300,
        Aligner.ALIGN_DELTA,
        Reducer.REDUCE_SUM,
    )
    assert list(agg.group_by_fields) == ["resource.label.revision_name", "metric.label.response_code_class"]
    # populate(): the stable revision serves 950 a minute with 1 5xx, the canary 50 with 4; five minutes.
    assert {rev: (c.total, c.errors_5xx) for rev, c in counts.items()} == {
        "ai-square-00041-abc": (4750, 5),
        "ai-square-00042-def": (250, 20),
    }
    canary = counts["ai-square-00042-def"]
    assert (canary.start, canary.end) == (end - 300, end)
    assert canary.error_ratio == pytest.approx(0.08)


async def test_cloud_run_latencies_merge_distributions_per_revision(
    fake: FakeMonitoring, source: CloudMonitoringMetricSource
) -> None:
    latencies = await cloud_run_latencies(source, "ai-square", 120, threshold_ms=150)
    [req] = fake.calls("ListTimeSeries")
    assert "resource.labels.location" not in req.filter  # a bare service name: any region
    assert list(req.aggregation.group_by_fields) == ["resource.label.revision_name"]
    stable, canary = latencies["ai-square-00041-abc"], latencies["ai-square-00042-def"]
    assert (stable.count, canary.count) == (2 * 950, 2 * 50)
    # Every stable request is under 150 ms; the canary's 20 slow ones a minute (400 ms) are not.
    assert stable.at_or_under == pytest.approx(1900)
    assert canary.at_or_under == pytest.approx(60)
    stable_p95, canary_p95 = stable.quantiles[0.95], canary.quantiles[0.95]
    assert stable_p95 is not None and canary_p95 is not None
    assert stable_p95 < 150 < canary_p95


# -- errors ----------------------------------------------------------------------------------------------


async def test_permission_denied_is_not_retried(
    fake: FakeMonitoring, source: CloudMonitoringMetricSource
) -> None:
    denied = "Permission monitoring.timeSeries.list denied"
    fake.fail("ListTimeSeries", grpc.StatusCode.PERMISSION_DENIED, denied)
    with pytest.raises(MetricSourceError) as info:
        await source.query("cloudsql:cpu_percent", timeout_s=5)
    assert len(fake.calls("ListTimeSeries")) == 1
    assert str(info.value) == (
        f"Cloud Monitoring refused to read project {PROJECT}: permission denied (the watchdog's service "
        f"account needs roles/monitoring.viewer): {denied}"
    )


async def test_unavailable_is_retried_then_succeeds(
    fake: FakeMonitoring, source: CloudMonitoringMetricSource
) -> None:
    fake.fail("ListTimeSeries", grpc.StatusCode.UNAVAILABLE, "connection reset", times=2)
    fake.fail("ListTimeSeries", grpc.StatusCode.DEADLINE_EXCEEDED, "backend slow", times=1)
    t0 = time.monotonic()
    samples = await source.query("cloudsql:cpu_percent", timeout_s=5)
    elapsed = time.monotonic() - t0
    assert [s.value for s in samples] == [pytest.approx(35.0)]
    calls = fake.calls("ListTimeSeries")
    assert len(calls) == 4 and len({c.filter for c in calls}) == 1
    assert elapsed < 2.0  # backoff 0.1 → 0.2 → 0.4 s, plus up to 0.1 s jitter each


async def test_unavailable_throughout_fails_within_the_timeout(
    fake: FakeMonitoring, source: CloudMonitoringMetricSource
) -> None:
    fake.fail("ListTimeSeries", grpc.StatusCode.UNAVAILABLE, "no healthy upstream", times=1000)
    t0 = time.monotonic()
    with pytest.raises(MetricSourceError) as info:
        await source.query("cloudsql:cpu_percent", timeout_s=1.5)
    assert time.monotonic() - t0 < 2.0
    attempts = len(fake.calls("ListTimeSeries"))
    assert 3 <= attempts <= 8
    assert str(info.value) == (
        f"Cloud Monitoring at {fake.endpoint} unavailable (UNAVAILABLE, {attempts} attempts in 1.5s): "
        "no healthy upstream"
    )


async def test_resource_exhausted_says_quota(
    fake: FakeMonitoring, source: CloudMonitoringMetricSource
) -> None:
    fake.fail("ListTimeSeries", grpc.StatusCode.RESOURCE_EXHAUSTED, "Quota exceeded for Time series queries")
    with pytest.raises(MetricSourceError) as info:
        await source.query("cloudsql:cpu_percent", timeout_s=5)
    assert len(fake.calls("ListTimeSeries")) == 1
    assert str(info.value) == (
        f"Cloud Monitoring quota exhausted for project {PROJECT} (RESOURCE_EXHAUSTED): "
        "Quota exceeded for Time series queries"
    )


async def test_empty_series_is_no_data_not_an_error(
    fake: FakeMonitoring, source: CloudMonitoringMetricSource
) -> None:
    assert list(await source.query("cloudsql:replica_lag_seconds@demo-project:asia-east1:replica-1")) == []
    assert 'database_id="demo-project:replica-1"' in fake.calls("ListTimeSeries")[0].filter
    # An instance whose series stopped longer ago than the lookback reads as no data: the check degrades.
    fake.visible_until = NOW - DEFAULT_LOOKBACK_S - 60
    report = await check_host(source, HostMetrics(source="cloud_monitoring"), now=NOW)
    assert report.outcome is Outcome.DEGRADED
    assert report.reason == (
        "CPU: no data from the cloud-monitoring source; memory: no data from the cloud-monitoring source"
    )


async def test_invalid_queries(fake: FakeMonitoring, source: CloudMonitoringMetricSource) -> None:
    with pytest.raises(MetricSourceError, match=r"INVALID_ARGUMENT\): Could not parse filter"):
        await source.query('metric.type="x" OR metric.type="y"', timeout_s=5)
    assert len(fake.calls("ListTimeSeries")) == 1  # not retried
    for text, message in [
        ("cloudsql:cpu", "unknown shortcut cloudsql:cpu"),
        ('metric.type="x" | aligner=ALIGN_MEAN period=30s', "at least 60s"),
        ('metric.type="x" | reducer=REDUCE_SUM', "a reducer needs an aligner"),
        ('metric.type="x" | colour=blue', "unknown option"),
        ('metric.type="x" | aligner=ALIGN_SOMETIMES', "unknown aligner or reducer 'ALIGN_SOMETIMES'"),
    ]:
        with pytest.raises(MetricSourceError, match=message):
            await source.query(text, timeout_s=5)
    # A "|" inside a quoted value is part of the filter.
    assert parse_query('metric.labels.path="/a|b"').filter == 'metric.labels.path="/a|b"'
    assert len(fake.calls("ListTimeSeries")) == 1  # refused before any call


async def test_every_page_is_read(fake: FakeMonitoring, source: CloudMonitoringMetricSource) -> None:
    fake.page_size = 1
    samples = await source.query(
        'metric.type="cloudsql.googleapis.com/database/postgresql/num_backends_by_state"', timeout_s=5
    )
    assert sorted(s.labels["state"] for s in samples) == ["active", "idle", "idle_in_transaction"]
    tokens = [c.page_token for c in fake.calls("ListTimeSeries")]
    assert tokens == ["", "1", "2"]


def _blackhole() -> socket.socket:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    return s


@pytest.mark.parametrize("kind", ["refused", "hung", "userinfo"])
async def test_unreachable_endpoint_errors_within_timeout_and_keeps_secrets_out(kind: str) -> None:
    hole = _blackhole() if kind == "hung" else None
    endpoint = {
        "refused": f"http://127.0.0.1:{closed_port()}",
        "hung": f"http://127.0.0.1:{hole.getsockname()[1] if hole else 0}",
        "userinfo": f"http://admin:hunter2@127.0.0.1:{closed_port()}",
    }[kind]
    src = CloudMonitoringMetricSource(PROJECT, endpoint=endpoint, cloud_sql_instance=INSTANCE)
    t0 = time.monotonic()
    try:
        with pytest.raises(MetricSourceError) as info:
            await src.query("cloudsql:cpu_percent", timeout_s=0.8)
    finally:
        await src.aclose()
        if hole is not None:
            hole.close()
    assert time.monotonic() - t0 < 1.5
    assert "unavailable" in str(info.value) or "did not answer" in str(info.value)
    assert "hunter2" not in str(info.value)


async def test_without_application_default_credentials_the_reason_says_so(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # google.auth reads this variable first; pointing it at nothing fails without any network lookup.
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
    src = CloudMonitoringMetricSource(PROJECT, endpoint="https://127.0.0.1:1", cloud_sql_instance=INSTANCE)
    try:
        with pytest.raises(MetricSourceError, match="no Google credentials: Application Default Credentials"):
            await src.query("cloudsql:cpu_percent", timeout_s=2)
    finally:
        await src.aclose()


# -- the MetricSource contract ---------------------------------------------------------------------------


@pytest.fixture
async def subject(fake: FakeMonitoring) -> AsyncIterator[Subject]:
    """This host's memory in the fake, so the contract's "agrees with this host" holds for this source too."""
    fake.add(
        "cloudsql.googleapis.com/database/memory/utilization",
        [(MINUTE + 60, _host_memory_percent() / 100)],
        resource_type="cloudsql_database",
        resource_labels={"project_id": PROJECT, "database_id": DATABASE_ID, "region": "asia-east1"},
    )
    src = CloudMonitoringMetricSource(
        PROJECT, endpoint=fake.endpoint, cloud_sql_instance=INSTANCE, clock=FakeClock(MINUTE + 61)
    )
    try:
        yield Subject(src, "cloudsql:cpu_percent", "cloudsql:memory_percent", None, 'metric.type="x" OR')
    finally:
        await src.aclose()


# -- nothing Google without the feature ------------------------------------------------------------------


_PROBE_MODULES = textwrap.dedent(
    """
    import sys
    from watchdog.config.loader import load_config
    from watchdog.runtime.wiring import wire

    components = wire(load_config(sys.argv[1]), env={})
    loaded = sorted(m for m in sys.modules if m.startswith(("google.cloud.monitoring", "grpc")))
    print(",".join(loaded) or "none")
    """
)


def _modules_after_wiring(root: Path, env: dict[str, str]) -> str:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE_MODULES, str(root)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
        check=True,
    )
    return out.stdout.strip()


def test_no_google_monitoring_import_without_cloud_monitoring(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parent.parent
    # The example config (HTTP, journey and PostgreSQL probes with a Prometheus host source, SLOs, alerts).
    assert _modules_after_wiring(repo, {"WATCHDOG_STATE": str(tmp_path / "state.db")}) == "none"
    # Control: the same check sees the client when a probe does use Cloud Monitoring.
    (tmp_path / "probes").mkdir()
    (tmp_path / "watchdog.yaml").write_text(
        f"state: {tmp_path / 'state.db'}\n"
        f"google_cloud: {{project: {PROJECT}, cloud_sql_instance: '{INSTANCE}'}}\n"
    )
    (tmp_path / "probes" / "db.yaml").write_text(
        "probes:\n"
        "  - {name: db, kind: postgres, dsn: 'postgresql://u@127.0.0.1/db', checks: [connectivity, host],\n"
        "     host_metrics: {source: cloud_monitoring}}\n"
    )
    assert "google.cloud.monitoring_v3" in _modules_after_wiring(tmp_path, {}).split(",")

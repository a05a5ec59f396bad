"""Cloud Monitoring, wire level: the real google-cloud-monitoring client (gRPC asyncio transport) against a
``google.monitoring.v3.MetricService`` on loopback (tests/gcp_fake_monitoring.py) that records what it is
sent and answers from the series it holds. No Google account, no network.

Reader: the filters, intervals and aggregations sent and what comes back; ingestion delay; errors
(PERMISSION_DENIED, UNAVAILABLE retried, RESOURCE_EXHAUSTED, INVALID_ARGUMENT), empty series; the MetricSource
contract; nothing Google imported without the feature. Writer: the descriptors and batches a daemon's export
sends, read back from the fake and through the reader; retries, refusals counted, 5 s spacing, and probes
that keep their schedule while the API hangs.
"""

from __future__ import annotations

import asyncio
import math
import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc  # type: ignore[import-untyped]
import pytest
from gcp_fake_monitoring import FakeMonitoring, populate
from google.api import metric_pb2  # type: ignore[import-untyped]
from google.cloud import monitoring_v3
from loopback import closed_port
from test_pg_metric_sources import Subject, _host_memory_percent
from test_pg_metric_sources import test_concurrent_queries as test_contract_concurrent_queries
from test_pg_metric_sources import test_cpu_and_memory_are_percentages as test_contract_percentages
from test_pg_metric_sources import test_invalid_query_raises_metric_source_error as test_contract_invalid
from test_pg_metric_sources import test_memory_agrees_with_this_host as test_contract_memory_agrees

from watchdog.canary.guard import CanaryGuard
from watchdog.config.gcp import CloudMonitoringExport, GoogleCloud
from watchdog.config.loader import WatchdogConfig
from watchdog.config.postgres import HostMetrics, PostgresProbeConfig
from watchdog.config.rollouts import Rollout
from watchdog.config.settings import ProbeDefaults, Settings
from watchdog.config.slo import SloConfig
from watchdog.core.clock import FakeClock, SystemClock
from watchdog.core.results import Outcome, ProbeResult
from watchdog.flags.memory import MemoryFlagBackend
from watchdog.incidents.manager import IncidentManager
from watchdog.probes.base import Probe
from watchdog.probes.fake import FakeProbe
from watchdog.probes.postgres.host import check_host
from watchdog.probes.registry import ProbeBuilder
from watchdog.runtime.daemon import Daemon
from watchdog.runtime.gcp_export import METRICS, CloudMonitoringExporter
from watchdog.runtime.wiring import wire
from watchdog.slo import SloEngine
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
from watchdog.store.memory import MemoryStore

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


# == the writer: the watchdog's own results as custom metrics ==============================================

EXPORT_PREFIX = "custom.googleapis.com/watchdog"
EXPORT_NOW = 1_767_240_000.0


@dataclass
class Exporting:
    daemon: Daemon
    store: MemoryStore
    clock: FakeClock
    exporter: CloudMonitoringExporter


def _export_config(tmp_path: Path, endpoint: str, **export: Any) -> WatchdogConfig:
    cloud = GoogleCloud(
        project=PROJECT,
        region="asia-east1",
        endpoints={"monitoring": endpoint},
        export_metrics=CloudMonitoringExport(**export),
    )
    slo = SloConfig.model_validate(
        {"name": "api", "objective": 99.9, "sli": {"kind": "availability", "probe": "api"}}
    )
    return WatchdogConfig(root=tmp_path, settings=Settings(google_cloud=cloud), slos=[slo])


async def _exporting(tmp_path: Path, fake: FakeMonitoring, **export: Any) -> Exporting:
    """A daemon wired as in production (no scheduler running) with a rollout, an open incident, an SLO
    evaluated over 20 minutes of results and the latest result of three probe series."""
    clock = FakeClock(EXPORT_NOW)
    store = MemoryStore()
    await store.open()
    config = _export_config(tmp_path, fake.endpoint, **export)
    rollout = Rollout.model_validate(
        {
            "name": "content-db",
            "flag": {"backend": "flagd_file", "path": str(tmp_path / "flags.json")},
            "canary": {"probe": "content-db", "match": {"cohort": "db"}},
        }
    )
    flag = MemoryFlagBackend(5.0, clock=clock)
    guard = CanaryGuard(rollout, flag, store, IncidentManager(config, store, clock), clock)
    components = wire(
        config, store=store, clock=clock, probes=[], instance="replica-1", env={}, guards=[guard]
    )
    assert components.exporter is not None
    daemon = Daemon(components)
    await store.record(
        [
            ProbeResult(
                "api",
                "http",
                "t",
                Outcome.FAILED if i % 50 == 0 else Outcome.OK,
                0.05,
                EXPORT_NOW - 1200 + i * 5,
            )
            for i in range(240)
        ]
        + [
            ProbeResult(
                "content-db", "postgres", "db", Outcome.OK, 0.004, EXPORT_NOW - 3, labels={"check": "host"}
            ),
            ProbeResult(
                "content-db", "postgres", "db", Outcome.FAILED, 2.0, EXPORT_NOW - 3, labels={"check": "locks"}
            ),
        ]
    )
    daemon.slo_engine = SloEngine(config.slos, store, clock)
    await daemon.slo_engine.evaluate()
    await guard.check()  # the rollout record: watching at 5 %
    await store.transition_incident("db-unreachable", None, "firing", {"severity": "critical"}, EXPORT_NOW)
    return Exporting(daemon, store, clock, components.exporter)


def _series_written(fake: FakeMonitoring) -> list[Any]:
    return [ts for req in fake.calls("CreateTimeSeries") for ts in req.time_series]


def _counter(registry: Any, name: str, labels: dict[str, str] | None = None) -> float:
    value = registry.get_sample_value(name, labels or {})
    return 0.0 if value is None else float(value)


async def test_export_writes_probes_slos_canaries_and_incidents(tmp_path: Path, fake: FakeMonitoring) -> None:
    fake.reset()
    rig = await _exporting(tmp_path, fake)
    try:
        await rig.daemon._export_metrics()  # the daemon's "gcp-export" job
        report = rig.exporter.last
        assert report is not None and report.errors == []
        # Descriptors first, one per metric type, with kind, value type, unit and every label key used.
        descriptors = {
            d.metric_descriptor.type: d.metric_descriptor for d in fake.calls("CreateMetricDescriptor")
        }
        assert set(descriptors) == {f"{EXPORT_PREFIX}/{m}" for m in METRICS}
        success = descriptors[f"{EXPORT_PREFIX}/probe/success"]
        assert (success.metric_kind, success.value_type, success.unit) == (
            metric_pb2.MetricDescriptor.MetricKind.GAUGE,
            metric_pb2.MetricDescriptor.ValueType.INT64,
            "1",
        )
        assert sorted(label.key for label in success.labels) == ["check", "kind", "probe"]
        assert descriptors[f"{EXPORT_PREFIX}/probe/latency"].unit == "s"
        # Every series: a generic_task of this replica, exactly one point at the export time.
        series = _series_written(fake)
        assert len(series) == report.written == report.points
        for ts in series:
            assert ts.resource.type == "generic_task"
            assert dict(ts.resource.labels) == {
                "project_id": PROJECT,
                "location": "asia-east1",
                "namespace": "sre-watchdog",
                "job": "watchdog",
                "task_id": "replica-1",
            }
            assert len(ts.points) == 1 and ts.points[0].interval.end_time.seconds == int(EXPORT_NOW)

        # What arrived, read back from the fake.
        def written(metric: str) -> dict[tuple[tuple[str, str], ...], float]:
            return {
                tuple(sorted(labels.items())): v
                for labels, _, v in fake.points_written(f"{EXPORT_PREFIX}/{metric}")
            }

        assert written("probe/success") == {
            (("kind", "http"), ("probe", "api")): 1.0,
            (("check", "host"), ("kind", "postgres"), ("probe", "content-db")): 1.0,
            (("check", "locks"), ("kind", "postgres"), ("probe", "content-db")): 0.0,
        }
        assert (
            written("probe/latency")[(("check", "locks"), ("kind", "postgres"), ("probe", "content-db"))]
            == 2.0
        )
        evaluation = rig.daemon.slo_engine.last if rig.daemon.slo_engine else None
        assert evaluation is not None
        api = evaluation.status("api")
        assert written("slo/budget_remaining") == {(("slo", "api"),): pytest.approx(api.budget.remaining)}
        burn = written("slo/burn_rate")
        assert burn[(("slo", "api"), ("window", "1h"))] == pytest.approx(api.windows["1h"].burn_rate)
        assert (("slo", "api"), ("window", "30d")) in burn
        assert written("canary/percent") == {(("rollout", "content-db"),): 5.0}
        assert written("canary/held") == {(("rollout", "content-db"),): 0.0}
        assert written("incidents/open") == {
            (("severity", "critical"),): 1.0,
            (("severity", "info"),): 0.0,
            (("severity", "warning"),): 0.0,
        }
        # Counted on the daemon's registry; and readable back through the reader, over the same protocol.
        assert _counter(rig.daemon.registry, "watchdog_gcp_export_points_total") == report.written
        reader = CloudMonitoringMetricSource(
            PROJECT, endpoint=fake.endpoint, clock=FakeClock(EXPORT_NOW + 30)
        )
        try:
            open_critical = await reader.query(
                f'metric.type="{EXPORT_PREFIX}/incidents/open" AND metric.labels.severity="critical"'
            )
        finally:
            await reader.aclose()
        assert [(s.value, s.labels["task_id"]) for s in open_critical] == [(1.0, "replica-1")]
    finally:
        await rig.exporter.aclose()


async def test_export_batches_at_most_200_series_and_5s_apart(tmp_path: Path, fake: FakeMonitoring) -> None:
    fake.reset()
    rig = await _exporting(tmp_path, fake)
    try:
        await rig.store.record(
            [ProbeResult(f"p{i:03d}", "http", "t", Outcome.OK, 0.01, EXPORT_NOW - 1) for i in range(300)]
        )
        first = await rig.exporter.export(rig.daemon)
        sizes = [len(req.time_series) for req in fake.calls("CreateTimeSeries")]
        assert first.points == first.written > 600
        assert sizes == [200] * (first.points // 200) + ([first.points % 200] if first.points % 200 else [])
        # Again at once: skipped, nothing sent (one point per series per 5 s).
        again = await rig.exporter.export(rig.daemon)
        assert again.skipped and len(fake.calls("CreateTimeSeries")) == len(sizes)
        rig.clock.advance(10)
        later = await rig.exporter.export(rig.daemon)
        assert later.errors == [] and later.written == first.written
        # The descriptors were created once; the fake accepted every point as newer than the last.
        assert len(fake.calls("CreateMetricDescriptor")) == len(METRICS)
        assert len(fake.points_written(f"{EXPORT_PREFIX}/probe/success")) == 2 * 303
    finally:
        await rig.exporter.aclose()


async def test_export_retries_unavailable_and_counts_refusals(tmp_path: Path, fake: FakeMonitoring) -> None:
    fake.reset()
    rig = await _exporting(tmp_path, fake)
    registry = rig.daemon.registry
    try:
        fake.fail("CreateTimeSeries", grpc.StatusCode.UNAVAILABLE, "try again", times=2)
        ok = await rig.exporter.export(rig.daemon)
        assert ok.errors == [] and ok.written == ok.points
        assert len(fake.calls("CreateTimeSeries")) == 3  # two refused, the third written
        rig.clock.advance(60)
        fake.fail(
            "CreateTimeSeries",
            grpc.StatusCode.PERMISSION_DENIED,
            "Permission monitoring.timeSeries.create denied",
        )
        refused = await rig.exporter.export(rig.daemon)
        assert refused.written == 0 and refused.failed_requests == 1
        assert refused.errors == [
            f"Cloud Monitoring refused to write to project {PROJECT}: permission denied (the watchdog's "
            "service account needs roles/monitoring.metricWriter): "
            "Permission monitoring.timeSeries.create denied"
        ]
        assert _counter(registry, "watchdog_gcp_export_failures_total", {"reason": "PERMISSION_DENIED"}) == 1
        rig.clock.advance(60)
        fake.fail("CreateTimeSeries", grpc.StatusCode.RESOURCE_EXHAUSTED, "Quota exceeded")
        quota = await rig.exporter.export(rig.daemon)
        assert "quota exhausted" in quota.errors[0]
        assert _counter(registry, "watchdog_gcp_export_failures_total", {"reason": "RESOURCE_EXHAUSTED"}) == 1
        rig.clock.advance(60)
        back = await rig.exporter.export(rig.daemon)
        assert back.errors == [] and back.written == back.points
        assert _counter(registry, "watchdog_gcp_export_points_total") == ok.written + back.written
    finally:
        await rig.exporter.aclose()


async def test_a_new_label_key_extends_the_descriptor(tmp_path: Path, fake: FakeMonitoring) -> None:
    fake.reset()
    rig = await _exporting(tmp_path, fake)
    try:
        await rig.exporter.export(rig.daemon)
        await rig.store.record(
            [
                ProbeResult(
                    "journey",
                    "journey",
                    "t",
                    Outcome.OK,
                    0.3,
                    EXPORT_NOW,
                    labels={"step": "login", "Lang": "zhTW"},
                )
            ]
        )
        rig.clock.advance(60)
        report = await rig.exporter.export(rig.daemon)
        assert report.errors == []
        updates = [d.metric_descriptor for d in fake.calls("CreateMetricDescriptor")][len(METRICS) :]
        assert sorted(d.type.rsplit("/", 2)[-2] + "/" + d.type.rsplit("/", 1)[-1] for d in updates) == [
            "probe/latency",
            "probe/success",
        ]
        assert sorted(label.key for label in updates[0].labels) == ["check", "kind", "lang", "probe", "step"]
        journey = [
            v for labels, _, v in fake.points_written(f"{EXPORT_PREFIX}/probe/success") if labels.get("step")
        ]
        assert journey == [1.0]
    finally:
        await rig.exporter.aclose()


async def test_export_never_holds_up_the_probes(tmp_path: Path, fake: FakeMonitoring) -> None:
    """A slow API (each call 1.5 s) against a 1 s export timeout: the export gives up and counts it, and the
    probes, on the same event loop, keep their schedule meanwhile."""
    fake.reset()
    fake.delay_s = 1.5
    clock = SystemClock()
    config = _export_config(tmp_path, fake.endpoint, every=10, timeout=1)
    config.settings = config.settings.model_copy(
        update={"defaults": ProbeDefaults(interval=0.1, timeout=1, jitter=0)}
    )
    probes: list[Probe] = [FakeProbe("tick", [Outcome.OK], clock=clock, interval_s=0.1)]
    daemon = Daemon(
        wire(config, store=MemoryStore(), clock=clock, probes=probes, instance="replica-1", env={})
    )
    await daemon.start()
    try:
        await asyncio.sleep(0.3)
        before = daemon.runs_completed
        t0 = time.monotonic()
        daemon.scheduler.modify_job("gcp-export", next_run_time=datetime.now(UTC))
        while time.monotonic() - t0 < 5:
            if daemon.exporter is None or daemon.exporter.last is not None:
                break
            await asyncio.sleep(0.05)
        elapsed = time.monotonic() - t0
        ran = daemon.runs_completed - before
    finally:
        await daemon.stop()
        fake.delay_s = 0.0
    assert daemon.exporter is not None and daemon.exporter.last is not None
    assert daemon.exporter.last.errors == ["export did not finish within 1s"]
    assert _counter(daemon.registry, "watchdog_gcp_export_failures_total", {"reason": "TIMEOUT"}) == 1
    assert 0.9 < elapsed < 2.0
    assert ran >= 0.6 * elapsed / 0.1  # ~10 runs a second went on while the export waited

"""MetricSource contract, run against the fake, this host's /proc, and a real Prometheus server scraping a
real node_exporter on loopback; plus the ``host`` check family on top of a source."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from pgcluster import free_port

from watchdog.config.postgres import HostMetrics
from watchdog.core.results import Outcome
from watchdog.probes.postgres.host import check_host
from watchdog.sources import (
    NODE_CPU_PERCENT,
    NODE_MEMORY_PERCENT,
    FakeMetricSource,
    MetricSource,
    MetricSourceError,
    ProcMetricSource,
    PrometheusMetricSource,
    Sample,
    single_value,
)

# A short rate window so the CPU query has data after a few 1 s scrapes (the shipped default uses 2m).
PROM_CPU = NODE_CPU_PERCENT.replace("[2m]", "[10s]")


def _host_memory_percent() -> float:
    info = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        key, _, rest = line.partition(":")
        info[key] = float(rest.split()[0])
    return 100.0 * (1 - info["MemAvailable"] / info["MemTotal"])


@dataclass
class PrometheusStack:
    url: str
    procs: list[subprocess.Popen[bytes]]


def _wait_http(url: str, predicate: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            r = httpx.get(url, timeout=1.0)
            if r.status_code == 200 and predicate in r.text:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not become ready")


@pytest.fixture(scope="module")
def prometheus() -> Iterator[PrometheusStack]:
    """Real node_exporter + real Prometheus (1 s scrapes) on free loopback ports; stopped by pid."""
    base = Path(tempfile.mkdtemp(prefix="watchdog-prom-"))
    ne_port, prom_port = free_port(), free_port()
    (base / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        f"  - job_name: node\n    static_configs: [{{targets: ['127.0.0.1:{ne_port}']}}]\n"
    )
    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs.append(
            subprocess.Popen(
                [
                    "prometheus-node-exporter",
                    f"--web.listen-address=127.0.0.1:{ne_port}",
                    "--collector.disable-defaults",
                    "--collector.cpu",
                    "--collector.meminfo",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        procs.append(
            subprocess.Popen(
                [
                    "prometheus",
                    f"--config.file={base / 'prometheus.yml'}",
                    f"--storage.tsdb.path={base / 'data'}",
                    f"--web.listen-address=127.0.0.1:{prom_port}",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        url = f"http://127.0.0.1:{prom_port}"
        query = httpx.QueryParams({"query": PROM_CPU})
        _wait_http(f"{url}/api/v1/query?{query}", '"value"', timeout=30)
        yield PrometheusStack(url, procs)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        shutil.rmtree(base, ignore_errors=True)


@dataclass
class Subject:
    source: MetricSource
    cpu: str
    memory: str
    no_data: str | None
    invalid: str


@pytest.fixture(params=["fake", "proc", "prometheus"])
async def subject(request: pytest.FixtureRequest) -> AsyncIterator[Subject]:
    kind = request.param
    s: Subject
    if kind == "fake":
        fake = FakeMetricSource(
            {"cpu_percent": 42.0, "memory_percent": _host_memory_percent(), "nothing": []}, delay_s=0.001
        )
        s = Subject(fake, "cpu_percent", "memory_percent", "nothing", "no such query(")
    elif kind == "proc":
        s = Subject(ProcMetricSource(), "cpu_percent", "memory_percent", None, "cpu_seconds{mode=")
    else:
        stack: PrometheusStack = request.getfixturevalue("prometheus")
        s = Subject(
            PrometheusMetricSource(stack.url),
            PROM_CPU,
            NODE_MEMORY_PERCENT,
            "node_memory_DoesNotExist_bytes",
            "rate(node_cpu_seconds_total[",
        )
    try:
        yield s
    finally:
        await s.source.aclose()


async def test_cpu_and_memory_are_percentages(subject: Subject) -> None:
    for query in (subject.cpu, subject.memory):
        samples = await subject.source.query(query, timeout_s=5)
        assert len(samples) == 1, samples
        value = single_value(samples)
        assert value is not None and 0.0 <= value <= 100.0


async def test_memory_agrees_with_this_host(subject: Subject) -> None:
    # Every subject here describes this machine (the fake is loaded with this host's number).
    value = single_value(await subject.source.query(subject.memory, timeout_s=5))
    assert value is not None
    assert abs(value - _host_memory_percent()) < 5.0


async def test_invalid_query_raises_metric_source_error(subject: Subject) -> None:
    with pytest.raises(MetricSourceError) as info:
        await subject.source.query(subject.invalid, timeout_s=5)
    assert str(info.value)


async def test_concurrent_queries(subject: Subject) -> None:
    results = await asyncio.gather(*(subject.source.query(subject.memory, timeout_s=5) for _ in range(5)))
    assert all(len(r) == 1 for r in results)


@pytest.mark.parametrize("kind", ["fake", "prometheus"])
async def test_no_data_is_an_empty_result(kind: str, request: pytest.FixtureRequest) -> None:
    source: MetricSource
    if kind == "fake":
        source = FakeMetricSource({"nothing": []})
        query = "nothing"
    else:
        source = PrometheusMetricSource(request.getfixturevalue("prometheus").url)
        query = "node_memory_DoesNotExist_bytes"
    try:
        assert list(await source.query(query, timeout_s=5)) == []
    finally:
        await source.aclose()


def _blackhole() -> tuple[socket.socket, int]:
    """A listening socket that accepts (kernel backlog) and never answers."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    port: int = s.getsockname()[1]
    return s, port


@pytest.mark.parametrize("kind", ["fake", "proc", "prometheus-refused", "prometheus-hung"])
async def test_unavailable_source_errors_within_timeout(kind: str, tmp_path: Path) -> None:
    hole: socket.socket | None = None
    source: MetricSource
    query = "memory_percent"
    if kind == "fake":
        source = FakeMetricSource({"memory_percent": 1.0}, delay_s=30)
    elif kind == "proc":
        source = ProcMetricSource(tmp_path / "no-proc-here")
    elif kind == "prometheus-refused":
        source = PrometheusMetricSource(f"http://admin:hunter2@127.0.0.1:{free_port()}")
        query = NODE_MEMORY_PERCENT
    else:
        hole, port = _blackhole()
        source = PrometheusMetricSource(f"http://127.0.0.1:{port}")
        query = NODE_MEMORY_PERCENT
    t0 = time.monotonic()
    try:
        with pytest.raises(MetricSourceError) as info:
            await source.query(query, timeout_s=0.5)
    finally:
        await source.aclose()
        if hole is not None:
            hole.close()
    assert time.monotonic() - t0 < 2.0
    assert "hunter2" not in str(info.value)


async def test_proc_cpu_window_follows_previous_query() -> None:
    source = ProcMetricSource(first_window_s=0.05)
    t0 = time.monotonic()
    await source.query("cpu_percent")
    first = time.monotonic() - t0
    await asyncio.sleep(0.05)
    t1 = time.monotonic()
    value = single_value(await source.query("cpu_percent"))
    second = time.monotonic() - t1
    assert first >= 0.05  # first query had to measure over a window
    assert second < 0.05  # later queries use the time since the previous one
    assert value is not None and 0 <= value <= 100
    assert single_value(await source.query("load1")) is not None
    assert os.cpu_count()


# ------------------------------------------------------------------------------------------------
# The host family on a source


@pytest.mark.parametrize(
    ("cpu", "memory", "outcome", "fragment"),
    [
        (35.0, 40.0, Outcome.OK, "CPU 35%"),
        (85.0, 40.0, Outcome.DEGRADED, "CPU at 85% (limit 80%)"),
        (97.0, 40.0, Outcome.FAILED, "CPU at 97%"),
        (35.0, 75.0, Outcome.DEGRADED, "memory at 75% (limit 70%)"),
        (35.0, [], Outcome.DEGRADED, "memory: no data"),
        (MetricSourceError("boom"), 40.0, Outcome.FAILED, "CPU: fake source failed: boom"),
    ],
)
async def test_host_family_thresholds(cpu: object, memory: object, outcome: Outcome, fragment: str) -> None:
    source = FakeMetricSource({"cpu_percent": cpu, "memory_percent": memory})  # type: ignore[dict-item]
    report = await check_host(source, HostMetrics(source="proc"))
    assert report.outcome is outcome, report.reason
    assert fragment in report.reason
    names = {o.name for o in report.observations}
    if isinstance(cpu, float):
        assert "db_cpu_percent" in names


async def test_host_family_with_real_prometheus(prometheus: PrometheusStack) -> None:
    source = PrometheusMetricSource(prometheus.url)
    try:
        cfg = HostMetrics(
            source="prometheus",
            url=prometheus.url,
            cpu_query=PROM_CPU,
            cpu_warn=101,
            cpu_fail=None,
            memory_warn=101,
            memory_fail=None,
        )
        report = await check_host(source, cfg)
    finally:
        await source.aclose()
    assert report.outcome is Outcome.OK, report.reason
    values = {o.name: o.value for o in report.observations}
    assert 0 <= values["db_cpu_percent"] <= 100
    assert abs(values["db_memory_percent"] - _host_memory_percent()) < 5
    assert single_value([Sample(1.0), Sample(3.0)]) == 3.0

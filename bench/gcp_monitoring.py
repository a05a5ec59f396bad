"""Cloud Monitoring reader and writer (issue 12): CPU per minute, and what they do to the probe loop.

Target: reading 20 Cloud SQL / Cloud Run series a minute and writing the watchdog's own metrics costs < 2 % of
one core, and the reader adds no latency to the probe loop.

What runs (loopback only): ``tests/gcp_fake_monitoring.py`` as a separate process (a real gRPC
``MetricService`` holding 30 minutes of synthetic Cloud SQL and Cloud Run data; its CPU is not counted), and
in this process the real google-cloud-monitoring client through the watchdog's code:

* **reader**, once a simulated minute: 11 queries, 22 series: ``cloudsql:`` cpu, memory, disk, up,
  replica lag, backends (total and by state), the raw backends and backends-by-state series, and
  ``cloud_run_request_counts`` / ``cloud_run_latencies`` for two revisions (6 + 2 series);
* **writer**, once a simulated minute: ``CloudMonitoringExporter.export`` of a wired daemon holding 50 probe
  series, 3 SLOs, a rollout and an open incident (129 points: one ``CreateTimeSeries``, 200 at most).

**CPU**: ``time.process_time()`` (every thread of this process: gRPC's included) over ``--minutes`` simulated
minutes run back to back (the first, which creates the clients and the metric descriptors, reported apart),
plus the CPU the idle clients cost, measured over ``--idle`` seconds of real time and scaled to the rest of
each minute. Result: CPU seconds per minute and % of one core.

**Probe loop**: a real ``Daemon`` with 50 fake probes at 1 s (phases spread) for ``--lag-duration`` seconds,
without and with the reader and writer (``--rounds`` alternations), these running 60x faster than in
production (every query once a second, an export every second against a clock that advances a minute per
export); the delta of the daemon's ``watchdog_scheduler_lag_seconds`` histogram (scheduled time → probe
coroutine start), p50 / p99 interpolated within buckets as ``histogram_quantile`` does, and the mean.

Run::

    python bench/gcp_monitoring.py          # 5 simulated minutes; 3 rounds of 20 s of probe loop each way
    python bench/gcp_monitoring.py --minutes 10 --lag-duration 30 --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from prometheus_client import CollectorRegistry  # noqa: E402

from watchdog.canary.guard import CanaryGuard  # noqa: E402
from watchdog.config.gcp import CloudMonitoringExport, GoogleCloud  # noqa: E402
from watchdog.config.loader import WatchdogConfig  # noqa: E402
from watchdog.config.rollouts import Rollout  # noqa: E402
from watchdog.config.settings import ProbeDefaults, Settings  # noqa: E402
from watchdog.config.slo import SloConfig  # noqa: E402
from watchdog.core.clock import Clock, FakeClock, SystemClock  # noqa: E402
from watchdog.core.results import Outcome, ProbeResult  # noqa: E402
from watchdog.flags.memory import MemoryFlagBackend  # noqa: E402
from watchdog.incidents.manager import IncidentManager  # noqa: E402
from watchdog.probes.base import Probe  # noqa: E402
from watchdog.probes.fake import FakeProbe  # noqa: E402
from watchdog.runtime.daemon import Daemon  # noqa: E402
from watchdog.runtime.gcp_export import CloudMonitoringExporter  # noqa: E402
from watchdog.runtime.wiring import wire  # noqa: E402
from watchdog.slo import SloEngine  # noqa: E402
from watchdog.sources.cloud_monitoring import (  # noqa: E402
    CloudMonitoringMetricSource,
    cloud_run_latencies,
    cloud_run_request_counts,
)
from watchdog.store.memory import MemoryStore  # noqa: E402

PROJECT = "demo-project"
INSTANCE = "demo-project:asia-east1:content-db"
SERVICE = "projects/demo-project/locations/asia-east1/services/ai-square"
PROBES = 50
_STRESS_IDS = itertools.count(1)
QUERIES = (
    "cloudsql:cpu_percent",
    "cloudsql:memory_percent",
    "cloudsql:disk_percent",
    "cloudsql:up",
    "cloudsql:replica_lag_seconds",
    "cloudsql:num_backends",
    "cloudsql:num_backends_by_state",
    'metric.type="cloudsql.googleapis.com/database/postgresql/num_backends"',
    'metric.type="cloudsql.googleapis.com/database/postgresql/num_backends_by_state"',
)


def start_fake(ahead_s: float) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "gcp_fake_monitoring.py"), str(ahead_s)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    endpoint = proc.stdout.readline().strip()
    if not endpoint.startswith("http://"):
        proc.kill()
        raise RuntimeError(f"the fake Monitoring server did not start: {endpoint!r}")
    return proc, endpoint


def stop_fake(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None
    proc.stdin.close()  # the script stops at EOF
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


async def read_minute(source: CloudMonitoringMetricSource) -> int:
    """One minute's reads; returns the number of series that answered."""
    series = 0
    for q in QUERIES:
        series += len(await source.query(q, timeout_s=5))
    # The request counts come back as one series per revision and response code class (3 in the fake).
    series += 3 * len(await cloud_run_request_counts(source, SERVICE, 60))
    series += len(await cloud_run_latencies(source, SERVICE, 60, threshold_ms=200))
    return series


def state_config(root: Path, endpoint: str, every: float = 60.0) -> WatchdogConfig:
    cloud = GoogleCloud(
        project=PROJECT,
        region="asia-east1",
        cloud_sql_instance=INSTANCE,
        endpoints={"monitoring": endpoint},
        export_metrics=CloudMonitoringExport(every=every, timeout=min(every, 20)),
    )
    slos = [
        SloConfig.model_validate(
            {"name": f"slo-{i}", "objective": 99.9, "sli": {"kind": "availability", "probe": f"p{i:02d}"}}
        )
        for i in range(3)
    ]
    return WatchdogConfig(
        root=root,
        settings=Settings(google_cloud=cloud, defaults=ProbeDefaults(interval=1, timeout=1)),
        slos=slos,
    )


async def loaded_daemon(config: WatchdogConfig, clock: Clock, probes: list[Probe]) -> Daemon:
    """A wired daemon (not started) with the state an export reads: 50 probe series, 3 SLOs evaluated, a
    rollout at 5 %, an open incident."""
    store = MemoryStore()
    await store.open()
    rollout = Rollout.model_validate(
        {
            "name": "content-db",
            "flag": {"backend": "flagd_file", "path": str(config.root / "flags.json")},
            "canary": {"probe": "p00", "match": {"cohort": "db"}},
        }
    )
    guard = CanaryGuard(
        rollout, MemoryFlagBackend(5.0, clock=clock), store, IncidentManager(config, store, clock), clock
    )
    daemon = Daemon(
        wire(config, store=store, clock=clock, probes=probes, instance="bench-1", env={}, guards=[guard])
    )
    now = clock.now()
    await store.record(
        [
            ProbeResult(
                f"p{i:02d}", "http", "t", Outcome.OK, 0.02, now - 600 + k * 10, labels={"cohort": "db"}
            )
            for i in range(PROBES)
            for k in range(60)
        ]
    )
    daemon.slo_engine = SloEngine(config.slos, store, clock)
    await daemon.slo_engine.evaluate()
    await guard.check()
    await store.transition_incident("db-latency", None, "firing", {"severity": "warning"}, now)
    return daemon


async def cpu_per_minute(endpoint: str, minutes: int, idle_s: float) -> dict[str, Any]:
    clock = FakeClock(time.time())
    with tempfile.TemporaryDirectory() as tmp:
        config = state_config(Path(tmp), endpoint)
        daemon = await loaded_daemon(config, clock, [])
        exporter = daemon.exporter
        assert exporter is not None
        source = CloudMonitoringMetricSource(
            PROJECT, endpoint=endpoint, cloud_sql_instance=INSTANCE, clock=clock
        )
        try:
            minute_cpu: list[float] = []
            minute_wall: list[float] = []
            series: list[int] = []
            points: list[int] = []
            first: tuple[float, float] = (0.0, 0.0)
            for m in range(minutes + 1):
                c0, w0 = time.process_time(), time.perf_counter()
                series.append(await read_minute(source))
                report = await exporter.export(daemon)
                if report.errors or report.written != report.points:
                    raise RuntimeError(f"export failed: {report.errors}")
                points.append(report.written)
                cpu, wall = time.process_time() - c0, time.perf_counter() - w0
                if m == 0:
                    first = (cpu, wall)
                else:
                    minute_cpu.append(cpu)
                    minute_wall.append(wall)
                clock.advance(60)
            # The clients idle between minutes: gRPC channels, the event loop.
            c0, w0 = time.process_time(), time.perf_counter()
            await asyncio.sleep(idle_s)
            idle_cpu_per_s = (time.process_time() - c0) / (time.perf_counter() - w0)
        finally:
            await source.aclose()
            await exporter.aclose()
    work = statistics.mean(minute_cpu)
    wall = statistics.mean(minute_wall)
    per_minute = work + idle_cpu_per_s * max(0.0, 60 - wall)
    return {
        "series_read": series[-1],
        "points_written": points[-1],
        "first_minute_cpu_s": first[0],
        "first_minute_wall_s": first[1],
        "work_cpu_s": work,
        "work_cpu_min_max": (min(minute_cpu), max(minute_cpu)),
        "work_wall_s": wall,
        "idle_cpu_per_s": idle_cpu_per_s,
        "cpu_per_minute_s": per_minute,
        "percent_of_core": 100 * per_minute / 60,
    }


def lag_quantiles(delta: dict[str, float]) -> dict[str, float]:
    """p50/p99/mean of a scheduler-lag histogram delta (cumulative buckets by ``le``, count, sum)."""
    count = delta["count"]
    edges = sorted(float(k) for k in delta if k not in ("count", "sum", "+Inf"))

    def q(phi: float) -> float:
        rank = phi * count
        lower, prev = 0.0, 0.0
        for edge in edges:
            cum = delta[repr(edge)]
            if cum >= rank:
                inside = cum - prev
                return lower + (edge - lower) * ((rank - prev) / inside if inside else 0.0)
            lower, prev = edge, cum
        return edges[-1]

    return {
        "runs": count,
        "p50_ms": 1000 * q(0.5),
        "p99_ms": 1000 * q(0.99),
        "mean_ms": 1000 * delta["sum"] / count,
    }


def add(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    return {k: a.get(k, 0.0) + b.get(k, 0.0) for k in a.keys() | b.keys()}


def lag_snapshot(registry: CollectorRegistry) -> dict[str, float]:
    out: dict[str, float] = {}
    for family in registry.collect():
        if family.name != "watchdog_scheduler_lag_seconds":
            continue
        for s in family.samples:
            if s.name.endswith("_bucket"):
                out[s.labels["le"] if s.labels["le"] == "+Inf" else repr(float(s.labels["le"]))] = s.value
            elif s.name.endswith("_count"):
                out["count"] = s.value
            elif s.name.endswith("_sum"):
                out["sum"] = s.value
    return out


async def probe_lag(endpoint: str, duration_s: float, with_gcp: bool) -> dict[str, float]:
    """The scheduler-lag histogram delta of ``duration_s`` of probe loop."""
    clock = SystemClock()
    probes: list[Probe] = [
        FakeProbe(f"p{i:02d}", [Outcome.OK], clock=clock, interval_s=1.0) for i in range(PROBES)
    ]
    with tempfile.TemporaryDirectory() as tmp:
        config = state_config(Path(tmp), endpoint)
        daemon = await loaded_daemon(config, clock, probes)
        await daemon.start()
        stress: list[asyncio.Task[None]] = []
        closers: list[Callable[[], Awaitable[None]]] = []
        try:
            await asyncio.sleep(2.0)  # every probe has started its schedule
            if with_gcp:
                source = CloudMonitoringMetricSource(PROJECT, endpoint=endpoint, cloud_sql_instance=INSTANCE)
                export_clock = FakeClock(time.time())
                exporter = CloudMonitoringExporter(
                    config.settings.google_cloud,  # type: ignore[arg-type]
                    CloudMonitoringExport(),
                    CollectorRegistry(),
                    f"bench-stress-{next(_STRESS_IDS)}",  # a fresh task: this exporter's clock starts over
                    clock=export_clock,
                )
                closers += [source.aclose, exporter.aclose]

                async def reads() -> None:
                    while True:
                        await read_minute(source)
                        await asyncio.sleep(1.0)

                async def writes() -> None:
                    while True:
                        report = await exporter.export(daemon)
                        if report.errors:
                            raise RuntimeError(f"export failed: {report.errors}")
                        export_clock.advance(60)
                        await asyncio.sleep(1.0)

                stress = [asyncio.create_task(reads()), asyncio.create_task(writes())]
            before = lag_snapshot(daemon.registry)
            await asyncio.sleep(duration_s)
            after = lag_snapshot(daemon.registry)
            result = {k: after[k] - before.get(k, 0.0) for k in after}
            for task in stress:
                if task.done():
                    task.result()  # a failed stress loop is an error, not a quiet run
        finally:
            for task in stress:
                task.cancel()
            await asyncio.gather(*stress, return_exceptions=True)
            for close in closers:
                await close()
            await daemon.stop()
    return result


async def main(args: argparse.Namespace) -> None:
    proc, endpoint = start_fake(
        ahead_s=60.0 * (args.minutes + 2)
    )  # the CPU run's clock gains a minute a minute
    try:
        cpu = await cpu_per_minute(endpoint, args.minutes, args.idle)
        print(
            f"reader {cpu['series_read']} series + writer {cpu['points_written']} points a minute: "
            f"work {1000 * cpu['work_cpu_s']:.1f} ms CPU (min {1000 * cpu['work_cpu_min_max'][0]:.1f}, "
            f"max {1000 * cpu['work_cpu_min_max'][1]:.1f}) in {1000 * cpu['work_wall_s']:.1f} ms wall; "
            f"idle clients {1000 * cpu['idle_cpu_per_s']:.2f} ms CPU/s; "
            f"= {cpu['cpu_per_minute_s'] * 1000:.0f} ms CPU a minute "
            f"= {cpu['percent_of_core']:.3f} % of one core"
        )
        print(
            f"first minute (clients, descriptors): {1000 * cpu['first_minute_cpu_s']:.0f} ms CPU, "
            f"{1000 * cpu['first_minute_wall_s']:.0f} ms wall"
        )
        pooled: dict[bool, dict[str, float]] = {False: {}, True: {}}
        for r in range(args.rounds):  # alternated, so a noisy neighbour hits both sides alike
            for with_gcp in (False, True):
                delta = await probe_lag(endpoint, args.lag_duration, with_gcp)
                pooled[with_gcp] = add(pooled[with_gcp], delta)
                lag = lag_quantiles(delta)
                print(
                    f"round {r + 1} probe loop {'with' if with_gcp else 'without'} reader+writer at 60x: "
                    f"{lag['runs']:.0f} runs, scheduler lag p50 {lag['p50_ms']:.2f} ms, "
                    f"p99 {lag['p99_ms']:.2f} ms, mean {lag['mean_ms']:.2f} ms"
                )
        for with_gcp in (False, True):
            lag = lag_quantiles(pooled[with_gcp])
            print(
                f"all rounds {'with' if with_gcp else 'without'} reader+writer at 60x: "
                f"{lag['runs']:.0f} runs, scheduler lag p50 {lag['p50_ms']:.2f} ms, "
                f"p99 {lag['p99_ms']:.2f} ms, mean {lag['mean_ms']:.2f} ms"
            )
    finally:
        stop_fake(proc)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--minutes", type=int, default=5, help="simulated minutes measured (after a first one)"
    )
    parser.add_argument("--idle", type=float, default=5.0, help="seconds of idle clients measured")
    parser.add_argument("--lag-duration", type=float, default=20.0, help="seconds of probe loop each way")
    parser.add_argument("--rounds", type=int, default=3, help="alternating without/with rounds")
    asyncio.run(main(parser.parse_args()))

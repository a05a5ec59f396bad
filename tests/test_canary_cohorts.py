"""Cohorts from the service's own request counters in Prometheus (``canary: {prometheus: …}``): the guard
counts each counter's increase since the stage began, per series, so a restarted instance (its counters
back at zero) never gives a negative or a bogus count, a series born during the stage (the first 5xx)
counts whole, and one that was only invisible when the stage began does not; a Prometheus that does not
answer adds nothing and the guard holds after ``no_data_after``; a restarted daemon continues the count
from the store. Then the real thing: the real Prometheus scraping the reference service every second, a
counter reset by restarting the service, and a database-path fault rolled back to YAML."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from watchdog.canary import cohorts
from watchdog.canary.cohorts import RECORD_KIND, MetricCohorts, combined_query
from watchdog.canary.guard import ROLLBACK_FAILED_ALERT, ROLLED_BACK_ALERT, CanaryGuard
from watchdog.config.loader import WatchdogConfig, load_config
from watchdog.config.rollouts import PrometheusCohort, Rollout
from watchdog.core.clock import FakeClock, SystemClock
from watchdog.flags.flagd_file import FlagdFileBackend, read_db_percent, write_initial
from watchdog.flags.memory import MemoryFlagBackend
from watchdog.incidents.manager import IncidentManager
from watchdog.sources.base import MetricSourceError, Sample
from watchdog.sources.fake import FakeMetricSource
from watchdog.store.memory import MemoryStore

START = 1_767_225_600.0
PROM = "http://127.0.0.1:9"
DB_REQUESTS = 'http_requests_total{cohort="db",selection="flag"}'
DB_ERRORS = 'http_requests_total{cohort="db",selection="flag",status_class="5xx"}'
DB_SLOW = (
    'http_request_duration_seconds_count{cohort="db"} - ignoring(le) '
    'http_request_duration_seconds_bucket{cohort="db",le="0.2"}'
)


def _cohort(cohort: str, url: str = PROM) -> dict[str, Any]:
    return {
        "prometheus": {
            "url": url,
            "requests": DB_REQUESTS.replace('"db"', f'"{cohort}"'),
            "errors": DB_ERRORS.replace('"db"', f'"{cohort}"'),
            "slow": DB_SLOW.replace('"db"', f'"{cohort}"'),
        }
    }


def _rollout(url: str = PROM, flag_path: str = "/unused/flags.json", **overrides: Any) -> Rollout:
    spec: dict[str, Any] = {
        "name": "content-db",
        "flag": {"backend": "flagd_file", "path": flag_path},
        "canary": _cohort("db", url),
        "baseline": _cohort("yaml", url),
    }
    spec.update(overrides)
    return Rollout.model_validate(spec)


def _config(root: Path) -> WatchdogConfig:
    (root / "alerts").mkdir(parents=True)
    (root / "runbooks").mkdir()
    (root / "alerts" / "e.yaml").write_text(
        "escalation:\n  - name: default\n    levels:\n"
        "      - {level: L1, who: dev team, notify: [{type: log}], ack_within: 30m}\n"
        "      - {level: L3, who: CTO, notify: [{type: log}]}\n"
    )
    for alert in (ROLLED_BACK_ALERT, ROLLBACK_FAILED_ALERT, "canary-held"):
        (root / "runbooks" / f"{alert}.md").write_text(f"# {alert}\n")
    (root / "watchdog.yaml").write_text("allow_no_probes: true\n")
    return load_config(root)


class Counters:
    """What Prometheus answers for one rollout's cohorts: series values by part, set by hand."""

    def __init__(self, rollout: Rollout) -> None:
        self.source = FakeMetricSource()
        self.values: dict[str, dict[str, dict[str, float]]] = {}
        self.earlier: dict[str, dict[str, dict[str, float]]] = {}
        self.cohorts: dict[str, PrometheusCohort] = {}
        for role, cohort in (("canary", rollout.canary), ("baseline", rollout.baseline)):
            assert cohort is not None and cohort.prometheus is not None
            self.cohorts[role] = cohort.prometheus
            self.values[role] = {}
        self.down = False
        self.publish()

    def set(self, role: str, part: str, instance: str, value: float) -> None:
        self.values.setdefault(role, {}).setdefault(part, {})[instance] = value
        self.publish()

    def add(self, role: str, part: str, instance: str, value: float) -> None:
        series = self.values.setdefault(role, {}).setdefault(part, {})
        self.set(role, part, instance, series.get(instance, 0.0) + value)

    def vanish(self, role: str, instance: str) -> None:
        """The instance's series go stale (a failed scrape): invisible now, still in the look back."""
        for part, series in self.values[role].items():
            if instance in series:
                self.earlier.setdefault(role, {}).setdefault(part, {})[instance] = series.pop(instance)
        self.publish()

    def publish(self) -> None:
        for role, cohort in self.cohorts.items():
            query = combined_query(cohort)
            if self.down:
                self.source.set(query, MetricSourceError("Prometheus at http://127.0.0.1:9 unreachable"))
                continue
            self.source.set(query, self._samples(self.values.get(role, {})))
            merged: dict[str, dict[str, float]] = {}
            for view in (self.earlier.get(role, {}), self.values.get(role, {})):
                for part, series in view.items():
                    merged.setdefault(part, {}).update(series)
            self.source.set(f"last_over_time(({query})[10m:])", self._samples(merged))

    @staticmethod
    def _samples(parts: Mapping[str, Mapping[str, float]]) -> list[Sample]:
        return [
            Sample(value, {"instance": instance, "watchdog_part": part})
            for part, series in parts.items()
            for instance, value in series.items()
        ]


async def _guard(
    tmp_path: Path, rollout: Rollout, store: MemoryStore | None = None, clock: FakeClock | None = None
) -> tuple[CanaryGuard, Counters, FakeClock, MemoryFlagBackend]:
    clock = clock or FakeClock(START)
    if store is None:
        store = MemoryStore()
        await store.open()
    flag = MemoryFlagBackend(5.0, clock=clock, updated_by="release-engineer", reason="canary start")
    manager = IncidentManager(_config(tmp_path / f"c{time.monotonic_ns()}"), store, clock)
    guard = CanaryGuard(rollout, flag, store, manager, clock)
    counters = Counters(rollout)
    cohorts.use(guard, MetricCohorts(source_for=lambda _cfg: counters.source))
    return guard, counters, clock, flag


# -- config ------------------------------------------------------------------------------------------------


def test_a_cohort_is_a_probe_or_prometheus_never_both_nor_neither() -> None:
    both = {"probe": "content-db", **_cohort("db")}
    for canary, message in (
        (both, "exactly one of probe, prometheus or cloud_run"),
        ({"match": {"cohort": "db"}}, "exactly one of probe, prometheus or cloud_run"),
        ({**_cohort("db"), "match": {"cohort": "db"}}, "match selects a probe's series"),
    ):
        with pytest.raises(ValidationError, match=message):
            _rollout(canary=canary)
    assert _rollout(canary={"probe": "content-db", "match": {"cohort": "db"}}).canary.prometheus is None


@pytest.mark.parametrize(
    ("requests", "message"),
    [
        ('sum(http_requests_total{cohort="db"})', "not an aggregation"),
        ('sum by (route) (http_requests_total{cohort="db"})', "not an aggregation"),
        ('rate(http_requests_total{cohort="db"}[1m])', "not rate"),
        ("   ", "empty"),
    ],
)
def test_the_expressions_are_per_series_counters(requests: str, message: str) -> None:
    canary = _cohort("db")
    canary["prometheus"]["requests"] = requests
    with pytest.raises(ValidationError, match=message):
        _rollout(canary=canary)


def test_a_latency_limit_needs_the_slow_counter_and_urls_carry_no_secrets() -> None:
    canary = _cohort("db")
    del canary["prometheus"]["slow"]
    with pytest.raises(ValidationError, match=r"needs canary\.prometheus\.slow"):
        _rollout(canary=canary)
    assert _rollout(canary=canary, limits={"latency": None}).limits.latency is None
    with pytest.raises(ValidationError, match=r'over le="0\.2" s but the latency limit is 0\.5 s'):
        _rollout(limits={"latency": {"threshold": "500ms"}})
    canary = _cohort("db", url="http://user:pw@prometheus:9090")
    with pytest.raises(ValidationError, match="must not carry credentials"):
        _rollout(canary=canary)


def test_the_loader_takes_a_prometheus_cohort_without_a_probe(tmp_path: Path) -> None:
    config_dir = tmp_path / "c"
    _config(config_dir)
    (config_dir / "alerts" / "r.yaml").write_text(
        "rollouts:\n  - name: content-db\n    flag: {backend: flagd_file, path: /tmp/f.json}\n"
        f"    canary: {json.dumps(_cohort('db'))}\n    baseline: {json.dumps(_cohort('yaml'))}\n"
    )
    (rollout,) = load_config(config_dir).rollouts
    assert rollout.canary.prometheus is not None and rollout.canary.probe is None


# -- counting --------------------------------------------------------------------------------------------


async def test_counts_are_the_increase_since_the_stage_began(tmp_path: Path) -> None:
    guard, counters, clock, _flag = await _guard(tmp_path, _rollout())
    counters.set("canary", "requests", "a", 1000)  # before the stage: not counted
    counters.set("canary", "errors", "a", 40)
    counters.set("canary", "slow", "a", 7)
    first = await guard.check()
    assert first.action == "continue" and first.canary.events == 0
    for _ in range(10):
        clock.advance(1)
        counters.add("canary", "requests", "a", 30)
        counters.add("canary", "requests", "b", 10)
    decision = await guard.check()
    assert (decision.canary.events, decision.canary.failed, decision.canary.slow) == (400, 0, 0)
    assert decision.canary.last_at == clock.now()
    assert decision.action == "continue"


async def test_a_restarted_instance_counts_from_zero_never_negative(tmp_path: Path) -> None:
    guard, counters, clock, _flag = await _guard(tmp_path, _rollout())
    counters.set("canary", "requests", "a", 5000)
    counters.set("canary", "requests", "b", 300)
    await guard.check()
    clock.advance(1)
    counters.set("canary", "requests", "a", 5100)  # +100
    assert (await guard.check()).canary.events == 100
    clock.advance(1)
    counters.set("canary", "requests", "a", 12)  # the instance restarted: 12 since it came back
    counters.set("canary", "requests", "b", 310)  # +10
    assert (await guard.check()).canary.events == 122
    clock.advance(1)
    counters.set("canary", "requests", "a", 20)  # +8
    decision = await guard.check()
    assert decision.canary.events == 130 and decision.action == "continue"


async def test_a_series_born_during_the_stage_counts_whole_one_only_hidden_does_not(tmp_path: Path) -> None:
    guard, counters, clock, _flag = await _guard(tmp_path, _rollout())
    counters.set("canary", "requests", "a", 900)
    counters.set("canary", "requests", "b", 800)
    counters.set("canary", "errors", "b", 500)  # b failed a lot long ago
    counters.vanish("canary", "b")  # ... and its last scrape failed just as the stage began
    await guard.check()
    clock.advance(1)
    counters.set("canary", "requests", "a", 950)
    counters.set("canary", "requests", "b", 820)  # b is back: +20, not +820
    counters.set("canary", "errors", "b", 500)  # unchanged: no new errors
    decision = await guard.check()
    assert (decision.canary.events, decision.canary.failed) == (70, 0)
    assert decision.action == "continue"
    clock.advance(1)
    counters.add("canary", "requests", "a", 5)
    counters.set("canary", "errors", "a", 5)  # a's first 5xx: its series is born with 5
    decision = await guard.check()
    assert (decision.canary.events, decision.canary.failed) == (75, 5)
    assert decision.action == "rolled_back", decision


async def test_a_hard_fault_in_real_traffic_rolls_back_with_the_evidence(tmp_path: Path) -> None:
    guard, counters, clock, flag = await _guard(tmp_path, _rollout())
    await guard.check()
    for _ in range(5):  # healthy: canary 1.25 requests/s, baseline 23.75
        clock.advance(4)
        counters.add("canary", "requests", "a", 5)
        counters.add("baseline", "requests", "a", 95)
        assert (await guard.check()).action == "continue"
    counters.add("canary", "requests", "a", 3)
    counters.add("canary", "errors", "a", 3)
    decision = await guard.check()
    assert decision.action == "rolled_back", decision
    assert (await flag.get()).db_percent == 0.0
    assert "canary errors: 3 of 28" in flag.history[-1].reason


async def test_a_shared_outage_is_not_the_canarys_fault(tmp_path: Path) -> None:
    guard, counters, clock, flag = await _guard(tmp_path, _rollout())
    await guard.check()
    for _ in range(20):
        clock.advance(1)
        counters.add("canary", "requests", "a", 10)
        counters.add("canary", "errors", "a", 1)  # 10 %: the baseline fails as much
        counters.add("baseline", "requests", "a", 200)
        counters.add("baseline", "errors", "a", 20)
        decision = await guard.check()
        assert decision.action == "continue", decision
    assert any("the baseline fails 10.000% itself" in e for e in decision.evidence)
    assert flag.history == []


async def test_latency_from_the_histogram(tmp_path: Path) -> None:
    guard, counters, clock, _flag = await _guard(tmp_path, _rollout())
    await guard.check()
    clock.advance(10)
    counters.add("canary", "requests", "a", 40)
    counters.add("canary", "slow", "a", 40)  # +300 ms: every request over 200 ms
    decision = await guard.check()
    assert decision.action == "rolled_back", decision
    record = await guard.store.get_incident("canary:content-db")
    assert record is not None and record.data["cause"] == "latency"


async def test_prometheus_down_adds_nothing_and_holds_after_no_data_after(tmp_path: Path) -> None:
    guard, counters, clock, flag = await _guard(tmp_path, _rollout(no_data_after="2m"))
    counters.down = True
    counters.publish()
    await guard.check()
    clock.advance(119)
    assert (await guard.check()).action == "continue"
    clock.advance(2)
    held = await guard.check()
    assert held.action == "hold" and "no data" in held.reason, "silence is never read as healthy"
    counters.down = False
    counters.set("canary", "requests", "a", 500)  # counted from Prometheus's first answer on
    assert (await guard.check()).canary.events == 0
    clock.advance(5)
    counters.add("canary", "requests", "a", 10)
    assert (await guard.check()).canary.events == 10
    counters.down = True  # an outage mid-stage: nothing new, nothing negative
    counters.publish()
    counters.add("canary", "requests", "a", 10)
    counters.add("canary", "errors", "a", 2)
    clock.advance(30)
    assert (await guard.check()).canary.events == 10
    counters.down = False
    counters.add("canary", "requests", "a", 2)
    counters.add("canary", "errors", "a", 2)
    back = await guard.check()
    assert (back.canary.events, back.canary.failed) == (22, 4), "back: the increase meanwhile counts"
    assert back.action == "rolled_back" and flag.history[-1].db_percent == 0.0


async def test_a_restarted_daemon_continues_the_count_from_the_store(tmp_path: Path) -> None:
    rollout = _rollout()
    store = MemoryStore()
    await store.open()
    clock = FakeClock(START)
    guard, counters, _clock, _flag = await _guard(tmp_path, rollout, store, clock)
    counters.set("canary", "requests", "a", 777)
    await guard.check()
    clock.advance(15)
    counters.set("canary", "requests", "a", 877)
    assert (await guard.check()).canary.events == 100
    saved = await store.get_record(RECORD_KIND, "content-db:canary")
    assert saved is not None and saved["total"]["requests"] == 100
    # Another process (the daemon restarted, or a second replica) with the same store and flag.
    manager = IncidentManager(_config(tmp_path / "other"), store, clock)
    other = CanaryGuard(rollout, guard.flag, store, manager, clock)
    cohorts.use(other, MetricCohorts(source_for=lambda _cfg: counters.source))
    clock.advance(3)
    counters.set("canary", "requests", "a", 900)
    assert (await other.check()).canary.events == 123


# -- the real Prometheus scraping the reference service ---------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _start_service(port: int, flag_file: Path, log: Path) -> asyncio.subprocess.Process:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "watchdog.demo",
        "--port",
        str(port),
        "--flag",
        str(flag_file),
        "--no-rate-limits",
        stdout=log.open("ab"),
        stderr=asyncio.subprocess.STDOUT,
        env=env,
    )
    async with httpx.AsyncClient(timeout=2) as client:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):  # not up yet
                if (await client.get(f"http://127.0.0.1:{port}/api/simple-health")).status_code == 200:
                    return proc
            await asyncio.sleep(0.1)
    raise AssertionError(f"the reference service did not start; see {log}")


async def _stop(proc: asyncio.subprocess.Process | None) -> None:
    if proc is None or proc.returncode is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), 15)
    except TimeoutError:
        proc.kill()
        await proc.wait()


@pytest.mark.slow  # about 20 s: two service starts, Prometheus, a dozen scrapes
async def test_real_prometheus_scraping_the_reference_service(tmp_path: Path) -> None:
    binary = shutil.which("prometheus")
    assert binary, "prometheus (Debian package) is required; scripts/deps.sh installs it"
    flag_file = tmp_path / "flags.json"
    write_initial(flag_file, 50.0)
    service_port, prom_port = _free_port(), _free_port()
    service = f"http://127.0.0.1:{service_port}"
    (tmp_path / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n  - job_name: svc\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{service_port}']}}]\n"
    )
    service_proc = prom = None
    try:
        service_proc = await _start_service(service_port, flag_file, tmp_path / "service.log")
        prom = await asyncio.create_subprocess_exec(
            binary,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        prom_url = f"http://127.0.0.1:{prom_port}"
        clock = SystemClock()
        store = MemoryStore()
        await store.open()
        rollout = _rollout(url=prom_url, flag_path=str(flag_file), check_every="0.5s")
        flag = FlagdFileBackend(flag_file, clock=clock)
        guard = CanaryGuard(
            rollout, flag, store, IncidentManager(_config(tmp_path / "c"), store, clock), clock
        )
        sent = {"db": 0, "yaml": 0}
        async with httpx.AsyncClient(timeout=5) as client:

            async def scraped(n: int = 2) -> None:
                """Wait until Prometheus has scraped the service successfully ``n`` more times."""
                seen: list[float] = []
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    try:
                        result = (
                            await client.get(
                                f"{prom_url}/api/v1/query",
                                params={"query": 'timestamp(up{job="svc"}) and up{job="svc"} == 1'},
                            )
                        ).json()["data"]["result"]
                    except (httpx.HTTPError, KeyError, ValueError):
                        result = []
                    if result and (not seen or float(result[0]["value"][1]) > seen[-1]):
                        seen.append(float(result[0]["value"][1]))
                        if len(seen) > n:
                            return
                    await asyncio.sleep(0.2)
                raise AssertionError("Prometheus did not scrape the reference service")

            async def traffic(n: int, tag: str) -> None:
                for i in range(n):
                    r = await client.get(
                        f"{service}/api/pbl/scenarios",
                        params={"lang": "en"},
                        headers={"X-Request-Id": f"{tag}-{i}"},
                    )
                    sent[r.headers["X-Data-Source"]] += 1

            await scraped()
            await traffic(10, "warm")  # before the stage: not counted
            await scraped()
            assert (await guard.check()).action == "continue"
            sent = {"db": 0, "yaml": 0}
            await traffic(60, "one")
            await scraped()
            decision = await guard.check()
            assert decision.baseline is not None
            assert (decision.canary.events, decision.baseline.events) == (sent["db"], sent["yaml"]), sent
            assert decision.action == "continue", decision

            # The service restarts: its counters start again from zero.
            await _stop(service_proc)
            service_proc = None
            await asyncio.sleep(1.5)
            assert (await guard.check()).canary.events == sent["db"], "down: nothing new, nothing negative"
            service_proc = await _start_service(service_port, flag_file, tmp_path / "service.log")
            await traffic(20, "two")
            await scraped()
            decision = await guard.check()
            assert decision.baseline is not None
            assert (decision.canary.events, decision.baseline.events) == (sent["db"], sent["yaml"]), sent
            assert decision.canary.failed == 0 and decision.action == "continue"

            # The database path breaks: rolled back to YAML, and the service obeys.
            assert (await client.post(f"{service}/_faults", json={"db_error_rate": 1.0})).status_code == 200
            onset = time.monotonic()
            action = ""
            while action != "rolled_back" and time.monotonic() - onset < 20:
                await traffic(5, f"fault-{time.monotonic_ns()}")
                action = (await guard.check()).action
                await asyncio.sleep(0.2)
            assert action == "rolled_back", await guard.check()
            assert read_db_percent(json.loads(flag_file.read_text())) == 0.0
            await asyncio.sleep(1.5)  # the service re-reads its flag file
            sources = set()
            for i in range(30):
                r = await client.get(
                    f"{service}/api/pbl/scenarios",
                    params={"lang": "en"},
                    headers={"X-Request-Id": f"after-{i}"},
                )
                sources.add(r.headers["X-Data-Source"])
            assert sources == {"yaml"}
        await cohorts.reader_of(guard).aclose()
    finally:
        await _stop(service_proc)
        if prom is not None:
            prom.terminate()
            await asyncio.wait_for(prom.wait(), timeout=15)

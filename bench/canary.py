"""Canary guard (issue 11): onset → verified flip for database-path faults at the reference service's
realistic traffic, false flips on a healthy canary, and Flagger's and Argo Rollouts' defaults beside ours.

    .venv/bin/python bench/canary.py                 # simulated distributions + false flips (~6 min)
    .venv/bin/python bench/canary.py --quick         # a smoke run (~15 s)
    .venv/bin/python bench/canary.py --only real     # 18 real-time runs: reference service, Prometheus,
                                                     # watchdog run; then the same simulated (~12 min)
    .venv/bin/python bench/canary.py --json out.json # raw numbers too

Traffic: ``--rps`` (25) unpinned content requests a second in total, ``--canary`` (5) % of them on the
database path (1.25/s), the rest on YAML; every request fails with ``--background`` (0.05 %) probability
when healthy and takes a lognormal time (median 20 ms, sigma 0.6: P(> 200 ms) = 6e-5). A fault on the
database path, from its onset: errors with probability 100 %, 20 %, 5 % or 1 %; +300 ms on every request
(every one over the 200 ms limit); or the database down (every DB-path request fails at once, as the
reference service answers: 500 on connection refused).

Simulated time (``sim``): the real ``CanaryGuard`` with a ``FakeClock`` over a ``MemoryStore`` and a
``MemoryFlagBackend``, its cohorts read through the real metric path (``watchdog.canary.cohorts``: the
combined query, per-series increases, the saved state) from a simulated Prometheus: counters scraped every
``--scrape`` (5) s at a random phase, a query answering what the last scrape saw. The guard is checked
every ``check_every`` (1 s) from the stage's start; a check that sees no new scrape sees the same counts
and decides the same, so only the first check after each scrape is run. The stage starts at t = 0 (the
flag at 5 %); the fault starts at ``age`` into it; onset → flip is the check that flipped the flag and read
it back, minus the onset. Runs that do not flip within ``--cap`` are reported as such.

Beside ours, on the very same simulated counters (the counterfactual stream goes on after our flip):

- **Flagger** (docs.flagger.app, fluxcd.io/flagger/usage/metrics; ``pkg/controller/scheduler.go``):
  ``analysis.interval: 1m``, ``threshold: 5``, builtin ``request-success-rate`` ``min: 99`` over
  ``interval: 1m``. Each tick (every minute, random phase) first rolls back if the failed checks have
  reached the threshold, then runs the check: success rate = non-5xx / all over the last minute (counter
  increases between scrapes; no requests at all is "no values found", a failed check). Failed checks are
  never reset during an analysis; here they count from the onset only (in its favour: a healthy canary at
  0.05 % errors fails 3.7 % of Flagger's checks before any fault). Its latency metric
  (``request-duration`` P99 ``max: 500`` ms) never fires for +300 ms (P99 ≈ 0.38 s).
- **Argo Rollouts** (argoproj.github.io/argo-rollouts, ``docs/features/analysis.md``; field defaults in
  ``pkg/apis/rollouts/v1alpha1/analysis_types.go``): the documented background analysis, ``interval:
  5m``, ``failureLimit: 3``, ``successCondition: result >= 0.95`` on ``sum(irate(non-5xx[5m])) /
  sum(irate(all[5m]))``; irate takes the last two scrapes, so each measurement sees one scrape interval;
  no requests in it is NaN, a failed measurement. The metric fails on the 4th failed measurement
  (failures > failureLimit) and the rollout aborts (canary weight back to 0). Field defaults: no
  ``interval`` = one measurement only, ``failureLimit`` 0, ``consecutiveErrorLimit`` 4. No latency metric in
  the example.

Also on the probe path (``--probe-every``, 10 s as in this repository's ``probes/api.yaml``): the same
guard over pinned probes (``content-db``/``content-yaml``) recorded into the store.

False flips: ``--false-stages`` (10) stages of ``--false-requests`` (100,000) healthy canary requests each
(at 1.25/s, 22 h of simulated time per stage), the guard checked after every scrape: flips counted; and
Flagger's and Argo's failed checks on the same streams.

Real time (``--only real``): the reference service (``python -m watchdog.demo``, flag file at 5 %),
synthetic users (open-loop Poisson arrivals at ``--rps``, 10,000 user ids, unpinned, so the flag's 5 %
bucket decides), the real Prometheus (Debian's ``prometheus``) scraping the service every ``--scrape`` s,
and ``watchdog run`` with the rollout's cohorts read from that Prometheus. Per run: a fresh state, the
flag at 5 %, the guard watching, ``--real-age`` s of healthy traffic, the fault switched on over
``POST /_faults``; onset → flip is the flag file reading 0 % database minus the fault's switch-on. The
simulation is then run with the same parameters for comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import json
import logging
import math
import os
import platform
import random
import re
import shutil
import signal
import socket
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from watchdog.canary import cohorts  # noqa: E402
from watchdog.canary.cohorts import PART_LABEL, MetricCohorts  # noqa: E402
from watchdog.canary.guard import ROLLBACK_FAILED_ALERT, ROLLED_BACK_ALERT, CanaryGuard  # noqa: E402
from watchdog.config.loader import WatchdogConfig, load_config  # noqa: E402
from watchdog.config.rollouts import PrometheusCohort, Rollout  # noqa: E402
from watchdog.core.clock import FakeClock  # noqa: E402
from watchdog.core.results import Outcome, ProbeResult  # noqa: E402
from watchdog.flags.flagd_file import read_db_percent, write_initial  # noqa: E402
from watchdog.flags.memory import MemoryFlagBackend  # noqa: E402
from watchdog.incidents.manager import IncidentManager  # noqa: E402
from watchdog.sources.base import MetricSource, Sample  # noqa: E402
from watchdog.store.memory import MemoryStore  # noqa: E402

START = 1_767_225_600.0
LATENCY_MEDIAN_S = 0.020
LATENCY_SIGMA = 0.6
THRESHOLD_S = 0.2
CHECK_EVERY_S = 1.0
HEALTHY_SLOW = 0.5 * math.erfc(math.log(THRESHOLD_S / LATENCY_MEDIAN_S) / LATENCY_SIGMA / math.sqrt(2))
"""P(a healthy request takes over 200 ms) under the latency model (6.2e-5)."""
EVIDENCE = re.compile(r"evidence ([0-9.e+-]+) \(needs ([0-9.e+-]+)")
FLAGGER_INTERVAL_S, FLAGGER_THRESHOLD, FLAGGER_MIN_SUCCESS, FLAGGER_WINDOW_S = 60.0, 5, 0.99, 60.0
ARGO_INTERVAL_S, ARGO_FAILURE_LIMIT, ARGO_MIN_SUCCESS = 300.0, 3, 0.95


def metric_cohort(cohort: str, url: str) -> dict[str, Any]:
    """The reference service's own series (watchdog/demo/metrics.py) for one data-path cohort."""
    return {
        "prometheus": {
            "url": url,
            "requests": f'http_requests_total{{cohort="{cohort}",selection="flag"}}',
            "errors": f'http_requests_total{{cohort="{cohort}",selection="flag",status_class="5xx"}}',
            "slow": (
                f'http_request_duration_seconds_count{{cohort="{cohort}"}} - ignoring(le) '
                f'http_request_duration_seconds_bucket{{cohort="{cohort}",le="0.2"}}'
            ),
        }
    }


@dataclass(frozen=True)
class Fault:
    name: str
    errors: float | None
    """Error probability on the DB path during the fault (None: the background rate)."""
    added_latency_s: float = 0.0
    hard: bool = False


FAULTS = (
    Fault("100 % errors", 1.0, hard=True),
    Fault("20 % errors", 0.2),
    Fault("5 % errors", 0.05),
    Fault("1 % errors", 0.01),
    Fault("+300 ms latency", None, 0.3),
    Fault("DB down", 1.0, hard=True),
)
REAL_FAULTS: dict[str, dict[str, Any]] = {
    "100 % errors": {"db_error_rate": 1.0},
    "20 % errors": {"db_error_rate": 0.2},
    "5 % errors": {"db_error_rate": 0.05},
    "1 % errors": {"db_error_rate": 0.01},
    "+300 ms latency": {"db_latency_ms": 300},
    "DB down": {"db_down": True},
}


# -- random draws ----------------------------------------------------------------------------------------


def poisson(rng: random.Random, lam: float) -> int:
    if lam >= 1000.0:  # the normal approximation (relative error of the tails is negligible here)
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    n = 0
    while lam > 30.0:  # a sum of independent Poissons is Poisson
        n += poisson(rng, 30.0)
        lam -= 30.0
    limit, k, p = math.exp(-lam), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return n + k


def binomial(rng: random.Random, n: int, p: float) -> int:
    if n <= 0 or p <= 0.0:
        return 0
    if p >= 1.0:
        return n
    if p > 0.2:
        return sum(1 for _ in range(n) if rng.random() < p)
    log_q, k, i = math.log1p(-p), 0, 0  # geometric skips between successes
    while True:
        i += int(math.log(1.0 - rng.random()) / log_q) + 1
        if i > n:
            return k
        k += 1


# -- the traffic -----------------------------------------------------------------------------------------


@dataclass
class Cum:
    """A cohort's cumulative counters (what /metrics would say)."""

    requests: int = 0
    errors: int = 0
    slow: int = 0

    def add(self, rng: random.Random, seconds: float, rate: float, p_error: float, p_slow: float) -> None:
        n = poisson(rng, rate * seconds)
        self.requests += n
        self.errors += binomial(rng, n, p_error)
        self.slow += binomial(rng, n, p_slow)


@dataclass
class Traffic:
    rps: float
    canary_share: float
    background: float
    fault: Fault | None
    onset: float
    rng: random.Random
    canary: Cum = field(default_factory=lambda: Cum(1_000_000, 500, 60))
    baseline: Cum = field(default_factory=lambda: Cum(19_000_000, 9_500, 1_200))
    t: float = START

    def canary_p(self, faulty: bool) -> tuple[float, float]:
        if not faulty or self.fault is None:
            return self.background, HEALTHY_SLOW
        errors = self.background if self.fault.errors is None else self.fault.errors
        return errors, 1.0 if self.fault.added_latency_s >= THRESHOLD_S else HEALTHY_SLOW

    def advance(self, until: float) -> None:
        """Requests from ``self.t`` to ``until``, split at the onset."""
        while self.t < until:
            faulty = self.t >= self.onset
            end = until if faulty else min(until, self.onset)
            dt = end - self.t
            p_error, p_slow = self.canary_p(faulty)
            self.canary.add(self.rng, dt, self.rps * self.canary_share, p_error, p_slow)
            self.baseline.add(self.rng, dt, self.rps * (1 - self.canary_share), self.background, HEALTHY_SLOW)
            self.t = end


class SimPrometheus:
    """What a Prometheus scraping the service would answer: each cohort's counters at the last scrape."""

    def __init__(self) -> None:
        self.seen: dict[str, Cum] = {}

    def scrape(self, canary: Cum, baseline: Cum) -> None:
        self.seen = {"db": Cum(**vars(canary)), "yaml": Cum(**vars(baseline))}

    def source_for(self, cohort: PrometheusCohort) -> MetricSource:
        return _View(self, "db" if 'cohort="db"' in cohort.requests else "yaml")


class _View:
    name = "sim-prometheus"

    def __init__(self, prom: SimPrometheus, cohort: str) -> None:
        self._prom, self._cohort = prom, cohort

    async def query(self, query: str, *, timeout_s: float = 5.0) -> Sequence[Sample]:
        cum = self._prom.seen.get(self._cohort)
        if cum is None:
            return []
        labels = {"cohort": self._cohort, "instance": "ref:8080", "route": "/api/pbl/scenarios"}
        return [
            Sample(float(cum.requests), {**labels, PART_LABEL: "requests", "status_class": "all"}),
            Sample(float(cum.errors), {**labels, PART_LABEL: "errors", "status_class": "5xx"}),
            Sample(float(cum.slow), {**labels, PART_LABEL: "slow"}),
        ]

    async def aclose(self) -> None:
        return None


# -- the guard -------------------------------------------------------------------------------------------


def guard_config(root: Path) -> WatchdogConfig:
    (root / "alerts").mkdir(parents=True, exist_ok=True)
    (root / "runbooks").mkdir(exist_ok=True)
    (root / "watchdog.yaml").write_text("allow_no_probes: true\n")
    (root / "alerts" / "e.yaml").write_text(
        "escalation:\n  - name: default\n    levels:\n"
        "      - {level: L1, who: dev team, notify: [{type: log}], ack_within: 30m}\n"
        "      - {level: L3, who: CTO, notify: [{type: log}]}\n"
    )
    for alert in (ROLLED_BACK_ALERT, ROLLBACK_FAILED_ALERT, "canary-held"):
        (root / "runbooks" / f"{alert}.md").write_text(f"# {alert}\n")
    return load_config(root)


def metric_rollout() -> Rollout:
    return Rollout.model_validate(
        {
            "name": "content-db",
            "flag": {"backend": "flagd_file", "path": "/unused/flags.json"},
            "canary": metric_cohort("db", "http://sim"),
            "baseline": metric_cohort("yaml", "http://sim"),
        }
    )


def probe_rollout() -> Rollout:
    return Rollout.model_validate(
        {
            "name": "content-db",
            "flag": {"backend": "flagd_file", "path": "/unused/flags.json"},
            "canary": {"probe": "content-db", "match": {"cohort": "db"}},
            "baseline": {"probe": "content-yaml", "match": {"cohort": "yaml"}},
        }
    )


async def new_guard(config: WatchdogConfig, rollout: Rollout) -> tuple[CanaryGuard, FakeClock, MemoryStore]:
    clock = FakeClock(START)
    store = MemoryStore()
    await store.open()
    flag = MemoryFlagBackend(5.0, clock=clock, updated_by="release-engineer", reason="canary start")
    guard = CanaryGuard(rollout, flag, store, IncidentManager(config, store, clock), clock)
    return guard, clock, store


# -- peers -----------------------------------------------------------------------------------------------


@dataclass
class Series:
    """The canary's counters at each scrape, for the peers' windowed queries."""

    t: list[float] = field(default_factory=list)
    requests: list[int] = field(default_factory=list)
    errors: list[int] = field(default_factory=list)

    def add(self, t: float, cum: Cum) -> None:
        self.t.append(t)
        self.requests.append(cum.requests)
        self.errors.append(cum.errors)

    def at(self, t: float) -> int:
        """Index of the last scrape at or before ``t`` (-1: none)."""
        return bisect.bisect_right(self.t, t) - 1


class Flagger:
    """Its rollback time, and (going on past it, for the statistics) how many of its checks fail."""

    def __init__(self, first_tick: float) -> None:
        self.next_tick = first_tick
        self.failed = 0
        self.checks = 0
        self.rolled_back_at: float | None = None

    def run(self, series: Series, until: float) -> None:
        while self.next_tick <= until:
            tick = self.next_tick
            self.next_tick += FLAGGER_INTERVAL_S
            if self.failed >= FLAGGER_THRESHOLD and self.rolled_back_at is None:
                self.rolled_back_at = tick  # checked at the start of the tick after the 5th failure
            self.checks += 1
            now, then = series.at(tick), series.at(tick - FLAGGER_WINDOW_S)
            requests = series.requests[now] - series.requests[then] if then >= 0 else 0
            errors = series.errors[now] - series.errors[then] if then >= 0 else 0
            if requests <= 0 or 1 - errors / requests < FLAGGER_MIN_SUCCESS:  # no values is a failure
                self.failed += 1


class Argo:
    """Its abort time, and (going on past it) how many of its measurements fail."""

    def __init__(self, first: float) -> None:
        self.next = first
        self.failed = 0
        self.measurements = 0
        self.aborted_at: float | None = None

    def run(self, series: Series, until: float) -> None:
        while self.next <= until:
            t = self.next
            self.next += ARGO_INTERVAL_S
            self.measurements += 1
            i = series.at(t)
            requests = series.requests[i] - series.requests[i - 1] if i >= 1 else 0
            errors = series.errors[i] - series.errors[i - 1] if i >= 1 else 0
            if requests <= 0 or 1 - errors / requests < ARGO_MIN_SUCCESS:  # NaN fails the condition
                self.failed += 1
                if self.failed > ARGO_FAILURE_LIMIT and self.aborted_at is None:
                    self.aborted_at = t


# -- one simulated run -----------------------------------------------------------------------------------


@dataclass
class RunResult:
    ours: float | None
    flagger: float | None = None
    argo: float | None = None
    early: bool = False
    """Our guard flipped before the onset (a false flip)."""


@dataclass
class Sim:
    config: WatchdogConfig
    rps: float
    canary_share: float
    background: float
    scrape_s: float
    cap_s: float


async def run_metric(sim: Sim, fault: Fault, age: float, seed: int, peers: bool = True) -> RunResult:
    rng = random.Random(seed)
    guard, clock, _store = await new_guard(sim.config, metric_rollout())
    prom = SimPrometheus()
    cohorts.use(guard, MetricCohorts(source_for=prom.source_for))
    onset = START + age
    traffic = Traffic(sim.rps, sim.canary_share, sim.background, fault, onset, rng)
    series = Series()
    scrape = START - rng.uniform(0.0, sim.scrape_s)  # the last scrape before the stage began
    traffic.advance(scrape)
    prom.scrape(traffic.canary, traffic.baseline)
    series.add(scrape, traffic.canary)
    traffic.advance(START)
    await guard.check()  # the stage begins: the flag at 5 %, the guard's first look
    flagger = Flagger(onset + rng.uniform(0.0, FLAGGER_INTERVAL_S))
    argo = Argo(onset + rng.uniform(0.0, ARGO_INTERVAL_S))
    result = RunResult(None)
    peers = peers and fault.errors is not None  # the peers' success-rate checks do not see latency
    while True:
        scrape += sim.scrape_s
        traffic.advance(scrape)
        prom.scrape(traffic.canary, traffic.baseline)
        series.add(scrape, traffic.canary)
        if result.ours is None:
            check = START + math.ceil((scrape - START) / CHECK_EVERY_S) * CHECK_EVERY_S
            clock.set(max(check, clock.now()))
            decision = await guard.check()
            if decision.action == "rolled_back":
                result.ours = clock.now() - onset
                if clock.now() < onset:
                    result.early = True
        if peers and scrape >= onset:
            flagger.run(series, scrape)
            argo.run(series, scrape)
        done_ours = result.ours is not None
        done_peers = not peers or (flagger.rolled_back_at is not None and argo.aborted_at is not None)
        if (done_ours and done_peers) or scrape - onset > sim.cap_s:
            break
    if peers:
        result.flagger = None if flagger.rolled_back_at is None else flagger.rolled_back_at - onset
        result.argo = None if argo.aborted_at is None else argo.aborted_at - onset
    return result


async def run_probe(
    config: WatchdogConfig,
    fault: Fault,
    age: float,
    seed: int,
    every_s: float,
    background: float,
    cap_s: float,
) -> float | None:
    """The same fault seen by probes pinned to each cohort (one result per ``every_s`` each)."""
    rng = random.Random(seed)
    guard, clock, store = await new_guard(config, probe_rollout())
    await guard.check()
    onset = START + age
    phases = {"db": rng.uniform(0, every_s), "yaml": rng.uniform(0, every_s)}
    k = 0
    while True:
        batch: list[ProbeResult] = []
        latest = START
        for cohort, phase in phases.items():
            at = START + phase + k * every_s
            latest = max(latest, at)
            faulty = cohort == "db" and at >= onset
            p_error = background if not faulty or fault.errors is None else fault.errors
            latency = LATENCY_MEDIAN_S * math.exp(rng.gauss(0, LATENCY_SIGMA))
            if faulty:
                latency += fault.added_latency_s
            failed = rng.random() < p_error
            batch.append(
                ProbeResult(
                    probe=f"content-{cohort}",
                    kind="http",
                    target="sim",
                    outcome=Outcome.FAILED if failed else Outcome.OK,
                    latency_s=latency,
                    started_at=at,
                    labels={"cohort": cohort},
                    reason="status 500" if failed else "",
                )
            )
        k += 1
        clock.set(
            max(clock.now(), START + math.ceil((latest + 0.05 - START) / CHECK_EVERY_S) * CHECK_EVERY_S)
        )
        await store.record(batch)
        decision = await guard.check()
        if decision.action == "rolled_back":
            return clock.now() - onset
        if clock.now() - onset > cap_s:
            return None


# -- statistics and tables -------------------------------------------------------------------------------


def seed_of(*parts: object) -> int:
    """A seed that does not change between processes (``hash()`` of a str does)."""
    return zlib.crc32(repr(parts).encode())


def quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return math.nan
    pos = q * (len(ordered) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def human(seconds: float) -> str:
    if math.isnan(seconds):
        return "—"
    if seconds < 100:
        return f"{seconds:.1f} s"
    if seconds < 6000:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def dist(values: Sequence[float | None], cap_s: float) -> str:
    got = [v for v in values if v is not None]
    missed = len(values) - len(got)
    if not got:
        return f"none within {human(cap_s)}"
    if missed:  # a run that never flipped counts as "later than the cap" for the quantiles
        padded = got + [math.inf] * missed
        p50, p95 = quantile_inf(padded, 0.5), quantile_inf(padded, 0.95)
        return f"{p50} / {p95} / > {human(cap_s)} ({missed} of {len(values)} not within {human(cap_s)})"
    return f"{human(quantile(got, 0.5))} / {human(quantile(got, 0.95))} / {human(max(got))}"


def quantile_inf(values: Sequence[float], q: float) -> str:
    ordered = sorted(values)
    v = ordered[min(len(ordered) - 1, math.ceil(q * (len(ordered) - 1)))]
    return "∞" if math.isinf(v) else human(v)


def p95(values: Sequence[float | None]) -> float:
    ordered = sorted(math.inf if v is None else v for v in values)
    return ordered[min(len(ordered) - 1, math.ceil(0.95 * (len(ordered) - 1)))]


# -- the simulated parts ---------------------------------------------------------------------------------


async def part_faults(
    sim: Sim,
    runs: int,
    ages: Sequence[tuple[str, Callable[[random.Random], float]]],
    log: Callable[[str], None],
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for age_name, draw_age in ages:
        for fault in FAULTS:
            t0 = time.perf_counter()
            results: list[RunResult] = []
            for i in range(runs):
                seed = seed_of(fault.name, age_name, i)
                age = draw_age(random.Random(seed ^ 0x5A5A))
                results.append(await run_metric(sim, fault, age, seed))
            row: dict[str, Any] = {
                "age": age_name,
                "fault": fault.name,
                "ours": [r.ours for r in results],
                "flagger": [r.flagger for r in results],
                "argo": [r.argo for r in results],
                "early": sum(r.early for r in results),
            }
            rows.append(row)
            log(
                f"  [{age_name}] {fault.name:16} ours {dist([r.ours for r in results], sim.cap_s)}"
                f"  ({time.perf_counter() - t0:.1f} s for {runs} runs)"
            )
    return rows


async def part_probes(
    sim: Sim, runs: int, every_s: float, log: Callable[[str], None]
) -> dict[str, list[float | None]]:
    out: dict[str, list[float | None]] = {}
    for fault in FAULTS:
        values: list[float | None] = []
        for i in range(runs):
            seed = seed_of("probe", fault.name, i)
            age = random.Random(seed ^ 0x5A5A).uniform(0.0, 60.0)
            values.append(await run_probe(sim.config, fault, age, seed, every_s, sim.background, sim.cap_s))
        out[fault.name] = values
        log(f"  probes every {every_s:g} s, {fault.name:16} {dist(values, sim.cap_s)}")
    return out


async def part_traffic(
    sim: Sim, runs: int, rates: Sequence[float], log: Callable[[str], None]
) -> dict[float, list[float | None]]:
    """1 % errors at several traffic rates: what it takes to meet 2 minutes."""
    fault = next(f for f in FAULTS if f.name == "1 % errors")
    out: dict[float, list[float | None]] = {}
    for rps in rates:
        at = Sim(sim.config, rps, sim.canary_share, sim.background, sim.scrape_s, sim.cap_s)
        values: list[float | None] = []
        for i in range(runs):
            seed = seed_of("traffic", rps, i)
            age = random.Random(seed ^ 0x5A5A).uniform(0.0, 60.0)
            values.append((await run_metric(at, fault, age, seed, peers=False)).ours)
        out[rps] = values
        log(f"  1 % errors at {rps:g} requests/s in total: {dist(values, sim.cap_s)}")
    return out


async def part_scrape(
    sim: Sim, runs: int, intervals: Sequence[float], log: Callable[[str], None]
) -> dict[float, list[float | None]]:
    """A hard fault at several scrape intervals: the scrape is most of onset → flip."""
    fault = FAULTS[0]
    out: dict[float, list[float | None]] = {}
    for scrape_s in intervals:
        at = Sim(sim.config, sim.rps, sim.canary_share, sim.background, scrape_s, sim.cap_s)
        values: list[float | None] = []
        for i in range(runs):
            seed = seed_of("scrape", scrape_s, i)
            age = random.Random(seed ^ 0x5A5A).uniform(0.0, 60.0)
            values.append((await run_metric(at, fault, age, seed, peers=False)).ours)
        out[scrape_s] = values
        log(f"  100 % errors, scrape every {scrape_s:g} s: {dist(values, sim.cap_s)}")
    return out


async def part_false_flips(
    base: Sim, rps: float, stages: int, requests: int, log: Callable[[str], None]
) -> dict[str, Any]:
    sim = Sim(base.config, rps, base.canary_share, base.background, base.scrape_s, base.cap_s)
    simulated = 0.0
    most = {"errors": 0.0, "latency": 0.0}
    flips = checks = canary_requests = canary_errors = 0
    flagger_failed = flagger_checks = argo_failed = argo_measurements = 0
    flagger_false_rollbacks: list[float] = []
    argo_aborts = 0
    t0 = time.perf_counter()
    for stage in range(stages):
        rng = random.Random(seed_of("false", rps, stage))
        guard, clock, _store = await new_guard(sim.config, metric_rollout())
        prom = SimPrometheus()
        cohorts.use(guard, MetricCohorts(source_for=prom.source_for))
        traffic = Traffic(sim.rps, sim.canary_share, sim.background, None, math.inf, rng)
        start_requests, start_errors = traffic.canary.requests, traffic.canary.errors
        series = Series()
        scrape = START - rng.uniform(0.0, sim.scrape_s)
        traffic.advance(scrape)
        prom.scrape(traffic.canary, traffic.baseline)
        series.add(scrape, traffic.canary)
        traffic.advance(START)
        await guard.check()
        checks += 1
        flagger = Flagger(START + rng.uniform(0.0, FLAGGER_INTERVAL_S))
        argo = Argo(START + rng.uniform(0.0, ARGO_INTERVAL_S))
        while traffic.canary.requests - start_requests < requests:
            scrape += sim.scrape_s
            traffic.advance(scrape)
            prom.scrape(traffic.canary, traffic.baseline)
            series.add(scrape, traffic.canary)
            clock.set(max(clock.now(), START + math.ceil((scrape - START) / CHECK_EVERY_S) * CHECK_EVERY_S))
            decision = await guard.check()
            checks += 1
            if decision.action == "rolled_back":
                flips += 1
                log(f"  FALSE FLIP in stage {stage} at {human(clock.now() - START)}: {decision.evidence}")
                break
            if decision.action not in ("continue",):
                log(f"  stage {stage}: {decision.action}: {decision.reason}")
            for line in decision.evidence:
                found = EVIDENCE.search(line)
                if found:
                    what = "latency" if "over" in line.split(":")[0] else "errors"
                    # As a share of what that test needs: the restarted tests need more (sequential.py).
                    most[what] = max(most[what], float(found.group(1)) / float(found.group(2)))
            flagger.run(series, scrape)
            argo.run(series, scrape)
        canary_requests += traffic.canary.requests - start_requests
        canary_errors += traffic.canary.errors - start_errors
        flagger_failed += flagger.failed
        flagger_checks += flagger.checks
        argo_failed += argo.failed
        argo_measurements += argo.measurements
        if flagger.rolled_back_at is not None:
            flagger_false_rollbacks.append(flagger.rolled_back_at - START)
        argo_aborts += argo.aborted_at is not None
        simulated += clock.now() - START
        log(
            f"  stage {stage}: {traffic.canary.requests - start_requests:,} canary requests, "
            f"{traffic.canary.errors - start_errors} errors, {human(clock.now() - START)} simulated; "
            f"flips so far {flips} "
            f"({time.perf_counter() - t0:.0f} s)"
        )
    return {
        "rps": rps,
        "argo_aborts": argo_aborts,
        "stages": stages,
        "canary_requests": canary_requests,
        "canary_errors": canary_errors,
        "checks": checks,
        "flips": flips,
        "flagger_checks": flagger_checks,
        "flagger_failed": flagger_failed,
        "flagger_false_rollback_after": flagger_false_rollbacks,
        "argo_measurements": argo_measurements,
        "argo_failed": argo_failed,
        "simulated_s": simulated,
        "max_evidence": most,
    }


# -- real time -------------------------------------------------------------------------------------------


def flag_percent(path: Path) -> float:
    return read_db_percent(json.loads(path.read_text()))


def text_of(path: Path) -> str:
    return path.read_text(errors="replace")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def wait_http(url: str, timeout_s: float = 30.0) -> None:
    async with httpx.AsyncClient(timeout=2) as client:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):  # not up yet
                if (await client.get(url)).status_code < 500:
                    return
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout_s:g} s")


async def stop(proc: asyncio.subprocess.Process | None) -> None:
    if proc is None or proc.returncode is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), 15)
    except TimeoutError:
        proc.kill()
        await proc.wait()


@dataclass
class Users:
    """Open-loop synthetic users: Poisson arrivals at ``rps``, each request from one of 10,000 users."""

    base: str
    rps: float
    sent: int = 0
    db: int = 0
    errors: int = 0
    started: float = field(default_factory=time.monotonic)

    async def run(self, stop_event: asyncio.Event) -> None:
        rng = random.Random(7)
        pending: set[asyncio.Task[None]] = set()
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=50)
        async with httpx.AsyncClient(base_url=self.base, timeout=10, limits=limits) as client:

            async def one(user: int) -> None:
                try:
                    r = await client.get(
                        "/api/pbl/scenarios", params={"lang": "en"}, headers={"X-Request-Id": f"user-{user}"}
                    )
                    self.db += r.headers.get("X-Data-Source") == "db"
                    self.errors += r.status_code >= 500
                except httpx.HTTPError:
                    self.errors += 1

            next_at = time.monotonic()
            while not stop_event.is_set():
                next_at += rng.expovariate(self.rps)
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
                self.sent += 1
                task = asyncio.create_task(one(rng.randrange(10_000)))
                pending.add(task)
                task.add_done_callback(pending.discard)
            await asyncio.gather(*pending, return_exceptions=True)


def daemon_config(root: Path, prom_url: str, flag_file: Path, listen: str) -> None:
    guard_config(root)
    (root / "watchdog.yaml").write_text(
        f"allow_no_probes: true\nlisten: {listen}\nevaluation_interval: 1s\ninstance: bench\n"
    )
    rollout = {
        "name": "content-db",
        "flag": {"backend": "flagd_file", "path": str(flag_file)},
        "canary": metric_cohort("db", prom_url),
        "baseline": metric_cohort("yaml", prom_url),
        "check_every": "1s",
    }
    (root / "alerts" / "r.yaml").write_text("rollouts:\n  - " + json.dumps(rollout) + "\n")


async def part_real(args: argparse.Namespace, log: Callable[[str], None]) -> list[dict[str, Any]]:
    binary = shutil.which("prometheus")
    if binary is None:
        raise SystemExit("the real-time runs need Debian's prometheus (scripts/deps.sh installs it)")
    work = Path(tempfile.mkdtemp(prefix="canary-bench-"))
    flag_file = work / "flags.json"
    write_initial(flag_file, 5.0)
    service_port, prom_port, watchdog_port = free_port(), free_port(), free_port()
    service = f"http://127.0.0.1:{service_port}"
    prom_url = f"http://127.0.0.1:{prom_port}"
    config = work / "config"
    daemon_config(config, prom_url, flag_file, f"127.0.0.1:{watchdog_port}")
    (work / "prometheus.yml").write_text(
        f"global: {{scrape_interval: {args.scrape:g}s, evaluation_interval: {args.scrape:g}s}}\n"
        "scrape_configs:\n  - job_name: svc\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{service_port}']}}]\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLACK_")} | {"PYTHONUNBUFFERED": "1"}
    service_log = (work / "service.log").open("wb")
    service_proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "watchdog.demo", "--port", str(service_port), "--flag", str(flag_file),
        "--no-rate-limits", stdout=service_log, stderr=asyncio.subprocess.STDOUT, env=env,
    )  # fmt: skip
    prom = await asyncio.create_subprocess_exec(
        binary, f"--config.file={work / 'prometheus.yml'}", f"--storage.tsdb.path={work / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{prom_port}",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    users = Users(service, args.rps)
    stop_users = asyncio.Event()
    runs: list[dict[str, Any]] = []
    users_task: asyncio.Task[None] | None = None
    try:
        await wait_http(f"{service}/api/simple-health")
        await wait_http(f"{prom_url}/-/ready")
        users_task = asyncio.create_task(users.run(stop_users))
        await asyncio.sleep(2 * args.scrape + 2)
        plan = [(name, n) for name, n in args.real_plan]
        async with httpx.AsyncClient(timeout=5) as client:
            for name, count in plan:
                for i in range(count):
                    runs.append(
                        await real_run(args, client, config, work, flag_file, service, name, i, env, log)
                    )
        log(
            f"  users: {users.sent:,} requests in {time.monotonic() - users.started:.0f} s "
            f"({users.sent / (time.monotonic() - users.started):.1f}/s), "
            f"{users.db / max(1, users.sent):.1%} on "
            "the database path"
        )
    finally:
        stop_users.set()
        if users_task is not None:
            await users_task
        await stop(service_proc)
        if prom.returncode is None:
            prom.terminate()
            await prom.wait()
        service_log.close()
        shutil.rmtree(work, ignore_errors=True)
    return runs


async def real_run(
    args: argparse.Namespace,
    client: httpx.AsyncClient,
    config: Path,
    work: Path,
    flag_file: Path,
    service: str,
    fault: str,
    i: int,
    env: dict[str, str],
    log: Callable[[str], None],
) -> dict[str, Any]:
    write_initial(flag_file, 5.0)
    await asyncio.sleep(1.5)  # the service re-reads its flag file
    log_path = work / f"watchdog-{fault[:3].strip()}-{i}.log"
    with log_path.open("wb") as out:
        daemon = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "watchdog", "run", "--config", str(config),
            "--state", str(work / f"state-{time.monotonic_ns()}.db"),
            stdout=out, stderr=asyncio.subprocess.STDOUT, env=env,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            while "canary content-db: continue" not in text_of(log_path):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the guard did not start watching: {text_of(log_path)[-2000:]}")
                await asyncio.sleep(0.1)
            watching = time.monotonic()
            await asyncio.sleep(args.real_age)
            assert (await client.post(f"{service}/_faults", json=REAL_FAULTS[fault])).status_code == 200
            onset = time.monotonic()
            flipped: float | None = None
            while time.monotonic() - onset < args.real_cap:
                if flag_percent(flag_file) == 0.0:
                    flipped = time.monotonic()
                    break
                await asyncio.sleep(0.02)
        finally:
            await client.delete(f"{service}/_faults")
            await stop(daemon)
    text = text_of(log_path)
    evidence = ""
    for line in text.splitlines():
        if "Rolled back to YAML" in line:
            try:
                evidence = str(json.loads(line).get("summary") or json.loads(line).get("message"))
            except ValueError:
                evidence = line
            break
    value = None if flipped is None else flipped - onset
    log(
        f"  real {fault:16} run {i}: stage age at onset {onset - watching:.1f} s, onset→flip "
        f"{'none' if value is None else f'{value:.1f} s'}"
    )
    return {"fault": fault, "onset_to_flip": value, "age": onset - watching, "evidence": evidence[:400]}


# -- main ------------------------------------------------------------------------------------------------


def print_tables(
    sim: Sim,
    fault_rows: list[dict[str, Any]],
    probes: dict[str, list[float | None]] | None,
    traffic: dict[float, list[float | None]] | None,
    scrape: dict[float, list[float | None]] | None,
    false: list[dict[str, Any]] | None,
    probe_every: float,
) -> None:
    canary_rps = sim.rps * sim.canary_share
    if fault_rows:
        print(
            f"\n### onset → verified flip, p50 / p95 / max ({sim.rps:g} requests/s, canary {canary_rps:g}/s, "
            f"scrape {sim.scrape_s:g} s, check 1 s)\n"
        )
        ages = list(dict.fromkeys(r["age"] for r in fault_rows))
        for age in ages:
            print(f"\nstage age at onset: {age}\n")
            header = (
                "| fault | runs | ours (metric cohorts) | Flagger defaults | Argo Rollouts docs example |"
            )
            if probes is not None and age == ages[0]:
                header = header[:-1] + f"| ours, probes every {probe_every:g} s |"
            print(header)
            print("|" + "---|" * (header.count("|") - 1))
            for r in (row for row in fault_rows if row["age"] == age):
                latency = r["fault"].startswith("+300")
                flagger = "never (P99 ≈ 0.38 s < 500 ms)" if latency else dist(r["flagger"], sim.cap_s)
                argo = "never (no latency metric)" if latency else dist(r["argo"], sim.cap_s)
                early = f" ({r['early']} flipped before the onset)" if r["early"] else ""
                ours = dist(r["ours"], sim.cap_s) + early
                line = f"| {r['fault']} | {len(r['ours'])} | {ours} | {flagger} | {argo} |"
                if probes is not None and age == ages[0]:
                    line += f" {dist(probes[r['fault']], sim.cap_s)} |"
                print(line)
    if traffic:
        print("\n### 1 % errors by traffic (stage age 0–60 s)\n")
        print("| requests/s in total | canary requests/s | p50 / p95 / max |")
        print("|---|---|---|")
        for rps, values in traffic.items():
            print(f"| {rps:g} | {rps * sim.canary_share:g} | {dist(values, sim.cap_s)} |")
    if scrape:
        print("\n### 100 % errors by scrape interval (stage age 0–60 s)\n")
        print("| scrape interval | p50 / p95 / max |")
        print("|---|---|")
        for s, values in scrape.items():
            print(f"| {s:g} s | {dist(values, sim.cap_s)} |")
    for f in false or []:
        print(
            f"\n### false flips, healthy canary at {f['rps']:g} requests/s "
            "(background errors on both cohorts)\n"
        )
        flagger_rate = f["flagger_failed"] / max(1, f["flagger_checks"])
        argo_rate = f["argo_failed"] / max(1, f["argo_measurements"])
        rollbacks = f["flagger_false_rollback_after"]
        print(
            f"- ours: **{f['flips']} flips** in {f['stages']} stages, {f['canary_requests']:,} canary "
            f"requests ({f['canary_errors']:,} errors), {f['checks']:,} checks, "
            f"{human(f['simulated_s'])} simulated; the most evidence seen, as a share of what its test needs "
            f"to flip: {f['max_evidence']['errors']:.3g} (errors), "
            f"{f['max_evidence']['latency']:.3g} (latency)"
        )
        after = ", ".join(human(x) for x in sorted(rollbacks)[:5]) + (" …" if len(rollbacks) > 5 else "")
        print(
            f"- Flagger: {f['flagger_failed']:,} of {f['flagger_checks']:,} checks failed "
            f"({flagger_rate:.2%}); "
            f"its threshold reached (a rollback) in {len(rollbacks)} of {f['stages']} stages"
            + (f", after {after}" if rollbacks else "")
        )
        print(
            f"- Argo: {f['argo_failed']:,} of {f['argo_measurements']:,} measurements failed "
            f"({argo_rate:.2%}); "
            f"an abort needs {ARGO_FAILURE_LIMIT + 1}; aborted in {f['argo_aborts']} of {f['stages']} stages"
        )


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--only", choices=["faults", "probes", "traffic", "scrape", "false", "real"], action="append"
    )
    ap.add_argument("--quick", action="store_true", help="fewer runs, a smaller false-flip part")
    ap.add_argument("--runs", type=int, default=40, help="simulated runs per fault and age (40)")
    ap.add_argument("--rps", type=float, default=25.0, help="content requests/s in total (25)")
    ap.add_argument("--canary", type=float, default=5.0, help="percent of them on the database path (5)")
    ap.add_argument("--background", type=float, default=0.0005, help="healthy error ratio (0.0005)")
    ap.add_argument("--scrape", type=float, default=5.0, help="Prometheus scrape interval, s (5)")
    ap.add_argument("--cap", type=float, default=8 * 3600.0, help="give up on a run after this, s (8 h)")
    ap.add_argument("--probe-every", type=float, default=10.0, help="probe interval for the probe path (10)")
    ap.add_argument("--false-stages", type=int, default=10)
    ap.add_argument("--false-requests", type=int, default=100_000, help="healthy canary requests per stage")
    ap.add_argument(
        "--false-high-requests",
        type=int,
        default=10_000_000,
        help="one more stage of these at 1000 requests/s",
    )
    ap.add_argument("--real-age", type=float, default=20.0, help="healthy seconds before a real fault (20)")
    ap.add_argument("--real-cap", type=float, default=240.0)
    ap.add_argument("--real-runs", type=int, default=5, help="real runs per hard fault (5; 3 for others)")
    ap.add_argument("--json", type=Path, help="write the raw numbers here")
    args = ap.parse_args()
    parts = set(args.only or ["faults", "probes", "traffic", "scrape", "false"])
    if args.quick:
        args.runs, args.false_stages, args.false_requests, args.false_high_requests = 5, 2, 20_000, 200_000
    n_hard, n_other = args.real_runs, max(1, args.real_runs - 2)
    args.real_plan = [
        ("100 % errors", n_hard),
        ("DB down", n_hard),
        ("+300 ms latency", n_other),
        ("20 % errors", n_other),
        ("5 % errors", max(1, n_other - 1)),
    ]

    def log(msg: str) -> None:
        print(msg, flush=True)

    logging.getLogger("watchdog").setLevel(logging.ERROR)  # every simulated rollback logs and pages
    log(
        f"python {platform.python_version()}, {os.cpu_count()} CPUs; {args.rps:g} requests/s, canary "
        f"{args.canary:g} %, background errors {args.background:.2%}, scrape {args.scrape:g} s"
    )
    with tempfile.TemporaryDirectory(prefix="canary-sim-") as tmp:
        config = guard_config(Path(tmp) / "config")
        sim = Sim(config, args.rps, args.canary / 100.0, args.background, args.scrape, args.cap)
        out: dict[str, Any] = {"args": {k: v for k, v in vars(args).items() if k != "json"}}
        fault_rows: list[dict[str, Any]] = []
        probes = traffic = scrape = None
        false: list[dict[str, Any]] | None = None
        if "faults" in parts:
            log("faults, simulated:")
            ages: list[tuple[str, Callable[[random.Random], float]]] = [
                ("0–60 s", lambda r: r.uniform(0.0, 60.0)),
                ("10 min", lambda r: 600.0),
                ("1 h", lambda r: 3600.0),
            ]
            if not args.quick:
                ages.append(("24 h", lambda r: 86400.0))
            fault_rows = await part_faults(sim, args.runs, ages, log)
            out["faults"] = fault_rows
        if "probes" in parts:
            log(f"the probe path (content-db every {args.probe_every:g} s), simulated:")
            probes = await part_probes(sim, args.runs, args.probe_every, log)
            out["probes"] = probes
        if "traffic" in parts:
            log("1 % errors by traffic, simulated:")
            traffic = await part_traffic(sim, args.runs, [25.0, 100.0, 250.0, 1000.0], log)
            out["traffic"] = {str(k): v for k, v in traffic.items()}
        if "scrape" in parts:
            log("100 % errors by scrape interval, simulated:")
            scrape = await part_scrape(sim, args.runs, [1.0, 5.0, 15.0, 60.0], log)
            out["scrape"] = {str(k): v for k, v in scrape.items()}
        if "false" in parts:
            log("false flips, simulated:")
            false = [await part_false_flips(sim, args.rps, args.false_stages, args.false_requests, log)]
            if args.false_high_requests:
                false.append(await part_false_flips(sim, 1000.0, 1, args.false_high_requests, log))
            out["false_flips"] = false
        if "real" in parts:
            log("real time: reference service + Prometheus + watchdog run:")
            real = await part_real(args, log)
            out["real"] = real
            log("the same, simulated with the real runs' parameters:")
            matched = Sim(config, args.rps, args.canary / 100.0, 0.0, args.scrape, args.real_cap)
            print(
                "\n| fault | real runs: onset → flip "
                "| simulated (40 runs, same parameters): p50 / p95 / max |"
            )
            print("|---|---|---|")
            for name, _count in args.real_plan:
                fault = next(f for f in FAULTS if f.name == name)
                got = [r["onset_to_flip"] for r in real if r["fault"] == name]
                ages_seen = [r["age"] for r in real if r["fault"] == name]
                values = [
                    (
                        await run_metric(
                            matched,
                            fault,
                            ages_seen[i % len(ages_seen)],
                            seed_of("real", name, i),
                            peers=False,
                        )
                    ).ours
                    for i in range(40)
                ]
                shown = ", ".join("none" if v is None else f"{v:.1f}" for v in got)
                print(f"| {name} | {shown} s | {dist(values, matched.cap_s)} |")
                out.setdefault("real_matched_sim", {})[name] = values
        print_tables(sim, fault_rows, probes, traffic, scrape, false, args.probe_every)
        if args.json:
            args.json.write_text(json.dumps(out, indent=1, default=str))


if __name__ == "__main__":
    asyncio.run(main())

"""The SLO engine against a MemoryStore with an injected clock: the SRE Workbook's numbers as test vectors,
the low-traffic guard, the no-data policies, calendar windows, and incremental == fresh evaluation."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from watchdog.config.slo import SloConfig
from watchdog.core.clock import FakeClock
from watchdog.core.results import Observation, Outcome, ProbeResult
from watchdog.slo import AlertSignal, Evaluation, SloEngine, SloStatus
from watchdog.store.base import MinuteAggregate, ObservationMinute, StoreUnavailable
from watchdog.store.memory import MemoryStore
from watchdog.store.sqlite import SqliteStore

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
STEP = 5.0  # a probe result and an evaluation every 5 s


def ts(year: int, month: int, day: int, hour: int = 0, minute: int = 0, tz: str = "UTC") -> float:
    return datetime(year, month, day, hour, minute, tzinfo=ZoneInfo(tz)).timestamp()


def slo(name: str = "api", **kw: Any) -> SloConfig:
    data: dict[str, Any] = {"name": name, "objective": 99.9, "sli": {"kind": "availability", "probe": "api"}}
    data.update(kw)
    return SloConfig.model_validate(data)


def result(t: float, ok: bool = True, *, probe: str = "api", latency: float = 0.05,
           labels: Mapping[str, str] | None = None, outcome: Outcome | None = None,
           observations: Sequence[Observation] = ()) -> ProbeResult:
    return ProbeResult(
        probe=probe, kind="http", target="t", outcome=outcome or (Outcome.OK if ok else Outcome.FAILED),
        latency_s=latency, started_at=t, labels=dict(labels or {}), observations=tuple(observations),
    )


@dataclass
class Sim:
    """Results every ``STEP`` seconds from a FakeClock, the engine evaluated after each."""

    slos: list[SloConfig]
    start: float
    store: Any = field(default_factory=MemoryStore)
    signals: list[tuple[float, AlertSignal]] = field(default_factory=list)
    evaluations: list[Evaluation] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.clock = FakeClock(self.start)
        self.engine: SloEngine | None = None

    async def backfill(self, seconds: float, ok: Callable[[float], bool] = lambda t: True,
                       every: float = STEP) -> None:
        """Results for the ``seconds`` before now, in one batch (history the engine loads at start)."""
        now = self.clock.now()
        n = int(seconds // every)
        await self.store.record([result(now - (n - i) * every, ok(now - (n - i) * every)) for i in range(n)])

    def start_engine(self, **kw: Any) -> SloEngine:
        self.engine = SloEngine(self.slos, self.store, self.clock, **kw)
        return self.engine

    async def run(self, seconds: float, ok: Callable[[float], bool] | None = lambda t: True,
                  every: float = STEP) -> None:
        """Advance in steps: record a result (unless ``ok`` is None: silence), evaluate."""
        engine = self.engine or self.start_engine()
        end = self.clock.now() + seconds
        while self.clock.now() + every <= end + 1e-9:
            self.clock.advance(every)
            t = self.clock.now()
            if ok is not None:
                await self.store.record([result(t, ok(t))])
            ev = await engine.evaluate()
            self.evaluations.append(ev)
            self.signals.extend((t, s) for s in ev.signals)

    def first(self, severity: str, state: str, reason: str = "burn_rate", after: float = 0.0) -> float | None:
        for t, s in self.signals:
            if t >= after and (s.severity, s.state, s.reason) == (severity, state, reason):
                return t
        return None

    def rule_first_firing(self, rule: str) -> float | None:
        for ev in self.evaluations:
            if any(r.rule == rule and r.firing for r in ev.statuses[0].rules):
                return ev.at
        return None

    @property
    def status(self) -> SloStatus:
        return self.evaluations[-1].statuses[0]


# -- the Workbook's numbers ------------------------------------------------------------------------------


@pytest.mark.parametrize("phase", [0.0, 17.0, 41.0])
async def test_total_outage_pages_after_52s_and_130s(phase: float) -> None:
    """99.9 %: a 100 % outage spends 14.4x over 1 h after 1h*14.4*0.001 = 51.8 s, and 6x over 6 h after
    6h*6*0.001 = 129.6 s. Each page fires within one evaluation step of that."""
    sim = Sim([slo()], T0 + 7 * 3600 + phase)
    await sim.backfill(7 * 3600)
    sim.start_engine()
    outage_start = sim.clock.now() + STEP
    await sim.run(200, ok=lambda t: False)
    fast = sim.rule_first_firing("page-1h-5m")
    slow = sim.rule_first_firing("page-6h-30m")
    assert fast is not None and slow is not None
    # The outage's first failed result is at outage_start; t - outage_start + STEP is the outage length.
    assert abs((fast - outage_start + STEP) - 51.84) <= STEP
    assert abs((slow - outage_start + STEP) - 129.6) <= STEP
    page = sim.first("page", "firing")
    assert page == fast
    signal = next(s for t, s in sim.signals if s.severity == "page" and s.state == "firing")
    assert signal.rules == ("page-1h-5m",) and signal.slo == "api" and signal.reason == "burn_rate"
    assert signal.burn_rates["1h"] > 14.4 and signal.burn_rates["5m"] > 14.4
    assert "14.4x" in signal.summary and signal.dedup_key == "slo:api:burn_rate:page"
    # One firing signal per severity, not one per rule: the 6x rule joining does not page again.
    assert [s.state for _, s in sim.signals if s.severity == "page"] == ["firing"]


async def test_half_percent_errors_never_page() -> None:
    """0.5 % errors burn at 5x: under both page rates (14.4x and 6x), over the budget (ticket). The ticket
    (1x over 3 d) needs 10 % of the 30-day budget spent, 14.4 h at 5x: data younger than 3 d is not read as
    a full 3-day window, so the history here is 12 h (before the coverage fix, 6 h read as 3 d sufficed)."""
    every_200th: Callable[[float], bool] = lambda t: round(t / STEP) % 200 != 0  # noqa: E731
    sim = Sim([slo()], T0 + 12 * 3600)
    await sim.backfill(12 * 3600, every_200th)
    sim.start_engine()
    await sim.run(3 * 3600, every_200th)
    assert sim.first("page", "firing") is None
    assert not any(r.firing for ev in sim.evaluations for r in ev.statuses[0].rules if r.severity == "page")
    # Not vacuous: the burn is real, the 5-minute window alone exceeded 14.4x, and the ticket fired.
    assert sim.status.windows["1h"].burn_rate == pytest.approx(5.0, rel=0.25)
    assert sim.status.windows["6h"].burn_rate == pytest.approx(5.0, rel=0.05)
    assert max(ev.statuses[0].windows["5m"].burn_rate for ev in sim.evaluations) > 14.4
    ticket = sim.first("ticket", "firing")
    assert ticket is not None and abs(ticket - (T0 + 14.4 * 3600)) <= 600


async def test_page_resolves_about_five_minutes_after_errors_stop() -> None:
    sim = Sim([slo()], T0 + 7 * 3600 + 23)
    await sim.backfill(7 * 3600)
    sim.start_engine()
    stop = sim.clock.now() + 100  # 100 s outage: the 14.4x page fires, the 6x one (130 s) does not
    await sim.run(45 * 60, ok=lambda t: t >= stop)
    fired = sim.first("page", "firing")
    resolved = sim.first("page", "resolved")
    assert fired is not None and resolved is not None
    assert sim.rule_first_firing("page-6h-30m") is None
    # The 5-minute window needs 5 min to empty, then a 30 s hold (a tenth of it), then the next tick.
    assert 300 <= resolved - stop <= 360
    # No flapping afterwards.
    assert [s.state for _, s in sim.signals if s.severity == "page"] == ["firing", "resolved"]


async def test_long_outage_page_stays_until_the_slow_rule_recovers() -> None:
    """After 10 min of errors both page rules fire; the 1h/5m rule recovers in ~5.5 min, and the page (one
    alert, as in the Workbook's ``or``-ed expression) resolves when the 6h/30m rule does: once the page's
    shortest window (5m) has been under 6x for the 30 s hold and the quiet since the last failure is
    conclusive at the outage's own rate (100 %: a single good result), ~5.5 min (it was ~33 min while the
    30m window, still full of the outage, held it, then ~8 min with a 3-minute hold). The stale errors in 30m
    and 6h do not fire it again."""
    sim = Sim([slo()], T0 + 7 * 3600)
    await sim.backfill(7 * 3600)
    sim.start_engine()
    stop = sim.clock.now() + 600
    await sim.run(50 * 60, ok=lambda t: t >= stop)
    fast_resolved = next(
        ev.at for ev in sim.evaluations
        if ev.at > stop and not next(r for r in ev.statuses[0].rules if r.rule == "page-1h-5m").firing
    )
    assert 300 <= fast_resolved - stop <= 360
    resolved = sim.first("page", "resolved")
    # The 5-minute window empties (5 min), then the page's 30 s hold (a tenth of that window).
    assert resolved is not None and 300 + 30 <= resolved - stop <= 300 + 30 + 60
    at_resolve = next(ev for ev in sim.evaluations if ev.at == resolved).statuses[0]
    assert at_resolve.windows["30m"].burn_rate > 6 and at_resolve.windows["6h"].burn_rate > 6
    assert [s.state for _, s in sim.signals if s.severity == "page"] == ["firing", "resolved"]


@pytest.mark.parametrize("phase", [0.0, 20.0, 40.0])
async def test_hysteresis_keeps_a_page_from_flapping(phase: float) -> None:
    """After a page, one failure every 285 s (1.75 % errors, still over 14.4x on the hour) keeps the 5-minute
    window dipping under the rate for a few seconds at a time: it empties of one failure (gradually, as
    the oldest minute counts pro rata) just before the next arrives. With the default 30 s hold the page
    stays up; without a hold it resolves and re-fires (the quiet-run test alone does not stop it: after a
    2-minute outage at 100 % the fault's rate reads high, so a short quiet run looks conclusive)."""
    alerts = [{"severity": "page", "burn_rate": 14.4, "long_window": "1h", "short_window": "5m"}]

    async def page_states(**kw: Any) -> list[str]:
        sim = Sim([slo(alerts=alerts, **kw)], T0 + 7 * 3600 + phase)
        await sim.backfill(7 * 3600)
        sim.start_engine()
        start = sim.clock.now()

        def ok(t: float) -> bool:
            return t >= start + 120 and round(t - start - 120) % 285 != 0  # a 2-minute outage, then drips

        await sim.run(30 * 60, ok)
        assert sim.status.windows["1h"].burn_rate > 14.4
        return [s.state for _, s in sim.signals if s.severity == "page"]

    assert await page_states() == ["firing"]
    flappy = await page_states(resolve_after=0)
    assert flappy.count("resolved") >= 1 and flappy.count("firing") >= 2


# -- the peers' mistakes ----------------------------------------------------------------------------------


class _Sparse(Sim):
    async def run(self, seconds: float, ok: Callable[[float], bool] | None = lambda t: True,
                  every: float = STEP) -> None:
        """Evaluate every minute, record a result only at multiples of 360 s."""
        engine = self.engine or self.start_engine()
        end = self.clock.now() + seconds
        while self.clock.now() + every <= end + 1e-9:
            self.clock.advance(every)
            t = self.clock.now()
            if ok is not None and round(t) % 360 == 0:
                await self.store.record([result(t, ok(t))])
            ev = await engine.evaluate()
            self.evaluations.append(ev)
            self.signals.extend((t, s) for s in ev.signals)


@pytest.mark.parametrize("min_events", [8, 0])
async def test_low_traffic_guard(min_events: int) -> None:
    """10 events an hour, one of them failed: 10 % errors, 100x burn over 1 h. Under the default guard
    (8 events per window; the 5-minute and 30-minute windows hold ~1 and ~5) it must not page; with the
    guard off it would."""
    sim = _Sparse([slo(min_events=min_events, no_data_after="10m")], T0 + 7 * 3600)
    await sim.backfill(7 * 3600, every=360)
    sim.start_engine()
    fail_at = sim.clock.now() + 360
    await sim.run(40 * 60, ok=lambda t: abs(t - fail_at) > 1, every=60)
    assert (sim.first("page", "firing") is not None) is (min_events == 0)
    if min_events:
        peak = max(ev.statuses[0].windows["1h"].burn_rate for ev in sim.evaluations)
        assert peak > 14.4  # the burn is there; the guard holds it
        assert not any(ev.statuses[0].windows["5m"].counts for ev in sim.evaluations)
        assert sim.status.windows["1h"].state == "ok" and sim.status.windows["30m"].state == "low_traffic"


async def _silence(policy: str, **kw: Any) -> Sim:
    sim = Sim([slo(no_data=policy, **kw)], T0 + 2 * 3600)
    await sim.backfill(2 * 3600)
    sim.start_engine()
    await sim.run(60)
    await sim.run(20 * 60, ok=None)  # the probe stops reporting
    return sim


async def test_no_data_ignore() -> None:
    sim = await _silence("ignore")
    assert sim.signals == []
    s = sim.status
    assert s.no_data and "no_data" not in s.firing
    assert s.windows["5m"].state == "no_data" and s.windows["5m"].burn_rate == 0.0
    assert s.budget.remaining == 1.0 and s.sli == 1.0


async def test_no_data_alert_fires_after_no_data_after_and_resolves_when_data_returns() -> None:
    sim = await _silence("alert")
    silent_from = T0 + 2 * 3600 + 60
    fired = sim.first("ticket", "firing", reason="no_data")
    assert fired is not None and 120 < fired - silent_from <= 180 + STEP
    signal = next(s for _, s in sim.signals if s.reason == "no_data")
    assert "no data from probe api" in signal.summary and signal.dedup_key == "slo:api:no_data:ticket"
    assert sim.first("page", "firing") is None  # silence is not a burn
    assert sim.status.firing == ("no_data",)
    back = sim.clock.now() + STEP
    await sim.run(30)
    assert sim.first("ticket", "resolved", reason="no_data") == back


async def test_no_data_alert_severity_and_startup_grace() -> None:
    """An engine started over a store without any data waits no_data_after before the no-data alert."""
    sim = Sim([slo(no_data="alert", no_data_severity="page", no_data_after="5m")], T0)
    sim.start_engine()
    await sim.run(10 * 60, ok=None)
    fired = sim.first("page", "firing", reason="no_data")
    assert fired is not None and 300 < fired - T0 <= 300 + STEP
    assert sim.status.last_data_at is None and sim.status.sli is None


async def test_no_data_bad_pages_like_an_outage() -> None:
    sim = await _silence("bad")
    silent_from = T0 + 2 * 3600 + 60
    fired = sim.first("page", "firing")
    # Two silent minutes are tolerated (no_data_after 2m); the third is a bad minute: page.
    assert fired is not None and fired - silent_from <= 4 * 60 + STEP
    s = sim.status
    assert s.windows["5m"].error_ratio == 1.0 and s.windows["5m"].counts
    assert s.budget.remaining < 0
    assert all(math.isfinite(x) for x in s.burn_rates.values())


# -- SLI kinds and selection ------------------------------------------------------------------------------


async def test_latency_uptime_metric_and_label_selection() -> None:
    slos = [
        SloConfig.model_validate(d)
        for d in [
            {"name": "lat", "objective": 95,
             "sli": {"kind": "latency", "probe": "api", "threshold": "200ms"}},
            {"name": "lat-db", "objective": 95,
             "sli": {"kind": "latency", "probe": "api", "threshold": "200ms", "labels": {"cohort": "db"}}},
            {"name": "up", "objective": 99.9, "sli": {"kind": "uptime", "probe": "api"}},
            {"name": "err", "objective": 99.9, "sli": {"kind": "error_rate", "probe": "api"}},
            {"name": "cpu", "objective": 99, "sli": {"kind": "metric_threshold", "probe": "db",
                                                     "observation": "db_cpu_percent", "below": 80}},
        ]
    ]
    store = MemoryStore()
    clock = FakeClock(T0 + 3600)
    results = []
    for i in range(60):  # one hour, one result per minute per cohort
        t = T0 + i * 60 + 10
        results.append(result(t, latency=0.1, labels={"cohort": "yaml"}))
        # The db cohort: slow every 4th minute, failed (fast) in minute 10, degraded in minute 20.
        outcome = Outcome.FAILED if i == 10 else Outcome.DEGRADED if i == 20 else Outcome.OK
        latency = 0.5 if i % 4 == 0 else 0.01
        results.append(result(t, latency=latency, labels={"cohort": "db"}, outcome=outcome))
        busy = 95.0 if i in (30, 31) else 50.0
        results.append(result(t, probe="db", observations=[Observation("db_cpu_percent", busy)]))
    await store.record(results)
    engine = SloEngine(slos, store, clock)
    ev = await engine.evaluate()
    lat, lat_db, up, err, cpu = ev.statuses
    assert (lat.total, lat.good) == (120, 120 - 15 - 1)  # 15 slow minutes, 1 fast failure
    assert (lat_db.total, lat_db.good) == (60, 60 - 15 - 1)
    assert up.total == 60 and up.good == 59  # the failed minute (both cohorts summed: 1 of 2 bad)
    assert err.sli == pytest.approx(119 / 120)  # degraded is good by default
    assert (cpu.total, cpu.good) == (60, 58)
    assert cpu.budget.allowed == pytest.approx(0.01 * 30 * 1440)  # time slices: the whole 30 days


# -- calendar windows -------------------------------------------------------------------------------------


async def test_calendar_month_across_month_boundary_and_dst() -> None:
    """America/New_York, March 2026 (743 h: DST starts 8 March). The budget resets at local midnight on
    1 April (04:00 UTC) although UTC has been in April for four hours already."""
    tz = "America/New_York"
    window = {"kind": "calendar_month", "timezone": tz}
    slos = [
        slo("up", sli={"kind": "uptime", "probe": "api"}, window=window),
        slo("req", window=window),
    ]
    march_1 = ts(2026, 3, 1, tz=tz)
    april_1 = ts(2026, 4, 1, tz=tz)
    assert april_1 - march_1 == 743 * 3600
    store = MemoryStore()
    # One result every 5 minutes all March; 10 failed minutes on 20 March; one more failure at 23:30 EDT
    # on 31 March, i.e. 03:30 UTC on 1 April.
    bad_from = ts(2026, 3, 20, 12, tz=tz)
    last_bad = ts(2026, 3, 31, 23, 30, tz=tz)
    batch = []
    t = march_1 + 30
    while t < april_1:
        ok = not (bad_from <= t < bad_from + 600) and abs(t - last_bad - 30) > 1
        batch.append(result(t, ok))
        t += 300
    for i in range(10):  # the 10 bad minutes
        batch.append(result(bad_from + 60 * i + 5, False))
    await store.record(batch)
    clock = FakeClock(april_1 - 60)
    engine = SloEngine(slos, store, clock)
    ev = await engine.evaluate()
    up, req = ev.statuses
    assert up.window == f"calendar month ({tz})" and up.window_start == march_1
    assert up.period_end == april_1
    assert up.budget.allowed == pytest.approx(0.001 * 743 * 60)  # 44.58 bad minutes in this March
    assert up.budget.spent == 11  # 10 + the 23:30 minute
    assert req.budget.spent == 10 + 2 + 1
    history = engine.history("up")
    assert len(history.day_starts) == 31 and history.day_starts[0] == march_1
    assert history.day_starts[8] - history.day_starts[7] == 23 * 3600  # 8 March
    assert sum(history.spent_per_day) == pytest.approx(1 - up.budget.remaining)
    assert history.remaining[0] == 1.0 and history.remaining[-1] == pytest.approx(up.budget.remaining)

    # Tick over the boundary (incrementally): April starts with an untouched budget.
    for _ in range(40):
        clock.advance(STEP)
        await store.record([result(clock.now())])
        ev = await engine.evaluate()
    up, req = ev.statuses
    assert up.window_start == req.window_start == april_1
    assert up.period_end == ts(2026, 5, 1, tz=tz)
    assert up.budget.allowed == pytest.approx(0.001 * 720 * 60)
    assert up.budget.spent == 0 and up.budget.remaining == 1.0
    assert req.budget.spent == 0 and req.total == 29 and req.sli == 1.0  # the results since 04:00 UTC


# -- incremental evaluation -------------------------------------------------------------------------------


class CountingStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.ranges: list[tuple[int, int]] = []

    async def minutes(self, start_minute: int, end_minute: int, probe: str | None = None,
                      labels: Mapping[str, str] | None = None) -> list[MinuteAggregate]:
        self.ranges.append((start_minute, end_minute))
        return await super().minutes(start_minute, end_minute, probe, labels)

    async def observation_minutes(self, start_minute: int, end_minute: int, probe: str | None = None,
                                  name: str | None = None,
                                  labels: Mapping[str, str] | None = None) -> list[ObservationMinute]:
        self.ranges.append((start_minute, end_minute))
        return await super().observation_minutes(start_minute, end_minute, probe, name, labels)


def _summary(s: SloStatus) -> dict[str, Any]:
    return {
        "sli": s.sli, "good": s.good, "total": s.total, "remaining": s.budget.remaining,
        "burn": s.burn_rates, "events": {k: w.events for k, w in s.windows.items()},
        "missing": {k: w.missing for k, w in s.windows.items()}, "no_data": s.no_data,
        "last_data_at": s.last_data_at, "spent_24h": s.budget_spent_24h,
    }


def _assert_same(a: Sequence[SloStatus], b: Sequence[SloStatus]) -> None:
    for x, y in zip(a, b, strict=True):
        sx, sy = _summary(x), _summary(y)
        assert sx.keys() == sy.keys()
        for key in sx:
            if isinstance(sx[key], dict):
                assert sx[key] == pytest.approx(sy[key], rel=1e-9, abs=1e-6), (x.name, key)
            else:
                assert sx[key] == pytest.approx(sy[key], rel=1e-9, abs=1e-6), (x.name, key)


async def test_incremental_equals_fresh_and_reads_only_the_tail() -> None:
    rng = random.Random(7)
    slos = [
        slo("avail", no_data="bad"),
        slo("lat", objective=99, sli={"kind": "latency", "probe": "api", "threshold": "200ms"}),
        slo("up", sli={"kind": "uptime", "probe": "api", "minute_good_ratio": 0.9}),
        slo("cal", window={"kind": "calendar_month", "timezone": "Asia/Taipei"}),
        slo("cpu", objective=99, sli={"kind": "metric_threshold", "probe": "db", "observation": "cpu",
                                      "below": 80, "aggregate": "avg"}),
    ]
    store = CountingStore()
    replica = store.sibling()  # a second daemon writing the same minutes

    def random_results(t: float) -> list[ProbeResult]:
        out = [result(t, rng.random() > 0.02, latency=rng.choice([0.05, 0.1, 0.3]))]
        if rng.random() < 0.5:
            out.append(result(t, probe="db", observations=[Observation("cpu", rng.uniform(40, 100))]))
        return out

    start = T0 + 2 * 86400
    history: list[ProbeResult] = []
    t = start - 2 * 86400
    while t < start:
        if not 3 * 3600 < t - (start - 2 * 86400) < 4 * 3600:  # an hour of silence
            history.extend(random_results(t))
        t += 20 + rng.random() * 20
    await store.record(history)
    clock = FakeClock(start)
    engine = SloEngine(slos, store, clock)
    await engine.evaluate()
    loaded = len(store.ranges)
    for i in range(240):  # 20 minutes of ticks; late writes by the replica into the previous minutes
        clock.advance(STEP)
        now = clock.now()
        if i % 7 != 3:  # some ticks without any new result
            await store.record(random_results(now - rng.random() * 4))
        if i % 11 == 0:
            # Within the re-read tail (the current minute and the two before it).
            await replica.record([result(now - 70, False), result(now - 100, True)])
        if i == 120:
            clock.advance(600)  # the evaluation job stalled for 10 minutes
        await engine.evaluate()
    tick_ranges = store.ranges[loaded:]
    assert len(tick_ranges) == 2 * 240  # results and observations, one read each per tick
    # Every tick reads the current minute and the two before it; only the tick after the stall reads the
    # 10 minutes it missed.
    assert sorted({end - start for start, end in tick_ranges}) == [3, 11]
    assert sum(1 for start, end in tick_ranges if end - start == 11) == 2
    incremental = (await engine.evaluate()).statuses
    fresh = (await SloEngine(slos, store, clock, started_at=engine._started_at).evaluate()).statuses
    _assert_same(incremental, fresh)


async def test_store_unavailable_keeps_last_evaluation_and_recovers() -> None:
    sim = Sim([slo()], T0 + 3600)
    await sim.backfill(3600)
    sim.start_engine()
    await sim.run(60)
    engine = sim.engine
    assert engine is not None
    before = engine.last
    sim.store.set_unavailable()
    sim.clock.advance(STEP)
    with pytest.raises(StoreUnavailable):
        await engine.evaluate()
    assert engine.last is before
    sim.store.set_unavailable(None)
    await sim.run(30)
    fresh = await SloEngine([slo()], sim.store, sim.clock, started_at=T0 + 3600).evaluate()
    _assert_same([sim.status], fresh.statuses)


async def test_restored_firing_state_resolves() -> None:
    """After a restart the daemon passes the incidents still open; a recovered SLO resolves them."""
    sim = Sim([slo(no_data="alert")], T0 + 3600)
    await sim.backfill(3600)
    sim.start_engine(firing=[("api", "page"), ("api", "no_data"), ("other", "page")])
    await sim.run(240)
    # Clear from the first tick on (no failure in either rule's short window); the page resolves after its
    # 30 s hold.
    assert sim.first("page", "resolved") == T0 + 3600 + STEP + 30
    assert sim.first("ticket", "resolved", reason="no_data") == T0 + 3600 + STEP


async def test_budget_history_adds_up() -> None:
    sim = Sim([slo()], T0 + 3 * 86400)
    await sim.backfill(3 * 86400, lambda t: round(t / STEP) % 997 != 0, every=30)
    sim.start_engine()
    await sim.run(30)
    assert sim.engine is not None
    h = sim.engine.history("api", step_s=3600)
    s = sim.status
    assert h.times[0] == s.window_start and h.times[-1] == s.evaluated_at
    assert h.remaining[0] == 1.0 and h.remaining[-1] == pytest.approx(s.budget.remaining)
    assert all(a >= b - 1e-12 for a, b in zip(h.remaining, h.remaining[1:], strict=False))  # only burns down
    assert sum(h.spent_per_day) == pytest.approx(1 - s.budget.remaining)
    assert len(h.day_starts) == 31  # the 30-day window touches 31 UTC days
    assert h.to_dict()["burn_down"][0] == [s.window_start, 1.0]


async def test_sqlite_store_gives_the_same_answers(tmp_path: Path) -> None:
    sqlite = SqliteStore(tmp_path / "state.db")
    await sqlite.open()
    memory = MemoryStore()
    try:
        rng = random.Random(3)
        batch = [result(T0 + i * 13.0, rng.random() > 0.01, latency=rng.choice([0.02, 0.3]))
                 for i in range(6 * 3600 // 13)]
        await sqlite.record(batch)
        await memory.record(batch)
        latency = {"kind": "latency", "probe": "api", "threshold": "0.25s"}
        slos = [slo(), slo("lat", objective=95, sli=latency)]
        clock = FakeClock(T0 + 6 * 3600 + 5)
        a = await SloEngine(slos, sqlite, clock).evaluate()
        b = await SloEngine(slos, memory, clock).evaluate()
        _assert_same(a.statuses, b.statuses)
        assert a.statuses[0].total == len(batch)
    finally:
        await sqlite.close()


def test_engine_rejects_duplicate_names() -> None:
    with pytest.raises(ValueError, match="duplicate SLO names: api"):
        SloEngine([slo(), slo()], MemoryStore(), FakeClock())

"""The SLO engine: incremental evaluation of every SLO from the store's per-minute aggregates.

At the first ``evaluate()`` the engine reads the whole span it needs (the longest SLO window or alert window,
plus margin) once, in day-sized chunks, into per-source cumulative counters (``series.CumulativeSeries``).
Every later tick re-reads only the last few minutes (the current minute is still growing and another replica
may add to it), so a tick costs O(SLOs + series x 3 minutes), independent of how many probe results were
recorded and of the window lengths.

Alerts follow the SRE Workbook's multiwindow, multi-burn-rate scheme; see ``burn.py`` for the rule state
machine and ``windows.py`` for how windows are anchored. Transitions are reported per SLO and severity
(``page``/``ticket``, plus ``no_data``) as ``AlertSignal``: a severity fires when its first rule fires and
resolves when its last firing rule has resolved.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from watchdog.config.slo import BurnRateAlert, CountedRatioSli, MetricThresholdSli, SloConfig
from watchdog.core.clock import Clock
from watchdog.core.durations import format_duration
from watchdog.core.labels import labels_match
from watchdog.slo import messages
from watchdog.slo.budget import Budget, budget, exhaustion_at
from watchdog.slo.burn import NoDataPolicy, RuleState, WindowStats, rule_conditions, step_rule, window_stats
from watchdog.slo.ingest import (
    Block,
    Column,
    ColumnCache,
    ObservationBlock,
    ResultBlock,
    SeriesPlan,
    gap_columns,
    plan_for,
    source_columns,
)
from watchdog.slo.model import (
    SEVERITIES,
    AlertSignal,
    BudgetHistory,
    Evaluation,
    RuleStatus,
    Severity,
    SloStatus,
)
from watchdog.slo.series import DATA, EVENTS, GOOD, MISSING, TOTAL, CumulativeSeries, Values
from watchdog.slo.sli import source_key
from watchdog.slo.windows import Period, day_starts, minute_of, slo_period
from watchdog.store.base import MinuteAggregate, ObservationMinute

FORECAST_WINDOWS_S: tuple[float, ...] = (3600.0, 6 * 3600.0)
"""Burn rates the exhaustion forecast extrapolates (the headline is the earliest of them)."""
DAY_S = 86400.0
REREAD_MINUTES = 3
"""Each tick re-reads the current minute and the two before it (late writes from replicas, flush lag)."""
FINE_LIMIT_S = 6 * 3600.0
"""Windows up to this long are minute-exact; longer ones interpolate their oldest hour."""
_CALENDAR_SPAN_S = 32 * DAY_S
_SPAN_MARGIN_MIN = 120
_EPS = 1e-9
_YIELD_ITEMS = 100
_YIELD_ROWS = 5000
"""The event loop is not held for long: evaluate() yields every 100 SLOs/sources and every 5,000 rows
(about 4 ms at most with 1,000 SLOs), so probes sharing the loop keep their timing honest."""


# -- internal state -----------------------------------------------------------------------------------


class _Source:
    """One SLI measurement and its cumulative counters, shared by SLOs measuring the same thing."""

    def __init__(self, slo: SloConfig, gap_minutes: int) -> None:
        self.sli = slo.sli
        self.key = (source_key(slo.sli), gap_minutes)
        self.time_slices = slo.time_slices
        self.observation = isinstance(slo.sli, MetricThresholdSli | CountedRatioSli)
        self.gap_minutes = gap_minutes
        """Empty minutes tolerated before minutes count as missing (``no_data_after`` // 60)."""
        self.series = CumulativeSeries(0, 60, 64)
        self.last_data: int | None = None
        self.first_data: int | None = None
        """The first minute with data in the loaded span: where windows start being covered."""
        self.first_missing: int | None = None
        """The first minute counted missing (``no_data: bad`` covers from there too)."""
        self._recent: list[int] = []
        self._older: int | None = None

    def reset(self, origin: int, span_minutes: int, fine_minutes: int) -> None:
        self.series = CumulativeSeries(origin, span_minutes, fine_minutes)
        self.last_data = None
        self.first_data = self.first_missing = None
        self._recent = []
        self._older = None

    def rewind(self, boundary: int) -> None:
        self.series.rewind(boundary)
        self._recent = [m for m in self._recent if m < boundary]
        self.last_data = self._recent[-1] if self._recent else self._older
        if self.first_data is not None and self.first_data >= boundary:
            self.first_data = None
        if self.first_missing is not None and self.first_missing >= boundary:
            self.first_missing = None

    def add(self, start: int, current: int, good: Column, total: Column, events: Column,
            cache: ColumnCache, watch_start: int) -> None:
        """Add minutes [start, start + n) (``series.hi == start``); ``current`` is the growing minute."""
        key = ("gaps", id(events), self.last_data, self.gap_minutes)
        gaps = cache.gaps.get(key)
        if gaps is None:
            gaps = cache.gaps[key] = gap_columns(events, start, current, self.last_data, self.gap_minutes,
                                                 watch_start)
        missing, data, data_minutes = gaps
        self.series.extend((good, total, events, missing, data), cache.prefixes)
        if self.first_data is None and data_minutes:
            self.first_data = start + data.index(1.0)
        if self.first_missing is None and missing is not None:
            self.first_missing = start + missing.index(1.0)
        if data_minutes:
            self.last_data = data_minutes[-1]
            recent = self._recent
            recent.extend(data_minutes)
            if len(recent) > 16:
                self._older = recent[-17]
                del recent[:-16]


@dataclass(slots=True)
class _Rule:
    cfg: BurnRateAlert
    rule_id: str
    hold: float
    min_events: int
    gate: float = 0.0
    """The severity's shortest short window: the rule fires and stays firing only while it is over the rate
    too (``burn.rule_conditions``)."""
    state: RuleState = field(default_factory=RuleState)


class _Slo:
    def __init__(self, cfg: SloConfig, source: _Source) -> None:
        self.cfg = cfg
        self.source = source
        self.objective = cfg.objective_ratio
        self.budget_ratio = 1.0 - self.objective
        self.no_data: NoDataPolicy = cfg.no_data
        self.rules = [
            _Rule(
                cfg=a,
                rule_id=a.rule_id,
                hold=a.resolve_after if a.resolve_after is not None
                else cfg.resolve_after if cfg.resolve_after is not None else _gate_of(cfg, a) / 10.0,
                min_events=a.min_events if a.min_events is not None else cfg.min_events,
            )
            for a in cfg.alerts
        ]
        lengths = {a.long_window for a in cfg.alerts} | {a.short_window for a in cfg.alerts}
        lengths |= set(FORECAST_WINDOWS_S) | {DAY_S}
        self.window_lengths = sorted(lengths)
        self.labels = {w: format_duration(w) for w in self.window_lengths}
        self.by_severity = {sev: [r for r in self.rules if r.cfg.severity == sev] for sev in SEVERITIES}
        for mine in self.by_severity.values():
            gate = min((r.cfg.short_window for r in mine), default=0.0)
            for r in mine:
                r.gate = gate
        self.firing: dict[str, bool] = {"page": False, "ticket": False, "no_data": False}
        self.cost_from: dict[str, float] = {}
        """Per firing severity: where the incident's cost is counted from (``_burn_signal``)."""
        self._month: tuple[float, float] | None = None
        w = cfg.window
        self._rolling_length = w.length if w.kind == "rolling" else 0.0
        self._label = format_duration(w.length) if w.kind == "rolling" else f"calendar month ({w.timezone})"

    def span_s(self) -> float:
        w = self.cfg.window
        base = w.length if w.kind == "rolling" else _CALENDAR_SPAN_S
        return max(base, *self.window_lengths)

    def period(self, end: float) -> Period:
        w = self.cfg.window
        if w.kind == "rolling":
            length = self._rolling_length
            return Period(end - length, end, length, end, True, self._label)
        cached = self._month
        if cached is None or not cached[0] <= end < cached[1]:
            p = slo_period(w, end)
            self._month = (p.start, p.period_end)
            return p
        start, month_end = cached
        return Period(start, end, month_end - start, month_end, False, self._label, w.timezone)


def _gate_of(cfg: SloConfig, alert: BurnRateAlert) -> float:
    """The shortest short window of the alert's severity: the window that says the errors go on."""
    return min(a.short_window for a in cfg.alerts if a.severity == alert.severity)


QUIET_EVIDENCE = 0.001
"""A firing rule resolves once the good events since its last bad one would happen by chance with at most
this probability if the fault went on at the rate it showed (``_fault_is_over``)."""


def _quiet_needed_events(p: float) -> float:
    """Good events in a row after which a fault of error ratio ``p`` is over (``QUIET_EVIDENCE``)."""
    p = min(max(p, 1e-12), 1.0 - 1e-12)
    return -math.log(QUIET_EVIDENCE) / -math.log1p(-p)


def _fault_rate(series: CumulativeSeries, fired_at: float, gate: float, until: float) -> float | None:
    """The incident's error ratio: bad / total from ``gate`` before the rule fired to ``until`` (a 59 s
    outage at 100 % is ~20 % over that span; a sustained 1 % burn is 1 %)."""
    q, f = series.at(until), series.at(fired_at - gate)
    total = q[TOTAL] - f[TOTAL]
    bad = total - (q[GOOD] - f[GOOD])
    if total <= _EPS or bad <= _EPS:
        return None
    return bad / total


def _fault_is_over(series: CumulativeSeries, end: float, end_vals: Values, fired_at: float, gate: float,
                   limit: float) -> bool:
    """Whether the errors that fired a rule have stopped, by the run of good events since the last bad one.

    The fault's rate ``p`` is what the incident showed (``_fault_rate``, up to the last bad event). It is
    over once ``(1 - p)^n <= QUIET_EVIDENCE`` for the ``n`` good events since: 31 events after a 20 % fault,
    687 after a 1 % one (a fixed hold either resolves the first late or flaps on the second: at 2 s probes a
    1 % fault leaves the 5 m window empty one time in five). Or once ``limit`` (the rule's short window)
    holds no bad event at all: low traffic or no data cannot keep a page open forever. Minute resolution:
    the minute holding the last bad event does not count as quiet."""
    bad_end = end_vals[TOTAL] - end_vals[GOOD]
    w = series.at(end - limit)
    if bad_end - (w[TOTAL] - w[GOOD]) < 0.5:  # the short window (its oldest minute pro rata) is clean
        return True
    t = math.floor(end / 60.0) * 60.0
    if t >= end:
        t -= 60.0
    quiet_from = end
    while t > end - limit:
        v = series.at(t)
        if bad_end - (v[TOTAL] - v[GOOD]) > 0.5:
            break
        quiet_from = t
        t -= 60.0
    p = _fault_rate(series, fired_at, gate, quiet_from)
    if p is None:
        return False
    quiet = end_vals[TOTAL] - series.at(quiet_from)[TOTAL]
    return quiet >= _quiet_needed_events(p)


def _sub(a: Values, b: Values) -> Values:
    return (a[0] - b[0], a[1] - b[1], a[2] - b[2], a[3] - b[3], a[4] - b[4])


def _counts(ws: WindowStats, min_events: int, no_data: NoDataPolicy) -> bool:
    if no_data == "bad" and ws.missing > _EPS:
        return True
    return ws.events > _EPS and ws.events + _EPS >= min_events


# -- the engine ---------------------------------------------------------------------------------------


class AggregateReader(Protocol):
    """The two store reads the engine needs (every ``StateStore`` is one)."""

    async def minutes(self, start_minute: int, end_minute: int) -> list[MinuteAggregate]: ...

    async def observation_minutes(self, start_minute: int, end_minute: int) -> list[ObservationMinute]: ...


class SloEngine:
    """Evaluates SLOs from the store's aggregates on every ``evaluate()`` (call it on a short tick, e.g. 5 s).

    ``firing``: (slo, severity) pairs believed to be firing already (from open incidents after a restart;
    severity ``page``, ``ticket`` or ``no_data``), so that they resolve normally instead of being forgotten.
    ``started_at``: when watching began (default: now); the no-data alert waits ``no_data_after`` from it.
    """

    def __init__(
        self,
        slos: Sequence[SloConfig],
        store: AggregateReader,
        clock: Clock,
        *,
        firing: Iterable[tuple[str, str]] = (),
        started_at: float | None = None,
        load_chunk_minutes: int = 1440,
        fine_limit_s: float = FINE_LIMIT_S,
    ) -> None:
        names = [s.name for s in slos]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate SLO names: {', '.join(dupes)}")
        self._store = store
        self._clock = clock
        self._started_at = clock.now() if started_at is None else started_at
        self._start_minute = minute_of(self._started_at)
        self._chunk = max(60, int(load_chunk_minutes))
        sources: dict[tuple[str, int], _Source] = {}
        self._slos: list[_Slo] = []
        for cfg in slos:
            gap = int(cfg.no_data_after // 60)
            probe = _Source(cfg, gap)
            src = sources.setdefault(probe.key, probe)
            self._slos.append(_Slo(cfg, src))
        self._sources = list(sources.values())
        self._result_sources: dict[str, list[_Source]] = {}
        self._obs_sources: dict[tuple[str, str], list[_Source]] = {}
        for src in self._sources:
            if isinstance(src.sli, MetricThresholdSli):
                self._obs_sources.setdefault((src.sli.probe, src.sli.observation), []).append(src)
            elif isinstance(src.sli, CountedRatioSli):
                for name in (src.sli.total, src.sli.bad):
                    self._obs_sources.setdefault((src.sli.probe, name), []).append(src)
            else:
                self._result_sources.setdefault(src.sli.probe, []).append(src)
        self._plans: dict[str, SeriesPlan] = {}
        self._at_cache: dict[int, dict[float, Values]] = {}
        span_s = max((s.span_s() for s in self._slos), default=DAY_S)
        self._span_minutes = math.ceil(span_s / 60.0) + _SPAN_MARGIN_MIN
        fine = [w for s in self._slos for w in s.window_lengths if w <= fine_limit_s]
        self._fine_minutes = max(64, math.ceil(max(fine, default=0.0) / 60.0) + REREAD_MINUTES + 2)
        self._hi: int | None = None
        self._origin = 0
        self._last: Evaluation | None = None
        self._last_now = -math.inf
        self._lock = asyncio.Lock()
        by_name = {s.cfg.name: s for s in self._slos}
        for name, severity in firing:
            restored = by_name.get(name)
            if restored is None or severity not in restored.firing:
                continue
            restored.firing[severity] = True
            restored.cost_from[severity] = self._started_at
            for rule in restored.rules:
                if rule.cfg.severity == severity:
                    rule.state.firing, rule.state.since = True, self._started_at

    # -- public --------------------------------------------------------------------------------------

    @property
    def slos(self) -> list[SloConfig]:
        return [s.cfg for s in self._slos]

    @property
    def last(self) -> Evaluation | None:
        """The latest evaluation (what /metrics shows)."""
        return self._last

    @property
    def source_count(self) -> int:
        """Distinct SLI measurements (SLOs measuring the same thing share one)."""
        return len(self._sources)

    async def evaluate(self) -> Evaluation:
        """Bring the counters up to date and evaluate every SLO. Raises StoreUnavailable (the previous
        evaluation stays in ``last``; nothing is half-updated: a failed read makes the next call reload)."""
        async with self._lock:
            t0 = self._clock.monotonic()
            now = max(self._clock.now(), self._last_now)  # a clock stepping back does not rewind windows
            current = minute_of(now)
            if self._hi is None or current - self._hi > self._span_minutes:
                await self._load(current)
            else:
                await self._tick(current)
            self._last_now = now
            statuses: list[SloStatus] = []
            signals: list[AlertSignal] = []
            self._at_cache = {}
            for k, slo in enumerate(self._slos):
                if k % _YIELD_ITEMS == _YIELD_ITEMS - 1:
                    await asyncio.sleep(0)  # let probes run: their latency is timed on this loop
                statuses.append(self._evaluate_slo(slo, now, current, signals))
            evaluation = Evaluation(now, statuses, signals, max(0.0, self._clock.monotonic() - t0))
            self._last = evaluation
            return evaluation

    def history(self, name: str, step_s: float = 3600.0) -> BudgetHistory:
        """Budget burn-down of one SLO over its current window, as of the last evaluation."""
        if self._last is None:
            raise RuntimeError("evaluate() first")
        slo = next((s for s in self._slos if s.cfg.name == name), None)
        if slo is None:
            raise KeyError(name)
        status = self._last.status(name)
        series = slo.source.series
        now = self._last.at
        end = minute_of(now) * 60.0 if slo.source.time_slices else now
        period = slo.period(end)
        base = series.at(period.start)
        allowed = status.budget.allowed
        slices = slo.source.time_slices

        def at(t: float) -> Values:
            # Event SLIs: everything recorded so far is at or before ``now``, the current minute included.
            return series.total() if t >= end and not slices else series.at(t)

        whole = _sub(at(end), base)
        rate = 1.0
        if not slices and whole[DATA] > _EPS and whole[TOTAL] > _EPS:
            rate = whole[TOTAL] / whole[DATA]

        def bad_between(a: float, b: float) -> float:
            v = _sub(at(b), at(a))
            bad = max(0.0, v[TOTAL] - v[GOOD])
            if slo.no_data == "bad" and v[MISSING] > _EPS:
                bad += v[MISSING] * rate
            return bad

        step = max(60.0, step_s)
        times = [period.start]
        t = period.start + step
        while t < end:
            times.append(t)
            t += step
        if end > period.start:
            times.append(end)
        remaining = [1.0 - bad_between(period.start, x) / allowed if allowed > 0 else 1.0 for x in times]
        days = day_starts(period.start, end, period.timezone) if end > period.start else []
        bounds = [*days, end]
        spent = [
            bad_between(bounds[i], bounds[i + 1]) / allowed if allowed > 0 else 0.0 for i in range(len(days))
        ]
        return BudgetHistory(
            name=name,
            objective=slo.objective,
            window=period.label,
            start=period.start,
            end=end,
            period_end=period.period_end if not period.rolling else period.start + period.length,
            times=times,
            remaining=remaining,
            day_starts=days,
            spent_per_day=spent,
        )

    # -- ingestion ----------------------------------------------------------------------------------

    async def _read(self, start: int, end: int) -> tuple[list[MinuteAggregate], list[ObservationMinute]]:
        rows = await self._store.minutes(start, end) if self._result_sources else []
        obs = await self._store.observation_minutes(start, end) if self._obs_sources else []
        return rows, obs

    def _plan(self, key: str, probe: str, name: str | None, labels: Mapping[str, str]) -> SeriesPlan:
        plan = self._plans.get(key)
        if plan is None:
            if name is None:
                candidates = self._result_sources.get(probe, ())
            else:
                candidates = self._obs_sources.get((probe, name), ())
            plan = plan_for([(s, s.sli) for s in candidates if labels_match(labels, s.sli.labels)])
            self._plans[key] = plan
        return plan

    async def _apply(
        self, start: int, end: int, current: int, rows: list[MinuteAggregate], obs: list[ObservationMinute]
    ) -> None:
        n = end - start
        blocks: dict[str, Block] = {}
        for k, row in enumerate(rows):
            if k % _YIELD_ROWS == _YIELD_ROWS - 1:
                await asyncio.sleep(0)
            rblock = blocks.get(row.series)
            if rblock is None:
                plan = self._plan(row.series, row.probe, None, row.labels)
                if not plan.sources:
                    continue
                rblock = blocks[row.series] = ResultBlock(n, plan)
            assert isinstance(rblock, ResultBlock)
            rblock.add(row.minute - start, row)
        for orow in obs:
            key = "o" + orow.series
            oblock = blocks.get(key)
            if oblock is None:
                plan = self._plan(key, orow.probe, orow.name, orow.labels)
                if not plan.sources:
                    continue
                oblock = blocks[key] = ObservationBlock(n, plan, orow.name)
            assert isinstance(oblock, ObservationBlock)
            oblock.add(orow.minute - start, orow)
        by_source: dict[int, list[Block]] = {}
        for block in blocks.values():
            for src in block.plan.sources:
                by_source.setdefault(id(src), []).append(block)
        cache = ColumnCache(n)
        zeros = cache.zeros
        for k, src in enumerate(self._sources):
            if k % _YIELD_ITEMS == _YIELD_ITEMS - 1:
                await asyncio.sleep(0)
            mine = by_source.get(id(src))
            if mine:
                good, total, events = source_columns(src.sli, mine, cache)
            else:
                good = total = events = zeros
            src.add(start, current, good, total, events, cache, self._start_minute)

    async def _load(self, current: int) -> None:
        self._hi = None
        origin = ((current - self._span_minutes) // 60) * 60
        self._origin = origin
        for src in self._sources:
            src.reset(origin, current + 1 - origin, self._fine_minutes)
            # Minute samples older than what the fine ring holds at the end are never read: skip them.
            src.series.fine_floor = current + 1 - src.series.fine_minutes
        start = origin
        while start <= current:
            end = min(current + 1, start + self._chunk)
            rows, obs = await self._read(start, end)
            await self._apply(start, end, current, rows, obs)
            start = end
        self._hi = current + 1

    async def _tick(self, current: int) -> None:
        assert self._hi is not None
        # The minute that was current at the last tick, and the last REREAD_MINUTES up to the current one.
        start = max(self._origin, min(self._hi - 1, current - REREAD_MINUTES + 1))
        hi = self._hi
        try:
            if current + 1 - start <= self._chunk:
                rows, obs = await self._read(start, current + 1)  # read first: a failure changes nothing
                for src in self._sources:
                    src.rewind(start)
                await self._apply(start, current + 1, current, rows, obs)
            else:
                for src in self._sources:
                    src.rewind(start)
                self._hi = None  # a failure half-way must reload
                chunk_start = start
                while chunk_start <= current:
                    end = min(current + 1, chunk_start + self._chunk)
                    rows, obs = await self._read(chunk_start, end)
                    await self._apply(chunk_start, end, current, rows, obs)
                    chunk_start = end
        except BaseException:
            if self._hi is None or any(src.series.hi != hi for src in self._sources):
                self._hi = None
            raise
        self._hi = current + 1

    # -- evaluation ---------------------------------------------------------------------------------

    @staticmethod
    def _burn_signal(
        slo: _Slo, severity: Severity, mine: list[_Rule], stats: Mapping[float, WindowStats], bud: Budget,
        period: Period, now: float, end: float, end_vals: Values,
    ) -> AlertSignal:
        """The transition of one severity. Its cost is what was spent from ``cost_from``: the start of the
        leading rule's short window when it fired (the errors that fired it, not only those after: a 59 s
        outage fires the 14.4x page after 52 s), or engine start for an incident restored from the store."""
        name, labels = slo.cfg.name, slo.labels
        firing = [r for r in mine if r.state.firing]
        if firing:
            slo.cost_from[severity] = end - firing[0].cfg.short_window
        since = slo.cost_from.get(severity, end)
        if not firing:
            slo.cost_from.pop(severity, None)
        v = slo.source.series.at(since)
        spent = window_stats(max(0.0, end - since), end_vals[GOOD] - v[GOOD], end_vals[TOTAL] - v[TOTAL],
                             end_vals[EVENTS] - v[EVENTS], end_vals[MISSING] - v[MISSING],
                             end_vals[DATA] - v[DATA], slo.budget_ratio, 0, slo.no_data,
                             slo.source.time_slices)
        bad = spent.bad
        share = bad / bud.allowed if bud.allowed > 0 else 0.0
        rates: dict[str, float] = {}
        for r in mine:
            rates[labels[r.cfg.long_window]] = stats[r.cfg.long_window].burn_rate
            rates[labels[r.cfg.short_window]] = stats[r.cfg.short_window].burn_rate
        left = messages.budget_left(bud.remaining, period.label)
        if firing:
            lead = firing[0].cfg
            lw, sw = lead.long_window, lead.short_window
            summary = messages.burn_firing(
                name,
                severity,
                stats[lw].burn_rate,
                labels[lw],
                stats[sw].burn_rate,
                labels[sw],
                lead.burn_rate,
                left,
            )
            return AlertSignal(name, severity, "firing", rates, now, summary, "burn_rate",
                               tuple(r.rule_id for r in firing), since, bad, share)
        cost = messages.incident_cost(share, bad, period.label, slo.source.time_slices)
        summary = messages.burn_resolved(name, severity, left, cost)
        return AlertSignal(name, severity, "resolved", rates, now, summary, "burn_rate",
                           tuple(r.rule_id for r in mine), since, bad, share)

    def _evaluate_slo(self, slo: _Slo, now: float, current: int, signals: list[AlertSignal]) -> SloStatus:
        src = slo.source
        series = src.series
        cfg = slo.cfg
        slices = src.time_slices
        # SLOs sharing a source share its lookups within one evaluation.
        seen = self._at_cache.setdefault(id(src), {})
        if slices:
            end = current * 60.0
            end_vals = series.at_minute(current)
        else:
            end = now
            end_vals = series.total()
        e0, e1, e2, e3, e4 = end_vals
        ratio, min_events, policy = slo.budget_ratio, cfg.min_events, slo.no_data
        labels = slo.labels
        stats: dict[float, WindowStats] = {}
        windows: dict[str, WindowStats] = {}
        # Coverage (burn.py): windows reaching back before the source's first data are normalised.
        first = src.first_data
        if policy == "bad" and src.first_missing is not None and (first is None or src.first_missing < first):
            first = src.first_missing
        covered_from = first * 60.0 if first is not None else -math.inf
        if first == self._start_minute:  # data began while this engine watched: not before it started
            covered_from = max(covered_from, self._started_at)
        for w in slo.window_lengths:
            t = end - w
            v = seen.get(t)
            if v is None:
                v = seen[t] = series.at(t)
            ws = window_stats(w, e0 - v[0], e1 - v[1], e2 - v[2], e3 - v[3], e4 - v[4], ratio, min_events,
                              policy, slices, end - covered_from if covered_from > t else None)
            stats[w] = ws
            windows[labels[w]] = ws
        period = slo.period(end)
        v = series.at(period.start)
        whole = window_stats(period.elapsed, e0 - v[0], e1 - v[1], e2 - v[2], e3 - v[3], e4 - v[4], ratio,
                             min_events, policy, slices)
        bud = budget(whole.good, whole.total, budget_ratio=ratio,
                     slice_minutes=period.length / 60.0 if slices else None)
        spent_24h = stats[DAY_S].bad / bud.allowed if bud.allowed > 0 else 0.0
        forecasts: dict[str, float | None] = {}
        exhaustion: float | None = None
        for w in FORECAST_WINDOWS_S:
            ws = stats[w]
            rate = ws.burn_rate if ws.counts else 0.0
            at = exhaustion_at(bud.remaining, rate, now=now, period_length=period.length,
                               rolling=period.rolling, period_end=period.period_end)
            forecasts[labels[w]] = at
            if at is not None and (exhaustion is None or at < exhaustion):
                exhaustion = at

        # Burn-rate rules.
        rule_statuses: list[RuleStatus] = []
        for rule in slo.rules:
            a = rule.cfg
            long, short, gate = stats[a.long_window], stats[a.short_window], stats[rule.gate]
            if rule.min_events != min_events:
                long_ok = _counts(long, rule.min_events, policy)
                short_ok = _counts(short, rule.min_events, policy)
                gate_ok = _counts(gate, rule.min_events, policy)
                if not gate_ok:  # too quiet to tell: the rule's own short window decides alone
                    gate, gate_ok = short, short_ok
                fire = (long_ok and short_ok and gate_ok and long.burn_rate > a.burn_rate
                        and short.burn_rate > a.burn_rate and gate.burn_rate > a.burn_rate)
                clear = not fire
            else:
                long_ok, short_ok = long.counts, short.counts
                if not gate.counts:
                    gate = short
                gate_ok = gate.counts
                fire, clear = rule_conditions(long, short, a.burn_rate, gate)
            state = rule.state
            fault_rate = quiet_needed = None
            if state.firing:
                fired_at = state.since if state.since is not None else end
                if clear and not _fault_is_over(series, end, end_vals, fired_at, rule.gate, a.short_window):
                    clear = False
                fault_rate = _fault_rate(series, fired_at, rule.gate, end)
                quiet_needed = a.short_window
                gate_stats = stats[rule.gate]
                if fault_rate is not None and gate_stats.total > _EPS:
                    per_second = gate_stats.total / gate_stats.seconds
                    quiet_needed = min(
                        a.short_window, max(rule.gate, _quiet_needed_events(fault_rate) / per_second)
                    )
            step_rule(state, fire=fire, clear=clear, now=now, hold=rule.hold)
            rule_statuses.append(
                RuleStatus(rule.rule_id, a.severity, a.burn_rate, labels[a.long_window],
                           labels[a.short_window], long.burn_rate, short.burn_rate, long_ok, short_ok,
                           state.firing, state.since, state.clear_since, labels[gate.seconds],
                           gate.burn_rate, gate_ok, rule.hold,
                           fault_rate if state.firing else None, quiet_needed if state.firing else None)
            )

        for severity, mine in slo.by_severity.items():
            is_firing = any(r.state.firing for r in mine)
            if is_firing != slo.firing[severity]:
                slo.firing[severity] = is_firing
                signals.append(self._burn_signal(slo, severity, mine, stats, bud, period, now, end, end_vals))

        # No data.
        last_data_at = (src.last_data + 1) * 60.0 if src.last_data is not None else None
        no_data = last_data_at is None or now - last_data_at > cfg.no_data_after
        silent_since = max(last_data_at if last_data_at is not None else -math.inf, self._started_at)
        nd_alert = cfg.no_data == "alert" and now - silent_since > cfg.no_data_after
        if nd_alert != slo.firing["no_data"]:
            slo.firing["no_data"] = nd_alert
            probe = cfg.sli.probe
            if nd_alert:
                silent = None if last_data_at is None else now - last_data_at
                summary = messages.no_data_firing(cfg.name, probe, silent)
            else:
                summary = messages.no_data_resolved(cfg.name, probe)
            signals.append(AlertSignal(cfg.name, cfg.no_data_severity, "firing" if nd_alert else "resolved",
                                       {}, now, summary, "no_data", ()))

        return SloStatus(
            name=cfg.name,
            description=cfg.description,
            kind=cfg.sli.kind,
            objective=slo.objective,
            window=period.label,
            window_start=period.start,
            window_end=period.end,
            period_end=period.period_end,
            evaluated_at=now,
            sli=(whole.good / whole.total) if whole.total > _EPS else None,
            good=whole.good,
            total=whole.total,
            events=whole.events,
            budget=bud,
            budget_spent_24h=spent_24h,
            windows=windows,
            slo_window=whole,
            rules=tuple(rule_statuses),
            firing=tuple(k for k in ("page", "ticket", "no_data") if slo.firing[k]),
            no_data=no_data,
            last_data_at=last_data_at,
            exhaustion_at=exhaustion,
            forecasts=forecasts,
        )

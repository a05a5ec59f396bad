"""Run a scenario: the real SLO engine, alert rules, incident manager and dispatcher over simulated time.

What runs is what ``watchdog run`` runs, wired the way ``runtime.wiring`` and ``runtime.daemon`` wire it, on a
``FakeClock`` and an in-memory store (``SimStore``):

- at start, and at every restart: an ``IncidentManager`` over the store, a ``SloEngine`` told which SLO
  incidents are open (``open_slo_incidents``, as ``Daemon.start`` does), a ``Dispatcher`` that first releases
  its own earlier claims; a restart with ``keep_state: false`` gets an empty store;
- every ``evaluation_interval``: the results finished since the last evaluation are recorded (the daemon's
  1 s flush), then ``Daemon.evaluate_alerts``'s sequence: ``evaluate()`` → ``handle_slo_signals`` →
  ``evaluate_probe_alerts`` → ``tick`` (escalation timers), then the dispatcher delivers what is due to a
  recording notifier for every channel kind the escalation policies name (and the log fallback);
- every 10 simulated minutes the store is pruned, as the daemon's ``prune`` job does.

Nothing acknowledges a page, so escalation runs its course (L1 → L2 → L3, repeats). Time is only simulated:
a day at a 5 s evaluation interval is 17,280 evaluations, a few seconds of CPU.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from watchdog.config.loader import WatchdogConfig
from watchdog.core.clock import FakeClock
from watchdog.core.results import ProbeResult
from watchdog.incidents.manager import IncidentManager, Transition
from watchdog.notify.base import CALLING_EVENTS, Page
from watchdog.notify.dispatch import Dispatcher
from watchdog.simulate.scenario import Restart, Scenario
from watchdog.simulate.store import SimStore
from watchdog.simulate.traffic import Series, build_series, results_until
from watchdog.slo.engine import SloEngine
from watchdog.slo.model import AlertSignal
from watchdog.store.base import LATENCY_BUCKETS_S

FALLBACK_KIND = "log"
"""The dispatcher's last-resort channel (``notify.registry.FALLBACK_KIND``; not imported: the registry
pulls in the Slack client)."""
PRUNE_EVERY_S = 600.0
INSTANCE = "simulate"
PAGING_EVENTS = CALLING_EVENTS | {"refired"}
"""Events that reach a person: a page, an escalation, a reminder, and a re-fire in a flapping thread."""
BACKFILL_BATCH = 20_000


@dataclass(frozen=True, slots=True)
class Delivered:
    """One page as a notifier received it."""

    at: float
    kind: str
    page: Page


class TimelineNotifier:
    """Implements the Notifier protocol: records every page with the simulated time it was sent. A parent
    page returns ``{"channel", "ts"}`` as Slack would, so threads behave as in production."""

    def __init__(self, name: str, clock: FakeClock, sink: list[Delivered]) -> None:
        self.name = name
        self._clock = clock
        self._sink = sink

    async def send(self, page: Page) -> Mapping[str, str] | None:
        self._sink.append(Delivered(self._clock.now(), self.name, page))
        if page.thread_ref is not None:
            return None
        return {"channel": page.channel or self.name, "ts": str(len(self._sink))}


@dataclass
class Event:
    """Something that happened to an incident (or the watchdog), at ``at`` seconds from t+0."""

    at: float
    kind: str
    """fired, refired, resolved, escalated, repeat, reopened, muted, unmuted, acknowledged, restart."""
    alert: str = ""
    key: str = ""
    severity: str = ""
    summary: str = ""
    levels: list[str] = field(default_factory=list)
    """Levels this event called (a page, an escalation) or told (notes in their threads)."""
    channels: list[str] = field(default_factory=list)
    muted_by: str = ""
    fresh_store: bool = False
    """A restart over an empty store: the incidents open before it are gone."""

    @property
    def paged(self) -> bool:
        """Someone was called (or, for a re-fire, told in the thread they are already in)."""
        return self.kind in PAGING_EVENTS and bool(self.levels)

    def to_dict(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "kind": self.kind,
            "alert": self.alert,
            "key": self.key,
            "severity": self.severity,
            "summary": self.summary,
            "levels": list(self.levels),
            "channels": list(self.channels),
            "muted_by": self.muted_by,
            "paged": self.paged,
            "fresh_store": self.fresh_store,
        }


@dataclass
class Signal:
    """An SLO engine transition (verbose output): ``at`` from t+0."""

    at: float
    signal: AlertSignal


@dataclass
class Run:
    """What a simulation did."""

    scenario: Scenario
    events: list[Event]
    signals: list[Signal]
    deliveries: list[Delivered]
    evaluations: int
    results: int
    wall_s: float
    t0: float

    def pages(self) -> list[Event]:
        return [e for e in self.events if e.paged]


class _Daemon:
    """One watchdog lifetime between restarts: what ``wiring.wire`` + ``Daemon.start`` build."""

    def __init__(
        self,
        config: WatchdogConfig,
        store: SimStore,
        clock: FakeClock,
        notifiers: Mapping[str, TimelineNotifier],
    ) -> None:
        self.store = store
        self.manager = IncidentManager(config, store, clock)
        self.dispatcher = Dispatcher(store, dict(notifiers), clock, INSTANCE, fallback=FALLBACK_KIND)
        self.engine: SloEngine | None = None
        self._config = config
        self._clock = clock

    async def start(self) -> None:
        await self.dispatcher.release_own_claims()
        if self._config.slos:
            firing = await self.manager.open_slo_incidents()
            self.engine = SloEngine(self._config.slos, self.store, self._clock, firing=firing)

    async def evaluate(self) -> tuple[list[AlertSignal], list[Transition]]:
        """``Daemon.evaluate_alerts`` on the leader (a single replica always is)."""
        signals: list[AlertSignal] = []
        budget_left: dict[str, float] = {}
        if self.engine is not None:
            evaluation = await self.engine.evaluate()
            signals = evaluation.signals
            budget_left = {s.name: s.budget_remaining for s in evaluation.statuses}
        changed = await self.manager.handle_slo_signals(signals, budget_left)
        changed += await self.manager.evaluate_probe_alerts()
        changed += await self.manager.tick()
        return signals, changed

    async def dispatch(self) -> None:
        for _ in range(100):  # a page split per target is delivered within one call; notes may wait
            if not await self.dispatcher.run_once(limit=100):
                return


def latency_edges(config: WatchdogConfig) -> tuple[float, ...]:
    """The store's latency bucket edges, as ``runtime.wiring.latency_edges`` builds them."""
    return tuple(sorted({*LATENCY_BUCKETS_S, *config.latency_thresholds()}))


class Simulation:
    """Runs ``scenario`` against ``config``. ``on_event`` sees every event as it happens, ``on_record`` every
    batch of results as it is recorded (history included): the same series can be fed to another alerting
    system (``bench/detection.py`` runs Prometheus rules over them)."""

    def __init__(
        self,
        scenario: Scenario,
        config: WatchdogConfig,
        on_event: Callable[[Event], None] | None = None,
        on_record: Callable[[Sequence[ProbeResult]], None] | None = None,
    ) -> None:
        self.scenario = scenario
        self.config = config
        self.t0 = scenario.start
        self.clock = FakeClock(self.t0 - scenario.history)
        self.deliveries: list[Delivered] = []
        kinds = {t.type for p in config.escalation for lv in p.levels for t in lv.notify} | {FALLBACK_KIND}
        self.notifiers = {k: TimelineNotifier(k, self.clock, self.deliveries) for k in sorted(kinds)}
        self.events: list[Event] = []
        self.signals: list[Signal] = []
        self._on_event = on_event
        self._on_record = on_record
        self._seen_deliveries = 0
        self.results = 0
        self.evaluations = 0
        self.interval = scenario.evaluation_interval or config.settings.evaluation_interval

    def _new_store(self) -> SimStore:
        retention = self.config.settings.retention
        return SimStore(
            latency_buckets=latency_edges(self.config),
            raw_retention_s=retention.raw,
            minute_retention_s=retention.minutes,
        )

    def _emit(self, event: Event) -> None:
        self.events.append(event)
        if self._on_event is not None:
            self._on_event(event)

    async def run(self) -> Run:
        wall = time.perf_counter()
        scenario, t0 = self.scenario, self.t0
        store = self._new_store()
        series = build_series(scenario, self.config)
        if scenario.history > 0:
            await self._backfill(store, series)
        self.clock.set(t0)
        end = t0 + scenario.duration
        restarts = sorted(scenario.restarts, key=lambda r: r.at)
        daemon = await self._start(store, series, t0)
        pending: list[ProbeResult] = []
        next_eval = t0 + self.interval
        last_prune = t0
        r_index = 0
        while True:
            restart = restarts[r_index] if r_index < len(restarts) else None
            stop_at = t0 + restart.at if restart is not None else end
            if next_eval > stop_at + 1e-9 or next_eval > end + 1e-9:
                if restart is None:
                    break
                daemon = await self._restart(daemon, restart, series, pending, stop_at)
                pending = []
                r_index += 1
                next_eval = self.clock.now() + self.interval
                last_prune = self.clock.now()
                continue
            pending += results_until(series, next_eval, t0)
            ready = [r for r in pending if r.started_at + r.latency_s <= next_eval]
            if ready:
                pending = [r for r in pending if r.started_at + r.latency_s > next_eval]
                self.clock.set(next_eval)
                await self._record(daemon.store, ready)
            self.clock.set(next_eval)
            await self._evaluate(daemon)
            if next_eval - last_prune >= PRUNE_EVERY_S:
                await daemon.store.prune(next_eval)
                last_prune = next_eval
            next_eval += self.interval
        return Run(
            scenario,
            self.events,
            self.signals,
            self.deliveries,
            self.evaluations,
            self.results,
            time.perf_counter() - wall,
            t0,
        )

    async def _restart(
        self, daemon: _Daemon, restart: Restart, series: list[Series], pending: list[ProbeResult], at: float
    ) -> _Daemon:
        """``Daemon.stop`` (running probes finish, the buffer is flushed), ``downtime``, a new daemon over the
        same store or an empty one."""
        t0 = self.t0
        pending = pending + results_until(series, at, t0)
        self.clock.set(max(self.clock.now(), at))
        if pending:
            await self._record(daemon.store, pending)
        for s in series:
            s.stop()
        how = "restart, keeping the state" if restart.keep_state else "restart over an empty store"
        down = f" after {restart.downtime:g} s down" if restart.downtime else ""
        self._emit(Event(restart.at, "restart", summary=how + down, fresh_store=not restart.keep_state))
        begin = at + restart.downtime
        self.clock.set(begin)
        store = daemon.store if restart.keep_state else self._new_store()
        return await self._start(store, series, begin)

    async def _backfill(self, store: SimStore, series: list[Series]) -> None:
        """Healthy history (the profiles at negative times): recorded, never evaluated."""
        start = self.t0 - self.scenario.history
        for s in series:
            s.start(start)
        step = 3600.0
        at = start
        while at < self.t0:
            upto = min(self.t0, at + step)
            batch = results_until(series, upto, self.t0)
            for k in range(0, len(batch), BACKFILL_BATCH):
                await self._record(store, batch[k : k + BACKFILL_BATCH])
            at = upto
        await store.prune(self.t0)

    async def _start(self, store: SimStore, series: list[Series], at: float) -> _Daemon:
        for s in series:
            s.start(at)
        daemon = _Daemon(self.config, store, self.clock, self.notifiers)
        await daemon.start()
        return daemon

    async def _record(self, store: SimStore, results: list[ProbeResult]) -> None:
        results.sort(key=lambda r: r.started_at)
        await store.record(results)
        self.results += len(results)
        if self._on_record is not None:
            self._on_record(results)

    async def _evaluate(self, daemon: _Daemon) -> None:
        self.evaluations += 1
        now = self.clock.now()
        signals, changed = await daemon.evaluate()
        rel = now - self.t0
        self.signals.extend(Signal(rel, s) for s in signals)
        fresh: list[Event] = []
        for transition in changed:
            incident = await daemon.store.get_incident(transition.key)
            data: Mapping[str, Any] = incident.data if incident is not None else {}
            muted = data.get("muted_by")
            summary = str(data.get("summary", ""))
            if transition.event == "resolved":
                summary = str(data.get("resolution") or summary)
            fresh.append(
                Event(
                    rel,
                    transition.event,
                    str(data.get("alert", transition.key)),
                    transition.key,
                    str(data.get("severity", "")),
                    summary,
                    muted_by=str(muted.get("name", "")) if isinstance(muted, dict) else "",
                )
            )
        await daemon.dispatch()
        self._attach(fresh)
        for event in fresh:
            self._emit(event)

    def _attach(self, fresh: list[Event]) -> None:
        """Pages delivered since the last look, onto the events they belong to (same incident and event);
        a page delivered late (a retried send) onto that incident's latest such event."""
        new = self.deliveries[self._seen_deliveries :]
        self._seen_deliveries = len(self.deliveries)
        for d in new:
            page = d.page
            target = next((e for e in reversed(fresh) if e.key == page.key and e.kind == page.event), None)
            if target is None:
                target = next(
                    (e for e in reversed(self.events) if e.key == page.key and e.kind == page.event), None
                )
            if target is None:
                continue
            if page.level not in target.levels:
                target.levels.append(page.level)
            where = f"{d.kind} {page.channel}" if page.channel else d.kind
            if where not in target.channels:
                target.channels.append(where)
            if page.event in CALLING_EVENTS and page.summary and target.kind != "resolved":
                target.summary = page.summary

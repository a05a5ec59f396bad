"""The daemon: probes on a schedule → buffer → store; evaluation and dispatch ticks; HTTP server.

Everything runs in one asyncio event loop: APScheduler's AsyncIOScheduler for the jobs and uvicorn for
/metrics, /healthz and /readyz.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from apscheduler.events import (
    EVENT_JOB_ERROR,
    EVENT_JOB_MAX_INSTANCES,
    EVENT_JOB_SUBMITTED,
    JobEvent,
    JobExecutionEvent,
    JobSubmissionEvent,
)
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from watchdog.config.loader import WatchdogConfig
from watchdog.config.probes import HttpProbeConfig, JourneyProbeConfig, RequestSpec
from watchdog.core.clock import Clock, SystemClock
from watchdog.core.results import Outcome, ProbeResult
from watchdog.incidents.manager import AlertManager
from watchdog.notify.dispatch import Dispatcher
from watchdog.notify.log import LogNotifier
from watchdog.probes.base import Probe
from watchdog.probes.registry import ProbeBuilder
from watchdog.runtime.buffer import ResultBuffer
from watchdog.store.base import LATENCY_BUCKETS_S, StateStore, StoreUnavailable
from watchdog.web.metrics import ProbeMetrics, StoreSnapshotCollector, build_registry

if TYPE_CHECKING:
    from watchdog.slo.engine import SloEngine

_log = logging.getLogger("watchdog.runtime.daemon")


def latency_edges(config: WatchdogConfig) -> tuple[float, ...]:
    """The store's and /metrics' latency bucket edges: the defaults plus every latency threshold the
    config names, so "ratio under threshold" SLIs are exact."""
    edges = set(LATENCY_BUCKETS_S)
    for slo in config.slos:
        threshold = getattr(slo.sli, "threshold", None)
        if isinstance(threshold, float):
            edges.add(threshold)
    for probe in config.probes:
        requests: list[RequestSpec] = []
        if isinstance(probe, HttpProbeConfig):
            requests.append(probe)
        elif isinstance(probe, JourneyProbeConfig):
            requests.extend(probe.steps)
        for request in requests:
            for value in (request.expect.max_latency, request.degraded_when.latency_over):
                if value is not None and value > 0:
                    edges.add(value)
    return tuple(sorted(edges))


def default_instance_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class Daemon:
    def __init__(
        self,
        config: WatchdogConfig,
        store: StateStore,
        *,
        clock: Clock | None = None,
        probes: Sequence[Probe] | None = None,
        instance: str | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.clock = clock or SystemClock()
        self.instance = instance or config.settings.instance or default_instance_name()
        defaults = config.settings.defaults
        self._builder = ProbeBuilder(defaults=defaults, clock=self.clock)
        self.probes: list[Probe] = (
            list(probes) if probes is not None else self._builder.build_all(config.enabled_probes())
        )
        self.registry, self.probe_metrics, self.snapshot = build_registry(latency_edges(config))
        self.buffer = ResultBuffer(store, on_recorded=self.probe_metrics.on_recorded)
        self.scheduler = AsyncIOScheduler(timezone=UTC)
        self.slo_engine: SloEngine | None = None
        self.alerts = AlertManager(config, store, self.clock)
        self.log_notifier = LogNotifier()
        self.dispatcher = Dispatcher(store, {"log": self.log_notifier}, self.clock, self.instance)
        self.is_leader = False
        self.started_at = 0.0
        self._last_outcome: dict[tuple[str, tuple[tuple[str, str], ...]], Outcome] = {}
        self._running: set[asyncio.Task[None]] = set()
        self._due: dict[str, datetime] = {}
        """Probe name → when its submitted run was due (its scheduled time)."""
        self.runs_completed = 0
        self._stopped = False

    # -- lifecycle -----------------------------------------------------------------------------------
    async def start(self) -> None:
        await self.store.open()
        self.started_at = self.clock.now()
        if self.config.slos:
            from watchdog.slo.engine import SloEngine
            from watchdog.web.slo_metrics import SloCollector

            # Incidents still firing from before a restart resolve normally instead of being forgotten.
            firing = await self.alerts.open_slo_incidents()
            self.slo_engine = SloEngine(self.config.slos, self.store, self.clock, firing=firing)
            self.registry.register(SloCollector(self.slo_engine))
        self.scheduler.add_listener(self._on_submitted, EVENT_JOB_SUBMITTED)
        self.scheduler.add_listener(self._on_skipped, EVENT_JOB_MAX_INSTANCES)
        self.scheduler.add_listener(self._on_job_error, EVENT_JOB_ERROR)
        jitter = self.config.settings.defaults.jitter
        now = datetime.now(UTC)
        for probe in self.probes:
            # A fixed random phase per probe spreads runs (and a restart) without drifting the interval.
            spread = probe.interval_s if jitter is None else min(jitter, probe.interval_s)
            first = now + timedelta(seconds=random.uniform(0, spread))
            self.scheduler.add_job(
                self._run_probe,
                IntervalTrigger(seconds=probe.interval_s, start_date=first, timezone=UTC),
                args=[probe],
                id=f"probe:{probe.name}",
                name=probe.name,
                max_instances=1,
                coalesce=True,
                misfire_grace_time=max(1, int(probe.interval_s)),
                next_run_time=first,
            )
        settings = self.config.settings
        self.scheduler.add_job(
            self._flush,
            IntervalTrigger(seconds=settings.flush_interval),
            id="flush",
            max_instances=1,
            coalesce=True,
        )
        self.scheduler.add_job(
            self._evaluate,
            IntervalTrigger(seconds=settings.evaluation_interval),
            id="evaluate",
            max_instances=1,
            coalesce=True,
        )
        self.scheduler.add_job(
            self._dispatch,
            IntervalTrigger(seconds=1),
            id="dispatch",
            max_instances=1,
            coalesce=True,
        )
        self.scheduler.add_job(
            self._prune,
            IntervalTrigger(minutes=10),
            id="prune",
            max_instances=1,
            coalesce=True,
        )
        self.scheduler.start()
        _log.info(
            "watchdog started with %d probes",
            len(self.probes),
            extra={"instance": self.instance, "probes": [p.name for p in self.probes]},
        )

    async def stop(self, drain_timeout_s: float = 5.0) -> None:
        """Stop scheduling, let running probes finish (bounded), write what is buffered, close.
        Calling it again is a no-op."""
        if self._stopped:
            return
        self._stopped = True
        # Pause first: shutdown() would cancel running probes; they get drain_timeout_s to finish.
        if self.scheduler.running:
            self.scheduler.pause()
        running = [t for t in self._running if not t.done()]
        if running:
            _done, pending = await asyncio.wait(running, timeout=drain_timeout_s)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        await self.buffer.flush()
        if self.buffer.pending:
            _log.error("exiting with %d results not written: store unreachable", self.buffer.pending)
        await self.close_probes()
        if self.is_leader:
            with contextlib.suppress(StoreUnavailable):
                await self.store.release_lease("leader", self.instance)
        await self.store.close()
        _log.info("watchdog stopped", extra={"runs_completed": self.runs_completed})

    async def close_probes(self) -> None:
        for probe in self.probes:
            try:
                await probe.aclose()
            except Exception as exc:  # closing is best effort; keep closing the others
                _log.warning("closing probe %s failed: %s", probe.name, exc)
        await self._builder.aclose()

    # -- jobs ------------------------------------------------------------------------------------------
    async def _run_probe(self, probe: Probe) -> None:
        task = asyncio.current_task()
        assert task is not None
        due = self._due.pop(probe.name, None)
        if due is not None:
            lag = (datetime.now(UTC) - due).total_seconds()
            self.probe_metrics.scheduler_lag.observe(max(0.0, lag))
        self._running.add(task)
        try:
            results = await self.run_probe_once(probe)
            self.buffer.add(results)
            self._log_changes(results)
            self.runs_completed += 1
        finally:
            self._running.discard(task)

    async def run_probe_once(self, probe: Probe) -> Sequence[ProbeResult]:
        """Run a probe, bounded by its timeout; whatever goes wrong becomes a failed result."""
        started = self.clock.now()
        try:
            async with asyncio.timeout(probe.timeout_s + 2.0):
                return await probe.run()
        except TimeoutError:
            reason = f"probe did not finish within its timeout ({probe.timeout_s:g} s)"
        except Exception as exc:
            reason = f"probe raised {type(exc).__name__}: {exc}"
        return [
            ProbeResult(
                probe=probe.name,
                kind=probe.kind,
                target="",
                outcome=Outcome.FAILED,
                latency_s=max(0.0, self.clock.now() - started),
                started_at=started,
                reason=reason,
            )
        ]

    def _log_changes(self, results: Sequence[ProbeResult]) -> None:
        for r in results:
            key = (r.probe, tuple(sorted(r.labels.items())))
            previous = self._last_outcome.get(key)
            self._last_outcome[key] = r.outcome
            if previous is r.outcome:
                continue
            level = logging.INFO if r.outcome is Outcome.OK else logging.WARNING
            _log.log(
                level,
                "probe %s%s is %s%s",
                r.probe,
                "".join(f" {k}={v}" for k, v in sorted(r.labels.items())),
                r.outcome.value,
                f": {r.reason}" if r.reason else "",
                extra={
                    "probe": r.probe,
                    "labels": dict(r.labels),
                    "outcome": r.outcome.value,
                    "previous": previous.value if previous else None,
                    "latency_ms": round(r.latency_s * 1000, 2),
                },
            )

    async def _flush(self) -> None:
        dropped_before = self.buffer.dropped
        await self.buffer.flush()
        if self.buffer.dropped > dropped_before:
            self.probe_metrics.results_dropped.inc(self.buffer.dropped - dropped_before)

    async def _evaluate(self) -> None:
        await self._renew_leadership()
        try:
            await self.evaluate_alerts()
        except StoreUnavailable as exc:
            _log.warning("alert evaluation skipped, store unavailable: %s", exc)

    async def evaluate_alerts(self) -> None:
        """SLOs are evaluated on every replica (each serves /metrics); only the leader turns signals into
        incidents, and even two would not double-page: transitions are compare-and-set."""
        signals = []
        if self.slo_engine is not None:
            evaluation = await self.slo_engine.evaluate()
            signals = evaluation.signals
            for signal in signals:
                _log.warning(
                    "SLO %s %s %s: %s",
                    signal.slo,
                    signal.severity,
                    signal.state,
                    signal.summary,
                    extra={"slo": signal.slo, "signal": signal.to_dict()},
                )
        if not self.is_leader:
            return
        await self.alerts.handle_slo_signals(signals)
        await self.alerts.evaluate_probe_alerts()

    async def _dispatch(self) -> None:
        try:
            await self.dispatcher.run_once()
        except StoreUnavailable as exc:
            _log.warning("dispatch skipped, store unavailable: %s", exc)

    async def _renew_leadership(self) -> None:
        ttl = max(15.0, self.config.settings.evaluation_interval * 3)
        try:
            lease = await self.store.acquire_lease("leader", self.instance, ttl, self.clock.now())
        except StoreUnavailable:
            self.is_leader = False
            return
        was_leader = self.is_leader
        self.is_leader = lease is not None
        if self.is_leader != was_leader:
            _log.info(
                "leadership %s", "acquired" if self.is_leader else "lost", extra={"instance": self.instance}
            )

    async def _prune(self) -> None:
        try:
            removed = await self.store.prune(self.clock.now())
        except StoreUnavailable as exc:
            _log.warning("prune skipped: %s", exc)
            return
        if removed:
            _log.info("pruned %d old rows", removed)

    # -- scheduler events ------------------------------------------------------------------------------
    def _on_submitted(self, event: JobEvent) -> None:
        # Only note when the run was due: the lag is observed when the probe's coroutine really starts
        # (_run_probe), so time spent waiting for a busy event loop after submission counts too.
        if (
            isinstance(event, JobSubmissionEvent)
            and event.job_id.startswith("probe:")
            and event.scheduled_run_times
        ):
            self._due[event.job_id.removeprefix("probe:")] = event.scheduled_run_times[-1]

    def _on_skipped(self, event: JobEvent) -> None:
        if event.job_id.startswith("probe:"):
            probe = event.job_id.removeprefix("probe:")
            self.probe_metrics.runs_skipped.labels(probe=probe).inc()
            _log.warning(
                "probe %s still running at its next start: run skipped", probe, extra={"probe": probe}
            )

    def _on_job_error(self, event: JobEvent) -> None:
        # Jobs catch their own errors; this is the last line so the scheduler never dies silently.
        if isinstance(event, JobExecutionEvent):
            _log.error("job %s raised %r", event.job_id, event.exception)

    # -- state for /readyz and /metrics ------------------------------------------------------------------
    async def readiness(self) -> dict[str, object]:
        store_ok = True
        error = ""
        try:
            await self.store.ping()
        except StoreUnavailable as exc:
            store_ok, error = False, str(exc)
        return {
            "ready": store_ok and self.scheduler.running,
            "store": {"ok": store_ok, "error": error, "pending_results": self.buffer.pending},
            "scheduler": {"running": self.scheduler.running, "jobs": len(self.scheduler.get_jobs())},
            "leader": self.is_leader,
            "instance": self.instance,
        }

    async def refresh_snapshot(self, snapshot: StoreSnapshotCollector) -> None:
        try:
            latest = await self.store.latest()
            store_up = True
        except StoreUnavailable:
            latest, store_up = [], False
        snapshot.update(
            latest,
            store_up,
            {
                "results_pending": float(self.buffer.pending),
                "leader": 1.0 if self.is_leader else 0.0,
                "scheduler_running": 1.0 if self.scheduler.running else 0.0,
                "start_time_seconds": self.started_at,
            },
        )

    @property
    def metrics(self) -> ProbeMetrics:
        return self.probe_metrics

"""``PostgresProbe``: every check family against one database, over one reused connection."""

from __future__ import annotations

import asyncio
import statistics
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from watchdog.config.gcp import GoogleCloud
from watchdog.config.postgres import ALL_FAMILIES, HostMetrics, PostgresProbeConfig
from watchdog.config.settings import ProbeDefaults
from watchdog.core.clock import Clock
from watchdog.core.durations import human_duration
from watchdog.core.results import Observation, Outcome, ProbeResult
from watchdog.probes.postgres._connect import (
    ConnectTarget,
    DsnError,
    MonitoredConnection,
    describe_error,
    is_connection_error,
    resolve_target,
)
from watchdog.probes.postgres._report import Cycle, FamilyReport, ProbeMemory, Verdict
from watchdog.probes.postgres.activity import check_connections, check_locks, check_queries
from watchdog.probes.postgres.host import check_host
from watchdog.probes.postgres.server import check_replication, check_vitals
from watchdog.sources.base import MetricSource
from watchdog.sources.registry import build_source

FamilyFn = Callable[[Cycle], Awaitable[FamilyReport]]


@dataclass
class InspectReport:
    """Everything ``watchdog db inspect`` shows: one report per family, with structured details."""

    target: str
    started_at: float
    families: list[FamilyReport]
    session: dict[str, Any] = field(default_factory=dict)

    @property
    def outcome(self) -> Outcome:
        worst = Outcome.OK
        for f in self.families:
            if f.outcome.severity > worst.severity:
                worst = f.outcome
        return worst

    def family(self, name: str) -> FamilyReport | None:
        return next((f for f in self.families if f.family == name), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "started_at": self.started_at,
            "outcome": self.outcome.value,
            "session": self.session,
            "checks": {
                f.family: {
                    "outcome": f.outcome.value,
                    "reason": f.reason,
                    "latency_s": round(f.latency_s, 6),
                    "observations": [
                        {"name": o.name, "labels": dict(o.labels), "value": o.value} for o in f.observations
                    ],
                    "details": f.details,
                }
                for f in self.families
            },
        }


class PostgresProbe:
    """Implements the Probe protocol. ``run`` returns one result per check family, labelled
    ``check=<family>``; it never raises and never holds more than one connection to the database."""

    kind = "postgres"

    def __init__(
        self,
        config: PostgresProbeConfig,
        *,
        defaults: ProbeDefaults,
        clock: Clock,
        metric_source: MetricSource | None = None,
        env: Mapping[str, str] | None = None,
        google_cloud: GoogleCloud | None = None,
    ) -> None:
        self.config = config
        self.name = config.name
        self.interval_s = config.interval or defaults.interval
        self.timeout_s = config.timeout or defaults.timeout
        self.clock = clock
        self._labels = dict(config.labels)
        self._memory = ProbeMemory()
        self._config_error: str | None = None
        self.target: ConnectTarget | None = None
        try:
            self.target = resolve_target(
                dsn=config.dsn,
                dsn_env=config.dsn_env,
                env_prefix=config.env_prefix,
                sslmode=config.sslmode,
                env=env,
            )
        except DsnError as exc:
            self._config_error = f"connection settings: {exc}"
        statement_timeout = min(config.statement_timeout, self.timeout_s * 0.8)
        self._conn: MonitoredConnection | None = None
        if self.target is not None:
            self._conn = MonitoredConnection(
                self.target,
                application_name=config.application_name,
                connect_timeout_s=min(config.connect_timeout, self.timeout_s),
                statement_timeout_s=statement_timeout,
                lock_timeout_s=config.lock_timeout,
            )
        self._owns_source = False
        self.metric_source = metric_source
        if metric_source is None and config.host_metrics is not None and "host" in config.checks:
            self.metric_source = build_source(config.host_metrics, google_cloud)
            self._owns_source = True
        self._db_families: list[tuple[str, FamilyFn]] = []
        table: dict[str, FamilyFn] = {
            "connections": lambda c: check_connections(c, config.connections),
            "queries": lambda c: check_queries(c, config.queries),
            "locks": lambda c: check_locks(c, config.locks),
            "replication": lambda c: check_replication(c, config.replication),
            "vitals": lambda c: check_vitals(c, config.vitals),
        }
        for family in ALL_FAMILIES:
            if family in table and family in config.checks:
                self._db_families.append((family, table[family]))
        self.host_enabled = self.metric_source is not None and "host" in config.checks

    # ------------------------------------------------------------------------------------------------

    @property
    def target_display(self) -> str:
        return self.target.display() if self.target is not None else "(unconfigured)"

    @property
    def families(self) -> list[str]:
        return ["connectivity", *(f for f, _ in self._db_families), *(["host"] if self.host_enabled else [])]

    async def run(self) -> Sequence[ProbeResult]:
        started = self.clock.now()
        try:
            reports = await self._cycle(inspect=False)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug must not kill the scheduler job; say what happened
            reason = f"internal error in the postgres probe: {type(exc).__name__}: {exc}"
            if self.target is not None:
                reason = self.target.scrub(reason)
            reports = [FamilyReport(f, Outcome.FAILED, reason) for f in self.families]
        return [self._result(r, started) for r in reports]

    async def inspect(self) -> InspectReport:
        """Run every family once, now, keeping the details (query text, sessions, standbys)."""
        started = self.clock.now()
        reports = await self._cycle(inspect=True)
        session: dict[str, Any] = {}
        if self._conn is not None and self._conn.session is not None:
            s = self._conn.session
            session = {
                "user": s.user,
                "superuser": s.superuser,
                "pg_monitor": s.monitor,
                "read_all_stats": s.read_all_stats,
                "server_version_num": s.server_version_num,
                "database": s.database,
            }
        return InspectReport(self.target_display, started, reports, session)

    async def aclose(self) -> None:
        if self._conn is not None:
            await self._conn.aclose()
        if self._owns_source and self.metric_source is not None:
            await self.metric_source.aclose()

    @property
    def connection(self) -> MonitoredConnection | None:
        return self._conn

    # ------------------------------------------------------------------------------------------------

    def _result(self, report: FamilyReport, started: float) -> ProbeResult:
        return ProbeResult(
            probe=self.name,
            kind=self.kind,
            target=self.target_display,
            outcome=report.outcome,
            latency_s=report.latency_s,
            started_at=started,
            reason=report.reason,
            labels={**self._labels, "check": report.family},
            observations=tuple(report.observations),
        )

    def _db_names(self) -> list[str]:
        return ["connectivity", *(f for f, _ in self._db_families)]

    async def _cycle(self, *, inspect: bool) -> list[FamilyReport]:
        if self._conn is None:
            reason = self._config_error or "no connection settings"
            return [FamilyReport(f, Outcome.FAILED, reason) for f in self.families]
        if self._conn.lock.locked():
            # Never queue behind a stuck run: that is how checks and connections pile up on a hung database.
            reason = (
                "skipped: the previous run against this database is still in progress "
                "(database slow or hung); "
                "no second connection is opened"
            )
            return [FamilyReport(f, Outcome.FAILED, reason) for f in self.families]
        async with self._conn.lock:
            host_task = asyncio.create_task(self._host()) if self.host_enabled else None
            try:
                reports = await self._db_cycle(self._conn, inspect=inspect)
            except BaseException:
                if host_task is not None:
                    host_task.cancel()
                raise
            if host_task is not None:
                reports.append(await host_task)
        return reports

    async def _host(self) -> FamilyReport:
        assert self.metric_source is not None
        cfg = self.config.host_metrics or HostMetrics(source="proc")
        t0 = self.clock.monotonic()
        try:
            async with asyncio.timeout(min(self.timeout_s, cfg.timeout + 0.5)):
                report = await check_host(self.metric_source, cfg, self.clock.now())
        except TimeoutError:
            report = FamilyReport(
                "host",
                Outcome.FAILED,
                f"{self.metric_source.name} source did not answer within {cfg.timeout:g}s",
            )
        except Exception as exc:
            report = FamilyReport("host", Outcome.FAILED, f"{self.metric_source.name} source: {exc}")
        report.latency_s = self.clock.monotonic() - t0
        return report

    async def _db_cycle(self, conn: MonitoredConnection, *, inspect: bool) -> list[FamilyReport]:
        assert self.target is not None
        reports: list[FamilyReport] = []
        pending = self._db_names()
        current = "connectivity"
        family_started = self.clock.monotonic()
        budget = asyncio.timeout(self.timeout_s)
        try:
            async with budget:
                connectivity, cycle = await self._connectivity(conn, inspect)
                connectivity.latency_s = connectivity.latency_s or (self.clock.monotonic() - family_started)
                reports.append(connectivity)
                pending.remove("connectivity")
                if cycle is None:
                    return reports + [
                        FamilyReport(f, Outcome.FAILED, f"not checked: {connectivity.reason}")
                        for f in pending
                    ]
                for family, fn in self._db_families:
                    current, family_started = family, self.clock.monotonic()
                    try:
                        report = await fn(cycle)
                    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
                        if is_connection_error(exc):
                            raise
                        report = self._family_error(family, exc)
                    report.latency_s = self.clock.monotonic() - family_started
                    reports.append(report)
                    pending.remove(family)
        except TimeoutError:
            if not budget.expired():
                raise
            conn.discard()
            reason = (
                f"timed out: no answer within the run's budget of {human_duration(self.timeout_s)} "
                "(database hung or overloaded); connection dropped"
            )
            reports.append(
                FamilyReport(
                    current,
                    Outcome.FAILED,
                    reason,
                    [Observation("pg_up", 0.0)] if current == "connectivity" else [],
                    latency_s=self.clock.monotonic() - family_started,
                )
            )
            pending = [f for f in pending if f != current]
            reports += [FamilyReport(f, Outcome.FAILED, "not checked: the run timed out") for f in pending]
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            conn.discard()
            reason = describe_error(exc, self.target)
            lost = [Observation("pg_up", 0.0)] if current == "connectivity" else []
            reports.append(FamilyReport(current, Outcome.FAILED, reason, lost))
            pending = [f for f in pending if f != current]
            reports += [FamilyReport(f, Outcome.FAILED, f"not checked: {reason}") for f in pending]
        return reports

    def _family_error(self, family: str, exc: BaseException) -> FamilyReport:
        assert self.target is not None
        reason = describe_error(exc, self.target)
        if isinstance(exc, asyncpg.InsufficientPrivilegeError):
            return FamilyReport(
                family,
                Outcome.DEGRADED,
                f"cannot check {family}: {reason} — the checks need pg_monitor "
                f"(GRANT pg_monitor TO {self.target.user})",
            )
        return FamilyReport(family, Outcome.FAILED, f"{family} check failed: {reason}")

    async def _connectivity(
        self, conn: MonitoredConnection, inspect: bool
    ) -> tuple[FamilyReport, Cycle | None]:
        assert self.target is not None
        cfg = self.config
        obs: list[Observation] = []
        t0 = self.clock.monotonic()
        try:
            fresh = await conn.ensure()
        except (TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            conn.discard()
            reason = describe_error(exc, self.target, timeout_s=conn.connect_timeout_s)
            elapsed = self.clock.monotonic() - t0
            return FamilyReport(
                "connectivity", Outcome.FAILED, reason, [Observation("pg_up", 0.0)], latency_s=elapsed
            ), None
        if fresh:
            obs.append(Observation("pg_connect_seconds", self.clock.monotonic() - t0))
        pg = conn.connection
        session = conn.session
        assert session is not None
        t1 = self.clock.monotonic()
        await pg.execute("SELECT 1")  # simple protocol: exactly one round trip
        rtt = self.clock.monotonic() - t1
        in_recovery = bool(await pg.fetchval("SELECT pg_is_in_recovery()"))
        v = Verdict()
        t2 = self.clock.monotonic()
        canary_error: str | None = None
        try:
            await pg.fetch(cfg.query)
        except asyncpg.PostgresError as exc:
            if is_connection_error(exc):
                raise
            canary_error = describe_error(exc, self.target)
        latency = self.clock.monotonic() - t2
        obs += [
            Observation("pg_up", 1.0),
            Observation("pg_rtt_seconds", rtt),
            Observation("pg_query_latency_seconds", latency),
        ]
        if canary_error is not None:
            v.fail(f"canary query failed: {canary_error}")
        elif latency > cfg.slow_query:
            v.degrade(f"canary query took {human_duration(latency)} (> {human_duration(cfg.slow_query)})")
        rtts = self._memory.rtts
        rtts.append(rtt)
        recent = list(rtts)[-cfg.region_rtt_runs :]
        if len(recent) >= cfg.region_rtt_runs and min(recent) > cfg.region_rtt:
            v.degrade(
                f"round-trip time {human_duration(statistics.median(recent))} sustained over the last "
                f"{len(recent)} runs "
                f"(> {human_duration(cfg.region_rtt)}): typical of a database in another region than this "
                "client; "
                "put the application and Cloud SQL in the same region and connect over the Unix socket"
            )
        summary = (
            f"{'replica' if in_recovery else 'primary'} reachable as {session.user}; "
            f"query {human_duration(latency)}, round trip {human_duration(rtt)}"
        )
        details = {
            "role": "replica" if in_recovery else "primary",
            "user": session.user,
            "pg_monitor": session.monitor,
            "server_version_num": session.server_version_num,
            "query_latency_s": latency,
            "rtt_s": rtt,
            "new_connection": fresh,
            "rtt_recent_median_s": statistics.median(recent),
        }
        report = v.report("connectivity", summary, obs, details)
        report.latency_s = latency
        cycle = Cycle(conn=pg, session=session, in_recovery=in_recovery, memory=self._memory, inspect=inspect)
        return report, cycle

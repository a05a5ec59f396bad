"""What one check family returns, how problems become an outcome, and the per-run context."""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from watchdog.core.results import Observation, Outcome
from watchdog.probes.postgres._connect import SessionInfo


@dataclass
class FamilyReport:
    family: str
    outcome: Outcome
    reason: str
    observations: list[Observation] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    """Structured findings for ``watchdog db inspect`` (JSON-serialisable)."""
    latency_s: float = 0.0


class Verdict:
    """Collects problems; the worst decides the outcome and all of them, worst first, make the reason."""

    def __init__(self) -> None:
        self._problems: list[tuple[Outcome, str]] = []

    def degrade(self, message: str) -> None:
        self._problems.append((Outcome.DEGRADED, message))

    def fail(self, message: str) -> None:
        self._problems.append((Outcome.FAILED, message))

    def threshold(self, value: float | None, warn: float | None, fail: float | None, message: str) -> None:
        """``value >= fail`` fails, ``>= warn`` degrades; ``message`` may use ``{value}``."""
        if value is None:
            return
        if fail is not None and value >= fail:
            self.fail(message)
        elif warn is not None and value >= warn:
            self.degrade(message)

    @property
    def outcome(self) -> Outcome:
        worst = Outcome.OK
        for outcome, _ in self._problems:
            if outcome.severity > worst.severity:
                worst = outcome
        return worst

    def reason(self, ok_summary: str) -> str:
        if not self._problems:
            return ok_summary
        ordered = sorted(self._problems, key=lambda p: -p[0].severity)
        return "; ".join(message for _, message in ordered)

    def report(
        self,
        family: str,
        ok_summary: str,
        observations: list[Observation],
        details: dict[str, Any],
    ) -> FamilyReport:
        return FamilyReport(family, self.outcome, self.reason(ok_summary), observations, details)


NO_MONITOR_HINT = "GRANT pg_monitor TO {user}"


def privilege_note(session: SessionInfo, what: str) -> str:
    return (
        f"role {session.user!r} lacks pg_monitor: {what} are hidden "
        f"({NO_MONITOR_HINT.format(user=session.user)})"
    )


@dataclass
class ProbeMemory:
    """What the probe keeps between runs (deltas need the previous cycle)."""

    rtts: deque[float] = field(default_factory=lambda: deque(maxlen=100))
    stat_database: dict[str, float] | None = None
    statements: dict[tuple[int, int, int], tuple[float, float]] | None = None
    """(queryid, userid, dbid) → (calls, total_exec_time ms) at the previous run."""
    statement_texts: dict[int, str] = field(default_factory=dict)
    archiver_failed: float | None = None
    server_pid: int | None = None
    """Backend pid of our session: a new one after a reconnect resets nothing, but a different server
    (failover) makes counters incomparable; the stats_reset column guards that."""


_STAT_DATABASE = """
SELECT coalesce(sum(xact_commit), 0)::float8, coalesce(sum(xact_rollback), 0)::float8,
       coalesce(sum(blks_read), 0)::float8, coalesce(sum(blks_hit), 0)::float8,
       coalesce(sum(temp_files), 0)::float8, coalesce(sum(temp_bytes), 0)::float8,
       coalesce(sum(deadlocks), 0)::float8, coalesce(sum(conflicts), 0)::float8,
       coalesce(extract(epoch FROM max(stats_reset)), 0)::float8
FROM pg_stat_database
"""
_STAT_KEYS = (
    "xact_commit",
    "xact_rollback",
    "blks_read",
    "blks_hit",
    "temp_files",
    "temp_bytes",
    "deadlocks",
    "conflicts",
    "stats_reset",
)


@dataclass
class Cycle:
    """One run against one connection."""

    conn: Any
    session: SessionInfo
    in_recovery: bool
    memory: ProbeMemory
    inspect: bool = False
    _stat_db: dict[str, float] | None = None
    _stat_db_prev: dict[str, float] | None = None

    async def stat_database(self) -> tuple[dict[str, float], dict[str, float] | None]:
        """Cluster-wide pg_stat_database sums now, and at the previous run (None on the first run or after a
        statistics reset). Fetched once per run and shared by the families that need it."""
        if self._stat_db is None:
            row = await self.conn.fetchrow(_STAT_DATABASE)
            current = {key: float(row[i]) for i, key in enumerate(_STAT_KEYS)}
            previous = self.memory.stat_database
            if previous is not None and (
                previous["stats_reset"] != current["stats_reset"]
                or any(current[k] < previous[k] for k in _STAT_KEYS)
            ):
                previous = None
            self._stat_db, self._stat_db_prev = current, previous
            self.memory.stat_database = current
        return self._stat_db, self._stat_db_prev


def delta(current: Mapping[str, float], previous: Mapping[str, float] | None, key: str) -> float | None:
    if previous is None:
        return None
    return current[key] - previous[key]


def fmt_bytes(n: float) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"

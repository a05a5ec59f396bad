"""PostgreSQL health checks (probe kind ``postgres``): connectivity and query latency, connections, slow work,
locks, replication, vitals, and host CPU/memory through a MetricSource. See ``PostgresProbe``."""

from __future__ import annotations

from watchdog.probes.postgres._connect import (
    ConnectTarget,
    DsnError,
    parse_dsn,
    resolve_target,
    target_from_env,
)
from watchdog.probes.postgres._report import FamilyReport
from watchdog.probes.postgres.probe import InspectReport, PostgresProbe

__all__ = [
    "ConnectTarget",
    "DsnError",
    "FamilyReport",
    "InspectReport",
    "PostgresProbe",
    "parse_dsn",
    "resolve_target",
    "target_from_env",
]

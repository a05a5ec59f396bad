"""PostgreSQL probe instances (kind ``postgres``): one database target, several check families.

Every family yields one result per run labelled ``check=<family>``; the thresholds below turn numbers into
``degraded``/``failed``. Defaults follow the target service's SLOs (query P95 < 50 ms, DB CPU < 80 %,
memory < 70 %) and common practice for the rest.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from watchdog.config.types import Duration, Name, PositiveDuration

CheckFamily = Literal["connectivity", "connections", "queries", "locks", "replication", "vitals", "host"]
ALL_FAMILIES: tuple[CheckFamily, ...] = (
    "connectivity",
    "connections",
    "queries",
    "locks",
    "replication",
    "vitals",
    "host",
)

SslMode = Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ConnectionThresholds(_Strict):
    """Connection slots: usage is client backends in use ÷ (max_connections − reserved slots)."""

    warn_ratio: float = Field(default=0.8, gt=0, le=1.5)
    fail_ratio: float = Field(default=0.95, gt=0, le=1.5)
    idle_in_transaction: Duration = 60.0
    """A session idle inside a transaction for longer than this degrades (it holds locks and snapshots)."""
    app_instances: int | None = Field(default=None, ge=1)
    """Headroom forecast: the service's maximum instance count (Cloud Run max instances) ..."""
    pool_max: int | None = Field(default=None, ge=1)
    """... times its per-instance pool size, compared with the slots available (10 × 20 against 50
    degrades)."""
    other_clients: int = Field(default=0, ge=0)
    """Connections other clients (migrations, admin tools, this watchdog) need on top of the pools."""
    top: int = Field(default=10, ge=1, le=100)
    """Connections are broken down by the ``top`` busiest application names and users (the rest:
    ``other``)."""

    @model_validator(mode="after")
    def _ordered(self) -> ConnectionThresholds:
        if self.fail_ratio < self.warn_ratio:
            raise ValueError("fail_ratio must be at least warn_ratio")
        if (self.app_instances is None) != (self.pool_max is None):
            raise ValueError("give both app_instances and pool_max for the headroom forecast, or neither")
        return self


class QueryThresholds(_Strict):
    long_query: Duration = 10.0
    """An active query running longer than this degrades ..."""
    long_query_fail: Duration | None = 300.0
    """... and longer than this fails (None: never)."""
    top_statements: int = Field(default=5, ge=0, le=50)
    """Top-N statements by total and by mean time since the previous run (pg_stat_statements; 0 disables)."""
    rollback_ratio_warn: float = Field(default=0.2, ge=0, le=1)
    """Rolled-back ÷ finished transactions since the previous run, over at least ``min_transactions``."""
    min_transactions: int = Field(default=100, ge=1)
    temp_bytes_warn: int | None = Field(default=None, ge=0)
    """Temporary file bytes written since the previous run that degrade (None: report only)."""


class LockThresholds(_Strict):
    blocked_warn: Duration = 5.0
    """A session waiting on a lock held by another for longer than this degrades ..."""
    blocked_fail: Duration | None = 60.0
    """... and longer than this fails."""
    deadlocks_degrade: bool = True
    """New deadlocks since the previous run degrade."""


class ReplicationThresholds(_Strict):
    lag_warn: Duration = 10.0
    """Replay lag (on a primary: each standby's replay_lag; on a replica: replay delay) that degrades ..."""
    lag_fail: Duration | None = 60.0
    """... and that fails."""
    bytes_warn: int | None = Field(default=256 * 1024 * 1024, ge=0)
    """Replay byte lag that degrades (None: report only)."""
    expected_standbys: int | None = Field(default=None, ge=0)
    """On a primary, fewer streaming standbys than this fails (None: no expectation)."""
    slot_retained_warn: int = Field(default=1024 * 1024 * 1024, ge=0)
    """An inactive replication slot retaining more WAL than this degrades (it fills the disk)."""
    replay_paused_degrade: bool = True


class VitalsThresholds(_Strict):
    cache_hit_warn: float = Field(default=0.9, ge=0, le=1)
    """Buffer cache hit ratio since the previous run below this degrades, over at least ``min_blocks``."""
    min_blocks: int = Field(default=1000, ge=1)
    xid_age_warn: int = Field(default=1_000_000_000, ge=0)
    """Transaction-ID age of the oldest database (wraparound at about 2.1 billion) that degrades ..."""
    xid_age_fail: int = Field(default=1_600_000_000, ge=0)
    archive_max_age: Duration | None = None
    """With archiving on: the last successful WAL archive older than this degrades (backup freshness)."""


class HostMetrics(_Strict):
    """Where CPU and memory of the database host come from (a MetricSource)."""

    source: Literal["proc", "prometheus", "cloud_monitoring"]
    """``proc``: this host's /proc (the database runs here). ``prometheus``: an HTTP API query.
    ``cloud_monitoring``: Cloud SQL's metrics in Cloud Monitoring (needs ``google_cloud`` in
    watchdog.yaml)."""
    url: str | None = None
    """Prometheus base URL (``http://prometheus:9090``) for ``source: prometheus``."""
    cloud_sql_instance: str = ""
    """``cloud_monitoring``: the instance (``PROJECT:REGION:INSTANCE``) the default queries read; default
    ``google_cloud.cloud_sql_instance``."""
    cpu_query: str | None = None
    """Source-native query returning one number in percent. Defaults: ``cpu_percent`` (proc), a
    node_exporter PromQL expression (prometheus) or ``cloudsql:cpu_percent`` (cloud_monitoring: the
    instance's ``database/cpu/utilization`` in percent)."""
    memory_query: str | None = None
    cpu_warn: float = 80.0
    cpu_fail: float | None = 95.0
    memory_warn: float = 70.0
    memory_fail: float | None = 90.0
    timeout: PositiveDuration = 3.0

    @model_validator(mode="after")
    def _url(self) -> HostMetrics:
        if self.source == "prometheus" and not self.url:
            raise ValueError("source: prometheus needs url")
        return self


class PostgresProbeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["postgres"]
    name: Name
    description: str = ""
    interval: PositiveDuration | None = None
    timeout: PositiveDuration | None = None
    """Bound on one whole run (all families); defaults to ``defaults.timeout``."""
    labels: dict[str, str] = Field(default_factory=dict)
    enabled: bool = True

    dsn: str | None = None
    """``postgresql://user:pass@host:port/db?sslmode=…`` or ``…@/db?host=/cloudsql/PROJECT:REGION:INSTANCE``
    (also libpq ``key=value``). Prefer ``dsn_env`` so the password stays out of YAML."""
    dsn_env: str | None = None
    """Name of an environment variable holding the DSN (e.g. ``DATABASE_URL``)."""
    env_prefix: str = "DB_"
    """Without a DSN: ``<prefix>HOST/PORT/NAME/USER/PASSWORD`` from the environment. A DSN without a
    password takes ``<prefix>PASSWORD`` when set."""
    sslmode: SslMode | None = None
    """Overrides the DSN's sslmode (default ``prefer``; Unix sockets never use TLS)."""
    application_name: str = "sre-watchdog"

    connect_timeout: PositiveDuration = 5.0
    statement_timeout: PositiveDuration = 2.0
    """Server-side bound on every check statement (lowered to the run timeout when that is shorter)."""
    lock_timeout: PositiveDuration = 0.5

    query: str = "SELECT 1"
    """Canary statement timed on every run (the query-latency SLI)."""
    slow_query: Duration = 0.05
    """The canary taking longer than this degrades the connectivity result (SLO: P95 < 50 ms)."""
    region_rtt: Duration = 0.02
    """A connection round-trip above this on each of the last ``region_rtt_runs`` runs degrades:
    typical of an application and database in different regions (asia-east1 ↔ us-central1 ≈ 130 ms)."""
    region_rtt_runs: int = Field(default=5, ge=1, le=100)

    checks: list[CheckFamily] = Field(default_factory=lambda: list(ALL_FAMILIES))
    """Families to run; ``connectivity`` always runs. ``host`` runs when ``host_metrics`` is set."""
    connections: ConnectionThresholds = Field(default_factory=ConnectionThresholds)
    queries: QueryThresholds = Field(default_factory=QueryThresholds)
    locks: LockThresholds = Field(default_factory=LockThresholds)
    replication: ReplicationThresholds = Field(default_factory=ReplicationThresholds)
    vitals: VitalsThresholds = Field(default_factory=VitalsThresholds)
    host_metrics: HostMetrics | None = None

    def latency_thresholds(self) -> tuple[float, ...]:
        """None: a database probe's result latency is judged per check family, not by a bucket edge."""
        return ()

    @field_validator("labels")
    @classmethod
    def _reserved_labels(cls, labels: dict[str, str]) -> dict[str, str]:
        for key in labels:
            if key in {"probe", "step", "check", "__name__"}:
                raise ValueError(f"label {key!r} is reserved")
            if not re.match(r"^[a-zA-Z_][a-zA-Z0-9_]*$", key):
                raise ValueError(f"label {key!r} is not a valid Prometheus label name")
        return labels

    @field_validator("checks")
    @classmethod
    def _unique_checks(cls, checks: list[CheckFamily]) -> list[CheckFamily]:
        if len(set(checks)) != len(checks):
            raise ValueError("checks must not repeat a family")
        return checks

    @model_validator(mode="after")
    def _one_dsn_source(self) -> PostgresProbeConfig:
        if self.dsn is not None and self.dsn_env is not None:
            raise ValueError("give either dsn or dsn_env, not both")
        return self

"""Google Cloud settings (``google_cloud:`` in ``watchdog.yaml``): where the watched service runs and which
Google Cloud integrations are on. Nothing here imports a Google library: the integrations import theirs only
when their section is set, so a watchdog without ``google_cloud`` loads nothing Google."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from watchdog.config.types import PositiveDuration


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ErrorReporting(_Strict):
    """The watchdog's own errors (exceptions, ERROR log records, failed rollbacks) sent to Error Reporting
    (``watchdog.gcp.error_reporting``), from a background thread, at most one per cause per
    ``per_cause_every``."""

    service: str = Field(default="sre-watchdog", min_length=1)
    """The ServiceContext's service: how Error Reporting groups and filters the watchdog's errors."""
    version: str = ""
    """The ServiceContext's version; empty: the installed package's version."""
    per_cause_every: PositiveDuration = 600.0
    """At most one report per cause (exception type and where it was raised, or where it was logged) in
    this long; the others are counted as suppressed."""
    queue: int = Field(default=100, ge=1, le=10_000)
    """Reports waiting for the sender at most; past it new ones are dropped (and counted), never waited
    for."""


class CloudMonitoringExport(_Strict):
    """The watchdog's own results written to Cloud Monitoring as custom metrics
    (``watchdog.runtime.gcp_export``): probes, SLO budgets and burn rates, canaries, open incidents."""

    every: PositiveDuration = Field(default=60.0, ge=10)
    """One point per series per export; Cloud Monitoring takes at most one point per series every 5 s."""
    prefix: str = Field(
        default="custom.googleapis.com/watchdog",
        pattern=r"^custom\.googleapis\.com/[A-Za-z0-9_./-]*[A-Za-z0-9_]$",
    )
    """Metric type prefix: ``<prefix>/probe/success`` and so on."""
    timeout: PositiveDuration = 20.0
    """Bound on one export (metric descriptors, every batch, retries); at most ``every``."""

    @model_validator(mode="after")
    def _bounded(self) -> CloudMonitoringExport:
        if self.timeout > self.every:
            raise ValueError("export_metrics.timeout must not exceed export_metrics.every")
        return self


class GoogleCloud(_Strict):
    project: str = Field(min_length=1)
    """The project the watched service, its Cloud SQL instance and the watchdog's own metrics live in."""
    region: str = ""
    """Where the watchdog runs (e.g. ``asia-east1``)."""
    cloud_sql_instance: str = ""
    """The watched Cloud SQL instance as its connection name, ``PROJECT:REGION:INSTANCE``."""
    cloud_run_service: str = ""
    """The watched Cloud Run service, ``projects/P/locations/R/services/S``."""
    endpoints: dict[str, str] = Field(default_factory=dict)
    """Per API (``monitoring``, ``logging``, ``clouderrorreporting``, ``secretmanager``, ``run``): an endpoint
    to use instead of Google's, e.g. a private endpoint or a server on loopback in tests. Calls to an
    ``http://`` endpoint go without credentials."""
    export_metrics: CloudMonitoringExport | None = None
    """Write the watchdog's own results to Cloud Monitoring (``export_metrics: {}`` for the defaults)."""
    secrets_deadline: PositiveDuration = 30.0
    """How long resolving the config's ``sm://`` Secret Manager references may take at one load, retries of
    UNAVAILABLE included; past it the load fails naming the reference (``watchdog.config.secrets``)."""
    logging: Literal["stdout", "api"] = "stdout"
    """Where the watchdog's log goes in Cloud Logging's shape: ``stdout`` (one JSON object a line, which
    Cloud Run's and GKE's agents read; see ``settings.log_format``) or ``api`` (the google-cloud-logging
    client writes the entries itself, from a background thread: for hosts without such an agent)."""
    log_name: str = Field(default="watchdog", pattern=r"^[A-Za-z0-9_./-]{1,100}$")
    """The log the ``api`` handler writes to (``projects/P/logs/NAME``)."""
    error_reporting: ErrorReporting | None = None
    """Off unless set; ``true`` or ``{}`` turns it on with the defaults."""

    @field_validator("error_reporting", mode="before")
    @classmethod
    def _error_reporting_flag(cls, value: object) -> object:
        if value is True:
            return {}
        if value is False:
            return None
        return value

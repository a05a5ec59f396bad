"""Google Cloud settings (``google_cloud:`` in ``watchdog.yaml``): where the watched service runs and which
Google Cloud integrations are on. Nothing here imports a Google library: the integrations import theirs only
when their section is set, so a watchdog without ``google_cloud`` loads nothing Google."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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

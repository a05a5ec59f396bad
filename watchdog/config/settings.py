"""Global settings (``watchdog.yaml``, optional)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from watchdog.config.gcp import GoogleCloud
from watchdog.config.types import Duration, ListenAddress, PositiveDuration


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ProbeDefaults(Strict):
    interval: PositiveDuration = 30.0
    timeout: PositiveDuration = 10.0
    jitter: Duration | None = None
    """Each probe starts at a random phase within its first ``jitter`` seconds (default: its whole
    interval), so probes sharing an interval do not fire together. The phase is fixed per probe: the time
    between runs stays exactly the interval (APScheduler's own jitter drifts by adding up)."""


class Retention(Strict):
    raw: PositiveDuration = 6 * 3600.0
    """Raw results are for "what happened just now"; history lives in the minute aggregates. At 500 probes
    every 10 s, 6 h is about a million rows."""
    minutes: PositiveDuration = 35 * 86400.0


class Heartbeat(Strict):
    """A dead-man's switch: while the daemon is healthy (store answering, evaluation on time) it requests
    ``url`` every ``every`` (healthchecks.io, Cronitor, a Cloud Monitoring uptime check...); when the
    requests stop, that service pages. It is what notices a daemon that is dead, hung or cut off, which no
    page from the daemon itself can."""

    url: str
    every: PositiveDuration = 60.0
    method: Literal["GET", "POST", "HEAD"] = "GET"
    timeout: PositiveDuration = 10.0


class Settings(Strict):
    state: str = "watchdog-state.db"
    """A SQLite file path (default) or a ``postgresql://`` DSN shared by replicas."""
    listen: ListenAddress = "127.0.0.1:9108"
    """``HOST:PORT``, ``[IPv6]:PORT`` or ``:PORT`` (every interface) for /metrics, /healthz, /readyz."""
    instance: str = ""
    """Replica identity for leases and outbox claims; default hostname:pid."""
    defaults: ProbeDefaults = Field(default_factory=ProbeDefaults)
    retention: Retention = Field(default_factory=Retention)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["auto", "json", "cloud"] = "auto"
    """``json``: one JSON object a line on stderr. ``cloud``: the same on stdout in the shape Cloud Run's
    logging agent reads (LogSeverity, labels, trace, source location, httpRequest, stack traces for Error
    Reporting; ``watchdog.core.logs``). ``auto``: ``cloud`` where ``K_SERVICE`` is set (Cloud Run sets it),
    else ``json``."""
    evaluation_interval: PositiveDuration = 5.0
    runbook_base_url: str = ""
    """Where runbooks are published (e.g. a repository URL); pages link ``<base>/<alert>.md``. Empty: the
    local file path."""
    flush_interval: PositiveDuration = 1.0
    """How often buffered probe results are written to the store in one transaction."""
    heartbeat: Heartbeat | None = None
    self_escalation: str = "default"
    """The escalation policy that pages the watchdog's own failures (its store down, a notifier failing,
    its scheduler stalled); at most once per cause. Without a policy of that name they go to the log."""
    google_cloud: GoogleCloud | None = None
    """Google Cloud integrations (``watchdog.config.gcp``); none without this section."""
    allow_no_probes: bool = False
    """A config that defines no enabled probe is refused by default: it watches nothing, yet the daemon
    would report ready, which is how a wrong ``--config`` directory goes unnoticed. Set ``true`` to run
    without probes on purpose."""

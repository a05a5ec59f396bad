"""The daemon's logging, from config: the line format on stdout/stderr, and when ``google_cloud`` asks for
them, the Cloud Logging API handler and Error Reporting (imported only then: without them nothing Google
is loaded)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from watchdog import __version__
from watchdog.config import WatchdogConfig
from watchdog.core.logs import CloudJsonFormatter, LogFormat, configure_logging

_log = logging.getLogger("watchdog.logging")


def resolve_log_format(setting: Literal["auto", "json", "cloud"], env: Mapping[str, str]) -> LogFormat:
    """``auto`` is ``cloud`` where ``K_SERVICE`` is set: Cloud Run sets it, and its agent turns the cloud
    shape's fields into LogEntry fields (severity, labels, trace) where plain JSON loses them."""
    if setting == "auto":
        return "cloud" if env.get("K_SERVICE", "").strip() else "json"
    return setting


@dataclass
class LoggingSetup:
    """What ``setup_logging`` installed; ``close`` sends what is queued (bounded) and removes it."""

    log_format: LogFormat
    handlers: list[logging.Handler] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    """Integrations that could not start (no credentials...): logged, and the daemon runs without them."""

    def close(self) -> None:
        root = logging.getLogger()
        for handler in self.handlers:
            root.removeHandler(handler)
            handler.close()
            stats = getattr(handler, "stats", None)  # what was sent, dropped, refused
            if stats is not None:
                _log.info("%s at exit: %s", type(handler).__name__, stats)
        self.handlers.clear()


def setup_logging(config: WatchdogConfig, env: Mapping[str, str], instance: str = "") -> LoggingSetup:
    settings = config.settings
    cloud = settings.google_cloud
    fmt = resolve_log_format(settings.log_format, env)
    project = cloud.project if cloud is not None else env.get("GOOGLE_CLOUD_PROJECT", "")
    reporting = cloud.error_reporting if cloud is not None else None
    # With Error Reporting fed through its API, a traceback in the log's ``stack_trace`` would be counted a
    # second time (and without the rate limit): the log keeps it under a name Error Reporting does not read.
    traceback_field = "traceback" if reporting is not None else "stack_trace"
    labels = {"instance": instance} if instance else {}

    def formatter() -> CloudJsonFormatter:
        return CloudJsonFormatter(project, labels, traceback_field)

    configure_logging(settings.log_level, fmt=fmt, formatter=formatter() if fmt == "cloud" else None)
    setup = LoggingSetup(fmt)
    root = logging.getLogger()
    if cloud is not None and cloud.logging == "api":
        try:
            from watchdog.gcp import cloud_logging

            client = cloud_logging.build_client(project, cloud.endpoints.get(cloud_logging.ENDPOINT_KEY, ""))
            api = cloud_logging.CloudLoggingApiHandler(
                client,
                name=cloud.log_name,
                resource=cloud_logging.monitored_resource(project, cloud.region, env),
                formatter=formatter(),
            )
        except Exception as exc:  # no credentials, the gcp extra not installed...
            setup.problems.append(f"Cloud Logging API handler not started: {type(exc).__name__}: {exc}")
        else:
            api.setLevel(settings.log_level)
            root.addHandler(api)
            setup.handlers.append(api)
    if cloud is not None and reporting is not None:
        try:
            from watchdog.gcp import error_reporting

            reporter = error_reporting.ErrorReporter(
                error_reporting.build_client(cloud.endpoints.get(error_reporting.ENDPOINT_KEY, "")),
                project,
                reporting.service,
                reporting.version or __version__,
                per_cause_every=reporting.per_cause_every,
                queue_size=reporting.queue,
            )
        except Exception as exc:
            setup.problems.append(f"Error Reporting not started: {type(exc).__name__}: {exc}")
        else:
            handler = error_reporting.ErrorReportingHandler(reporter)
            root.addHandler(handler)
            setup.handlers.append(handler)
    for problem in setup.problems:
        _log.warning("%s", problem)
    return setup

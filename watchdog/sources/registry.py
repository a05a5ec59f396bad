"""The one place a metric-source kind is registered: config (``host_metrics: {source: …}``) names a kind,
this builds it. A new source is one module plus one line here. Each module is imported when its kind is
built: a watchdog without Cloud Monitoring configured never imports Google's client."""

from __future__ import annotations

from collections.abc import Callable

from watchdog.config.gcp import GoogleCloud
from watchdog.config.postgres import HostMetrics
from watchdog.sources.base import MetricSource


def _proc(_cfg: HostMetrics, _gcp: GoogleCloud | None) -> MetricSource:
    from watchdog.sources.proc import ProcMetricSource

    return ProcMetricSource()


def _prometheus(cfg: HostMetrics, _gcp: GoogleCloud | None) -> MetricSource:
    from watchdog.sources.prometheus import PrometheusMetricSource

    if cfg.url is None:  # HostMetrics validates this; a hand-built one may not have
        raise ValueError("a prometheus metric source needs a url")
    return PrometheusMetricSource(cfg.url)


def _cloud_monitoring(cfg: HostMetrics, gcp: GoogleCloud | None) -> MetricSource:
    if gcp is None:
        raise ValueError(
            "host_metrics source cloud_monitoring needs a google_cloud section (project) in watchdog.yaml"
        )
    instance = cfg.cloud_sql_instance or gcp.cloud_sql_instance
    if not instance and not (cfg.cpu_query and cfg.memory_query):
        raise ValueError(
            "host_metrics source cloud_monitoring needs the Cloud SQL instance: set "
            "google_cloud.cloud_sql_instance (or host_metrics.cloud_sql_instance), or both queries"
        )
    from watchdog.sources.cloud_monitoring import CloudMonitoringMetricSource

    return CloudMonitoringMetricSource.from_settings(gcp, cloud_sql_instance=instance)


SOURCE_KINDS: dict[str, Callable[[HostMetrics, GoogleCloud | None], MetricSource]] = {
    "proc": _proc,
    "prometheus": _prometheus,
    "cloud_monitoring": _cloud_monitoring,
}


def build_source(cfg: HostMetrics, google_cloud: GoogleCloud | None = None) -> MetricSource:
    """``google_cloud``: the ``google_cloud`` settings, for the sources that read Google Cloud."""
    try:
        factory = SOURCE_KINDS[cfg.source]
    except KeyError:
        raise ValueError(f"unknown metric source {cfg.source!r}; known: {', '.join(SOURCE_KINDS)}") from None
    return factory(cfg, google_cloud)

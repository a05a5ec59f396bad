"""The one place a metric-source kind is registered: config (``host_metrics: {source: …}``) names a kind,
this builds it. A new source (Cloud Monitoring, …) is one module plus one line here."""

from __future__ import annotations

from collections.abc import Callable

from watchdog.config.postgres import HostMetrics
from watchdog.sources.base import MetricSource


def _proc(_cfg: HostMetrics) -> MetricSource:
    from watchdog.sources.proc import ProcMetricSource

    return ProcMetricSource()


def _prometheus(cfg: HostMetrics) -> MetricSource:
    from watchdog.sources.prometheus import PrometheusMetricSource

    if cfg.url is None:  # HostMetrics validates this; a hand-built one may not have
        raise ValueError("a prometheus metric source needs a url")
    return PrometheusMetricSource(cfg.url)


SOURCE_KINDS: dict[str, Callable[[HostMetrics], MetricSource]] = {
    "proc": _proc,
    "prometheus": _prometheus,
}


def build_source(cfg: HostMetrics) -> MetricSource:
    try:
        factory = SOURCE_KINDS[cfg.source]
    except KeyError:
        raise ValueError(f"unknown metric source {cfg.source!r}; known: {', '.join(SOURCE_KINDS)}") from None
    return factory(cfg)

"""Metric sources: numbers from outside (Prometheus HTTP API, /proc; a fake), behind ``MetricSource`` in
``base``, for checks such as host CPU and memory; ``registry`` builds a kind from config. Imports config
and core only."""

from __future__ import annotations

from watchdog.sources.base import MetricSource, MetricSourceError, Sample, single_value
from watchdog.sources.fake import FakeMetricSource
from watchdog.sources.proc import ProcMetricSource
from watchdog.sources.prometheus import NODE_CPU_PERCENT, NODE_MEMORY_PERCENT, PrometheusMetricSource

__all__ = [
    "NODE_CPU_PERCENT",
    "NODE_MEMORY_PERCENT",
    "FakeMetricSource",
    "MetricSource",
    "MetricSourceError",
    "ProcMetricSource",
    "PrometheusMetricSource",
    "Sample",
    "single_value",
]

"""External numbers for checks: CPU and memory of a database host, from wherever they live.

A ``MetricSource`` answers a query written in its own language and returns samples:

- ``ProcMetricSource``: this host's ``/proc``; queries are names (``cpu_percent``, ``memory_percent``,
  ``load1``).
- ``PrometheusMetricSource``: PromQL instant queries over the HTTP API (e.g. node_exporter series).
- A Cloud Monitoring source (Google Cloud issue) takes a time-series filter such as
  ``metric.type="cloudsql.googleapis.com/database/cpu/utilization"``; ``Sample.labels`` carries the resource
  labels and ``scale`` in its config turns a 0–1 utilization into percent.

Contract (tests/test_pg_metric_sources.py runs it against every implementation):
- ``query`` returns a (possibly empty) sequence of samples; an empty result means "no data", not an error;
- a query the source cannot understand, or a source that cannot be reached within ``timeout_s``, raises
  ``MetricSourceError`` with a reason that never contains credentials;
- ``aclose`` releases connections; the source may be queried concurrently.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


class MetricSourceError(Exception):
    """The source could not answer: unreachable, timed out, or the query is invalid."""


@dataclass(frozen=True, slots=True)
class Sample:
    value: float
    labels: Mapping[str, str] = field(default_factory=dict)
    timestamp: float | None = None
    """Epoch seconds of the value when the source says (None: now)."""


@runtime_checkable
class MetricSource(Protocol):
    name: str
    """Short kind name for reasons and labels: ``proc``, ``prometheus``, ``fake``, ``cloud-monitoring``."""

    async def query(self, query: str, *, timeout_s: float = 5.0) -> Sequence[Sample]: ...

    async def aclose(self) -> None: ...


def single_value(samples: Sequence[Sample]) -> float | None:
    """The one number of a result meant to be a scalar: None when empty, the maximum when several
    series answered (the busiest CPU/host is the one that matters for a threshold)."""
    if not samples:
        return None
    return max(s.value for s in samples)

"""What /metrics shows. Registries are passed explicitly (never the global one).

Two sources, each read at scrape time:
- the store's latest result per series (shared by replicas): success, degraded, last duration, last run,
  and every probe observation as ``watchdog_<name>``;
- this process's counters since it started (results recorded, latency histogram, scheduler lag), the
  usual Prometheus counter semantics: a restart is a counter reset, which rate() handles.
"""

from __future__ import annotations

import math
import platform
import re
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

from watchdog import __version__
from watchdog.results import Outcome, ProbeResult
from watchdog.store.base import LATENCY_BUCKETS_S

_NAME_OK = re.compile(r"[^a-zA-Z0-9_]")


def metric_name(observation: str) -> str:
    return "watchdog_" + _NAME_OK.sub("_", observation)


@dataclass
class LatencyHistogram:
    """Cumulative per-series latency histogram since process start (non-cumulative counts inside)."""

    edges: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.edges) + 1)

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(self.edges, seconds)] += 1
        self.total += seconds


class ProbeMetrics:
    """Process-local counters fed by the result buffer after each successful store write."""

    def __init__(self, registry: CollectorRegistry, edges: Sequence[float] = LATENCY_BUCKETS_S) -> None:
        self.edges = tuple(sorted(set(edges)))
        self._hist: dict[tuple[str, str, tuple[tuple[str, str], ...]], LatencyHistogram] = {}
        self._results: dict[tuple[str, str, tuple[tuple[str, str], ...], str], int] = {}
        self.scheduler_lag = Histogram(
            "watchdog_scheduler_lag_seconds",
            "Delay between a probe's scheduled time and its start.",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=registry,
        )
        self.runs_skipped = Counter(
            "watchdog_probe_runs_skipped_total",
            "Runs not started because the previous run of the probe was still going (no pile-up).",
            ["probe"],
            registry=registry,
        )
        self.results_dropped = Counter(
            "watchdog_results_dropped_total",
            "Results discarded because the state store stayed unreachable until the buffer filled.",
            registry=registry,
        )
        registry.register(_ProcessCollector(self))

    def on_recorded(self, results: Iterable[ProbeResult]) -> None:
        for r in results:
            labels = tuple(sorted(r.labels.items()))
            hkey = (r.probe, r.kind, labels)
            hist = self._hist.get(hkey)
            if hist is None:
                hist = self._hist[hkey] = LatencyHistogram(self.edges)
            hist.observe(r.latency_s)
            rkey = (r.probe, r.kind, labels, r.outcome.value)
            self._results[rkey] = self._results.get(rkey, 0) + 1


class _ProcessCollector(Collector):
    def __init__(self, metrics: ProbeMetrics) -> None:
        self._m = metrics

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily("watchdog_build_info", "Build information.", labels=["version", "python"])
        info.add_metric([__version__, platform.python_version()], 1)
        yield info
        yield from _histograms(self._m)
        yield from _results_total(self._m)


def _label_sets(base: Mapping[str, str], extra: tuple[tuple[str, str], ...]) -> tuple[list[str], list[str]]:
    merged = dict(base)
    merged.update(extra)
    return list(merged), list(merged.values())


def _histograms(m: ProbeMetrics) -> Iterator[Metric]:
    # Label names vary per probe (cohort, lang, step); one family per label-name set keeps each family
    # consistent, which is what strict parsers expect.
    families: dict[tuple[str, ...], HistogramMetricFamily] = {}
    for (probe, kind, labels), hist in sorted(m._hist.items()):
        names, values = _label_sets({"probe": probe, "kind": kind}, labels)
        family = families.get(tuple(names))
        if family is None:
            family = families[tuple(names)] = HistogramMetricFamily(
                "watchdog_probe_latency_seconds", "Probe latency recorded by this process.", labels=names
            )
        cumulative = 0
        buckets: list[tuple[str, float]] = []
        for edge, count in zip((*m.edges, math.inf), hist.counts, strict=True):
            cumulative += count
            buckets.append(("+Inf" if edge == math.inf else repr(edge), cumulative))
        family.add_metric(values, buckets, hist.total)
    yield from _merge_families("watchdog_probe_latency_seconds", families.values())


def _results_total(m: ProbeMetrics) -> Iterator[Metric]:
    families: dict[tuple[str, ...], CounterMetricFamily] = {}
    for (probe, kind, labels, outcome), n in sorted(m._results.items()):
        names, values = _label_sets({"probe": probe, "kind": kind, "outcome": outcome}, labels)
        family = families.get(tuple(names))
        if family is None:
            family = families[tuple(names)] = CounterMetricFamily(
                "watchdog_probe_results", "Probe results recorded by this process.", labels=names
            )
        family.add_metric(values, n)
    yield from _merge_families("watchdog_probe_results", families.values())


def _merge_families(name: str, families: Iterable[Metric]) -> Iterator[Metric]:
    """One family per metric name (the text format forbids repeating a name); samples keep their own
    label sets, which the exposition format allows."""
    merged: Metric | None = None
    for family in families:
        if merged is None:
            merged = family
        else:
            merged.samples.extend(family.samples)
    if merged is not None:
        yield merged


class StoreSnapshotCollector(Collector):
    """Series derived from the store's latest results, refreshed by the /metrics handler before render."""

    def __init__(self) -> None:
        self._latest: list[ProbeResult] = []
        self._store_up = 1.0
        self._extra: dict[str, float] = {}

    def update(self, latest: list[ProbeResult], store_up: bool, extra: Mapping[str, float]) -> None:
        self._latest = latest
        self._store_up = 1.0 if store_up else 0.0
        self._extra = dict(extra)

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("watchdog_store_up", "1 when the state store answered at the last scrape.")
        up.add_metric([], self._store_up)
        yield up
        for key, value in sorted(self._extra.items()):
            gauge = GaugeMetricFamily(f"watchdog_{key}", key.replace("_", " ").capitalize() + ".")
            gauge.add_metric([], value)
            yield gauge
        success = GaugeMetricFamily("watchdog_probe_success", "1 unless the probe's last result failed.")
        degraded = GaugeMetricFamily(
            "watchdog_probe_degraded", "1 when the probe's last result was degraded."
        )
        duration = GaugeMetricFamily("watchdog_probe_duration_seconds", "Latency of the probe's last result.")
        last_run = GaugeMetricFamily(
            "watchdog_probe_last_run_timestamp_seconds", "When the probe's last result started."
        )
        observations: dict[str, GaugeMetricFamily] = {}
        for r in self._latest:
            labels = {"probe": r.probe, "kind": r.kind, **r.labels}
            _add(success, labels, 0.0 if r.outcome is Outcome.FAILED else 1.0)
            _add(degraded, labels, 1.0 if r.outcome is Outcome.DEGRADED else 0.0)
            _add(duration, labels, r.latency_s)
            _add(last_run, labels, r.started_at)
            for obs in r.observations:
                if not math.isfinite(obs.value):
                    continue  # NaN/inf never reach a dashboard; the probe's reason says why
                name = metric_name(obs.name)
                family = observations.get(name)
                if family is None:
                    family = observations[name] = GaugeMetricFamily(name, f"Probe observation {obs.name}.")
                _add(family, {"probe": r.probe, **r.labels, **obs.labels}, obs.value)
        yield success
        yield degraded
        yield duration
        yield last_run
        yield from observations.values()


def _add(family: Metric, labels: Mapping[str, str], value: float) -> None:
    # Label names differ between probes (cohort, lang, step), so samples carry their own label sets
    # instead of the family's fixed list.
    family.samples.append(Sample(family.name, dict(labels), value))


def build_registry(
    edges: Sequence[float] = LATENCY_BUCKETS_S,
) -> tuple[CollectorRegistry, ProbeMetrics, StoreSnapshotCollector]:
    registry = CollectorRegistry(auto_describe=False)
    probe_metrics = ProbeMetrics(registry, edges)
    snapshot = StoreSnapshotCollector()
    registry.register(snapshot)
    return registry, probe_metrics, snapshot


__all__ = ["ProbeMetrics", "StoreSnapshotCollector", "build_registry", "metric_name"]

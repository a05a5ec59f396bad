"""What /metrics shows. Registries are passed explicitly (never the global one).

Two sources, each read at scrape time:
- the store's latest result per series (shared by replicas): success, degraded, last duration, last run,
  and every probe observation as ``watchdog_<name>``;
- this process's counters since it started (results recorded, latency histogram, scheduler lag), the
  usual Prometheus counter semantics: a restart is a counter reset, which rate() handles.

Both collectors can also write their text directly (:class:`TextCollector`): :func:`exposition` gives
exactly ``generate_latest(registry)``'s bytes, several times faster and with a fraction of the garbage, which
matters at hundreds of probes (one scrape built ~15 000 ``Sample`` objects, took ~70 ms of the event loop
and left the process ~8 MB bigger at 500 probes).
"""

from __future__ import annotations

import math
import platform
import re
from abc import abstractmethod
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.openmetrics.exposition import escape_label_name
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

from watchdog import __version__
from watchdog.core.results import Outcome, ProbeResult
from watchdog.store.base import LATENCY_BUCKETS_S

_NAME_OK = re.compile(r"[^a-zA-Z0-9_]")

# Fine below 250 ms, so histogram_quantile gives a useful p50 and p99 (target: p99 < 100 ms at 500 probes).
SCHEDULER_LAG_BUCKETS_S: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.04, 0.05, 0.075,
    0.1, 0.15, 0.2, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip


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
            buckets=SCHEDULER_LAG_BUCKETS_S,
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


# --- text exposition ------------------------------------------------------------------------------------
# The same text as prometheus_client's generate_latest (format 0.0.4): HELP/TYPE lines, labels sorted by name,
# label values escaped, values through floatToGoString. tests/test_metrics_exposition.py holds the two equal.


class TextCollector(Collector):
    """A collector that can also append its own text exposition, identical to what ``generate_latest``
    renders from :meth:`collect`, to ``out``."""

    @abstractmethod
    def write_text(self, out: list[str]) -> None: ...


class Registry(CollectorRegistry):
    """The daemon's registry: a :class:`CollectorRegistry` that remembers its collectors in registration
    order (the order ``generate_latest`` renders them in) for :func:`exposition`."""

    def __init__(self) -> None:
        super().__init__(auto_describe=False)
        self.collectors: list[Collector] = []

    def register(self, collector: Collector) -> None:
        super().register(collector)
        self.collectors.append(collector)

    def unregister(self, collector: Collector) -> None:
        super().unregister(collector)
        self.collectors.remove(collector)


class _Only(Collector):
    def __init__(self, collector: Collector) -> None:
        self._collector = collector

    def collect(self) -> Iterable[Metric]:
        return self._collector.collect()


def exposition(registry: CollectorRegistry) -> bytes:
    """``generate_latest(registry)``, byte for byte; a :class:`Registry`'s :class:`TextCollector` s write
    their text directly, any other collector goes through ``generate_latest``."""
    if not isinstance(registry, Registry):
        return generate_latest(registry)
    out: list[str] = []
    for collector in list(registry.collectors):
        if isinstance(collector, TextCollector):
            collector.write_text(out)
        else:
            out.append(generate_latest(_Only(collector)).decode())
    return "".join(out).encode()


def _escape_value(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r'\"')


def _header(out: list[str], name: str, documentation: str, kind: str) -> None:
    doc = documentation.replace("\\", r"\\").replace("\n", r"\n")
    out.append(f"# HELP {name} {doc}\n# TYPE {name} {kind}\n")


@lru_cache(maxsize=4096)
def _label_name(name: str) -> str:
    return escape_label_name(name)


def _labels_text(labels: Iterable[tuple[str, str]]) -> str:
    """``a="1",b="2"`` for label pairs already sorted by name."""
    return ",".join(f'{_label_name(k)}="{_escape_value(v)}"' for k, v in labels)


def _go(value: float) -> str:
    text: str = floatToGoString(value)  # type: ignore[no-untyped-call]
    return text


def _line(name: str, labels: Mapping[str, str], value: float) -> str:
    if labels:
        return f"{name}{{{_labels_text(sorted(labels.items()))}}} {_go(value)}\n"
    return f"{name} {_go(value)}\n"


def _count_text(n: int) -> str:
    """_go(float(n)) for a non-negative integer count, without the detour below 1e6."""
    return f"{n}.0" if 0 <= n < 1_000_000 else _go(n)


class _ProcessCollector(TextCollector):
    def __init__(self, metrics: ProbeMetrics) -> None:
        self._m = metrics

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily("watchdog_build_info", "Build information.", labels=["version", "python"])
        info.add_metric([__version__, platform.python_version()], 1)
        yield info
        yield from _histograms(self._m)
        yield from _results_total(self._m)

    def write_text(self, out: list[str]) -> None:
        _header(out, "watchdog_build_info", "Build information.", "gauge")
        info = {"version": __version__, "python": platform.python_version()}
        out.append(_line("watchdog_build_info", info, 1))
        m = self._m
        # One chunk per series; series grouped by label-name set in order of first appearance, as
        # _histograms/_results_total do through _merge_families.
        groups: dict[tuple[str, ...], list[str]] = {}
        les = [*(repr(edge) for edge in m.edges), "+Inf"]
        for (probe, kind, labels), hist in sorted(m._hist.items()):
            base = dict(probe=probe, kind=kind)
            base.update(labels)
            items = sorted(base.items())
            before = _labels_text((k, v) for k, v in items if k < "le")
            after = _labels_text((k, v) for k, v in items if k > "le")
            head = f"watchdog_probe_latency_seconds_bucket{{{before}{',' if before else ''}le=\""
            tail = f"\"{',' if after else ''}{after}}} "
            lines: list[str] = []
            cumulative = 0
            for le, count in zip(les, hist.counts, strict=True):
                cumulative += count
                lines.append(f"{head}{le}{tail}{_count_text(cumulative)}\n")
            plain = _labels_text(items)
            lines.append(f"watchdog_probe_latency_seconds_count{{{plain}}} {_count_text(cumulative)}\n")
            lines.append(f"watchdog_probe_latency_seconds_sum{{{plain}}} {_go(hist.total)}\n")
            groups.setdefault(tuple(base), []).append("".join(lines))
        if groups:
            _header(
                out, "watchdog_probe_latency_seconds", "Probe latency recorded by this process.", "histogram"
            )
            for chunks in groups.values():
                out.extend(chunks)
        groups = {}
        for (probe, kind, labels, outcome), n in sorted(m._results.items()):
            base = dict(probe=probe, kind=kind, outcome=outcome)
            base.update(labels)
            groups.setdefault(tuple(base), []).append(
                f"watchdog_probe_results_total{{{_labels_text(sorted(base.items()))}}} {_count_text(n)}\n"
            )
        if groups:
            _header(out, "watchdog_probe_results_total", "Probe results recorded by this process.", "counter")
            for chunks in groups.values():
                out.append("".join(chunks))


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


class StoreSnapshotCollector(TextCollector):
    """Series derived from the store's latest results, refreshed by the /metrics handler before render."""

    def __init__(self) -> None:
        self._latest: list[ProbeResult] = []
        self._store_up = 1.0
        self._extra: dict[str, float] = {}

    @property
    def latest(self) -> list[ProbeResult]:
        return self._latest

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

    def write_text(self, out: list[str]) -> None:
        _header(out, "watchdog_store_up", "1 when the state store answered at the last scrape.", "gauge")
        out.append(_line("watchdog_store_up", {}, self._store_up))
        for key, value in sorted(self._extra.items()):
            name = f"watchdog_{key}"
            _header(out, name, key.replace("_", " ").capitalize() + ".", "gauge")
            out.append(_line(name, {}, value))
        success: list[str] = []
        degraded: list[str] = []
        duration: list[str] = []
        last_run: list[str] = []
        observations: dict[str, tuple[str, list[str]]] = {}
        for r in self._latest:
            labels = {"probe": r.probe, "kind": r.kind, **r.labels}
            text = _labels_text(sorted(labels.items()))
            failed = r.outcome is Outcome.FAILED
            success.append(f"watchdog_probe_success{{{text}}} {'0.0' if failed else '1.0'}\n")
            degraded.append(
                f"watchdog_probe_degraded{{{text}}} {'1.0' if r.outcome is Outcome.DEGRADED else '0.0'}\n"
            )
            duration.append(f"watchdog_probe_duration_seconds{{{text}}} {_go(r.latency_s)}\n")
            last_run.append(
                f"watchdog_probe_last_run_timestamp_seconds{{{text}}} {_go(r.started_at)}\n"
            )
            for obs in r.observations:
                if not math.isfinite(obs.value):
                    continue
                name = metric_name(obs.name)
                family = observations.get(name)
                if family is None:
                    family = observations[name] = (f"Probe observation {obs.name}.", [])
                family[1].append(_line(name, {"probe": r.probe, **r.labels, **obs.labels}, obs.value))
        for name, doc, lines in (
            ("watchdog_probe_success", "1 unless the probe's last result failed.", success),
            ("watchdog_probe_degraded", "1 when the probe's last result was degraded.", degraded),
            ("watchdog_probe_duration_seconds", "Latency of the probe's last result.", duration),
            ("watchdog_probe_last_run_timestamp_seconds", "When the probe's last result started.", last_run),
        ):
            _header(out, name, doc, "gauge")
            out.append("".join(lines))
        for name, (doc, lines) in observations.items():
            _header(out, name, doc, "gauge")
            out.append("".join(lines))


def _add(family: Metric, labels: Mapping[str, str], value: float) -> None:
    # Label names differ between probes (cohort, lang, step), so samples carry their own label sets
    # instead of the family's fixed list.
    family.samples.append(Sample(family.name, dict(labels), value))


def build_registry(
    edges: Sequence[float] = LATENCY_BUCKETS_S,
) -> tuple[CollectorRegistry, ProbeMetrics, StoreSnapshotCollector]:
    registry = Registry()
    probe_metrics = ProbeMetrics(registry, edges)
    snapshot = StoreSnapshotCollector()
    registry.register(snapshot)
    return registry, probe_metrics, snapshot


__all__ = [
    "ProbeMetrics",
    "Registry",
    "StoreSnapshotCollector",
    "TextCollector",
    "build_registry",
    "exposition",
    "metric_name",
]

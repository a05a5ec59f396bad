"""SLO results on /metrics: a custom collector that reads the engine's latest evaluation at scrape time.

Register it in the daemon's registry (never the global one)::

    registry.register(SloCollector(engine))

Every value is finite. An SLO without data in its window has no ``watchdog_slo_sli_ratio`` sample (absence,
not a made-up number) and ``watchdog_slo_no_data`` 1; its budget remaining is 1 (nothing spent).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

from prometheus_client.core import GaugeMetricFamily, Metric

from watchdog.slo.engine import SloEngine
from watchdog.slo.model import Evaluation


def _f(x: float) -> float:
    return x if math.isfinite(x) else 0.0


class SloCollector:
    """prometheus_client collector over ``engine.last``; yields nothing before the first evaluation."""

    def __init__(self, engine: SloEngine) -> None:
        self._engine = engine

    def describe(self) -> Sequence[Metric]:
        return list(self._families())

    def collect(self) -> Iterator[Metric]:
        yield from self._families(self._engine.last)

    def _families(self, ev: Evaluation | None = None) -> Iterator[Metric]:
        objective = GaugeMetricFamily(
            "watchdog_slo_objective_ratio", "SLO objective as a ratio (0.999 = 99.9 %).", labels=["slo"]
        )
        sli = GaugeMetricFamily(
            "watchdog_slo_sli_ratio", "Good / total over the SLO window (absent without data).",
            labels=["slo"],
        )
        remaining = GaugeMetricFamily(
            "watchdog_slo_error_budget_remaining_ratio",
            "Share of the error budget left in the SLO window; negative when overspent.",
            labels=["slo"],
        )
        spent_24h = GaugeMetricFamily(
            "watchdog_slo_error_budget_spent_24h_ratio",
            "Share of the SLO window's error budget spent in the last 24 hours.",
            labels=["slo"],
        )
        burn = GaugeMetricFamily(
            "watchdog_slo_burn_rate",
            "Error ratio over the window divided by the allowed error ratio (1 = on budget).",
            labels=["slo", "window"],
        )
        events = GaugeMetricFamily(
            "watchdog_slo_window_events",
            "Probe results (observations for metric SLIs) in the window.",
            labels=["slo", "window"],
        )
        firing = GaugeMetricFamily(
            "watchdog_slo_alert_firing",
            "1 while the SLO's burn-rate alert of this severity fires.",
            labels=["slo", "severity"],
        )
        no_data = GaugeMetricFamily(
            "watchdog_slo_no_data",
            "1 when the SLO has had no data for longer than no_data_after.",
            labels=["slo"],
        )
        exhaustion = GaugeMetricFamily(
            "watchdog_slo_budget_exhaustion_timestamp_seconds",
            "Projected time the error budget runs out at the current 1 h/6 h burn rate (absent when not).",
            labels=["slo"],
        )
        evaluated = GaugeMetricFamily(
            "watchdog_slo_evaluation_timestamp_seconds", "When the SLOs were last evaluated."
        )
        duration = GaugeMetricFamily(
            "watchdog_slo_evaluation_duration_seconds", "How long the last SLO evaluation took."
        )
        if ev is not None:
            evaluated.add_metric([], _f(ev.at))
            duration.add_metric([], _f(ev.duration_s))
            for s in ev.statuses:
                objective.add_metric([s.name], _f(s.objective))
                if s.sli is not None:
                    sli.add_metric([s.name], _f(s.sli))
                remaining.add_metric([s.name], _f(s.budget.remaining))
                spent_24h.add_metric([s.name], _f(s.budget_spent_24h))
                # The SLO window itself: "30d" or "calendar_month", unless an alert window has that label.
                whole = "calendar_month" if s.window.startswith("calendar month") else s.window
                if whole not in s.windows:
                    burn.add_metric([s.name, whole], _f(s.slo_window.burn_rate))
                    events.add_metric([s.name, whole], _f(s.slo_window.events))
                for label, w in s.windows.items():
                    burn.add_metric([s.name, label], _f(w.burn_rate))
                    events.add_metric([s.name, label], _f(w.events))
                for severity in ("page", "ticket"):
                    firing.add_metric([s.name, severity], 1.0 if severity in s.firing else 0.0)
                no_data.add_metric([s.name], 1.0 if s.no_data else 0.0)
                if s.exhaustion_at is not None:
                    exhaustion.add_metric([s.name], _f(s.exhaustion_at))
        yield from (objective, sli, remaining, spent_24h, burn, events, firing, no_data, exhaustion,
                    evaluated, duration)

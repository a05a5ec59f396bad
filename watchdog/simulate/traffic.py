"""Scenario traffic → the ProbeResults the probes would have recorded.

One ``Series`` per enabled probe of the config: it runs every ``interval`` from a phase drawn at random
within its first interval (as the daemon's scheduler spreads probes), and each run yields what that probe
kind yields: one result for an HTTP probe, one per step (and ``for_each`` expansion) for a journey, one per
check family (``check=<family>``) for a PostgreSQL probe. Outcomes follow the probe's own thresholds:

- an error (drawn from the profile's rate, or a blip) fails the run's shaped results; a journey stops at
  the failing step (later steps yield no result, as the real journey does); a PostgreSQL run whose
  connectivity check fails fails every family (the database is down: ``not checked`` for the others);
- a latency over the probe's ``timeout`` or ``expect.max_latency`` fails it;
- over ``degraded_when.latency_over`` (a PostgreSQL probe's ``slow_query``, connectivity only) degrades it.

Draws come from one ``random.Random`` per probe seeded from the scenario's seed and the probe's name, so a
scenario replays exactly, and adding a probe does not change the others' draws.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from watchdog.config.loader import WatchdogConfig
from watchdog.config.postgres import PostgresProbeConfig
from watchdog.config.probes import (
    CloudRunTrafficProbeConfig,
    HttpProbeConfig,
    JourneyProbeConfig,
    ProbeConfig,
)
from watchdog.core.labels import labels_match
from watchdog.core.results import Outcome, ProbeResult
from watchdog.simulate.scenario import Scenario, Traffic

PHASE_GRID_S = 0.1
"""Probe starts fall on the daemon's 100 ms start grid (``runtime.daemon.START_GRID_S``)."""
_DB_FAMILIES = ("connections", "queries", "locks", "replication", "vitals")


@dataclass(frozen=True, slots=True)
class Unit:
    """One result a run yields: its labels, and the thresholds that judge its latency."""

    labels: Mapping[str, str]
    shaped: bool
    """Whether the scenario's profile applies (``labels`` of the traffic select it); else healthy."""
    degraded_over: float | None
    failed_over: float | None
    step: int = 0
    """A journey step's index (siblings of a ``for_each`` share it)."""


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def units_of(probe: ProbeConfig, extra: Mapping[str, str]) -> list[Unit]:
    """The results one run of ``probe`` yields. ``extra`` (the traffic's labels) selects which of them the
    profile shapes, and is added to the labels of an HTTP probe's result where it does not have them."""
    if isinstance(probe, HttpProbeConfig):
        labels = dict(probe.labels)
        for key, value in extra.items():
            labels.setdefault(key, value)
        return [
            Unit(
                labels,
                labels_match(labels, extra),
                probe.degraded_when.latency_over,
                probe.expect.max_latency,
            )
        ]
    if isinstance(probe, JourneyProbeConfig):
        units: list[Unit] = []
        for index, step in enumerate(probe.steps):
            keys = list(step.for_each)
            for values in itertools.product(*(step.for_each[k] for k in keys)):
                labels = {**probe.labels, "step": step.name, **dict(zip(keys, values, strict=True))}
                units.append(
                    Unit(
                        labels,
                        labels_match(labels, extra),
                        step.degraded_when.latency_over,
                        step.expect.max_latency,
                        index,
                    )
                )
        return units
    if isinstance(probe, CloudRunTrafficProbeConfig):
        # One result per run; the traffic it reads is Cloud Run's, not simulated.
        labels = dict(probe.labels)
        return [Unit(labels, labels_match(labels, extra), None, None)]
    assert isinstance(probe, PostgresProbeConfig)
    families = ["connectivity", *(f for f in _DB_FAMILIES if f in probe.checks)]
    if probe.host_metrics is not None and "host" in probe.checks:
        families.append("host")
    return [
        Unit(
            {**probe.labels, "check": f},
            labels_match({**probe.labels, "check": f}, extra),
            probe.slow_query if f == "connectivity" else None,
            None,
        )
        for f in families
    ]


@dataclass
class Series:
    """One probe's runs: times, draws, and the results they make."""

    probe: ProbeConfig
    traffic: Traffic
    interval: float
    timeout: float
    units: list[Unit]
    rng: random.Random
    even: bool
    spread: float
    next_at: float = math.inf
    _credit: float = 0.0
    _blips: dict[int, int] = field(default_factory=dict)
    """Index of an error blip → failures it still owes."""
    _latency_blips: dict[int, int] = field(default_factory=dict)

    def start(self, at: float) -> None:
        """The daemon (re)starts at ``at``: the first run at a random phase within the first interval."""
        first = at + self.rng.uniform(0.0, self.spread)
        self.next_at = math.ceil(first / PHASE_GRID_S - 1e-9) * PHASE_GRID_S

    def stop(self) -> None:
        self.next_at = math.inf

    def runs_until(self, end: float, t0: float) -> Iterator[list[ProbeResult]]:
        """Every run starting before ``end`` (absolute times; ``t0`` is the scenario's t+0)."""
        while self.next_at < end:
            at = self.next_at
            yield self.run(at, at - t0)
            self.next_at = at + self.interval

    # -- one run ------------------------------------------------------------------------------------
    def _error(self, rel: float) -> tuple[bool, str]:
        """Whether this run fails, and why."""
        reason = "simulated error"
        for i, seg in enumerate(self.traffic.errors):
            if seg.blip is not None and rel >= seg.blip:
                owed = self._blips.setdefault(i, seg.failures or 1)
                if owed > 0:
                    self._blips[i] = owed - 1
                    return True, seg.reason or "simulated error (blip)"
        rate = 0.0
        for seg in self.traffic.errors:
            r = seg.rate(rel)
            if r > 0:
                rate += r
                reason = seg.reason or reason
        rate = min(1.0, rate)
        if rate <= 0.0:
            self._credit = 0.0
            return False, ""
        if self.even:
            self._credit += rate
            if self._credit >= 1.0 - 1e-9:
                self._credit -= 1.0
                return True, reason
            return False, ""
        return self.rng.random() < rate, reason

    def _latency(self, rel: float) -> float:
        t = self.traffic
        latency = t.base_latency(rel)
        for i, seg in enumerate(t.latency):
            if seg.blip is not None:
                if rel >= seg.blip:
                    owed = self._latency_blips.setdefault(i, seg.results or 1)
                    if owed > 0:
                        self._latency_blips[i] = owed - 1
                        assert seg.add is not None
                        latency += seg.add
                continue
            added = seg.added(rel)
            if added > 0 and (seg.share is None or seg.share >= 1.0 or self.rng.random() < seg.share):
                latency += added
        return latency

    def run(self, at: float, rel: float) -> list[ProbeResult]:
        shaped = any(u.shaped for u in self.units)
        failed, why = self._error(rel) if shaped else (False, "")
        slow = self._latency(rel) if shaped else DEFAULT_LATENCY
        probe = self.probe
        out: list[ProbeResult] = []
        clock = at
        postgres = isinstance(probe, PostgresProbeConfig)
        # A failed connectivity check is the database down: every family fails with it.
        db_down = (
            failed
            and postgres
            and any(u.shaped and u.labels.get("check") == "connectivity" for u in self.units)
        )
        stopped_after: int | None = None
        for unit in self.units:
            if stopped_after is not None and unit.step > stopped_after:
                break
            latency = slow if unit.shaped else DEFAULT_LATENCY
            outcome, reason = Outcome.OK, ""
            if failed and (unit.shaped or db_down):
                outcome = Outcome.FAILED
                # The database down: connectivity says why, the other families were not checked.
                checked = not postgres or unit.labels.get("check") == "connectivity"
                reason = why if checked else f"not checked: {why}"
                if isinstance(probe, JourneyProbeConfig):
                    stopped_after = unit.step
            elif latency > self.timeout:
                outcome, reason = Outcome.FAILED, f"timed out after {self.timeout:g} s"
                latency = self.timeout
                if isinstance(probe, JourneyProbeConfig):
                    stopped_after = unit.step
            elif unit.failed_over is not None and latency > unit.failed_over:
                outcome, reason = Outcome.FAILED, f"took {_ms(latency)} (> {_ms(unit.failed_over)})"
                if isinstance(probe, JourneyProbeConfig):
                    stopped_after = unit.step
            elif unit.degraded_over is not None and latency > unit.degraded_over:
                outcome, reason = Outcome.DEGRADED, f"took {_ms(latency)} (> {_ms(unit.degraded_over)})"
            out.append(
                ProbeResult(
                    probe=probe.name,
                    kind=probe.kind,
                    target="simulated",
                    outcome=outcome,
                    latency_s=latency,
                    started_at=clock,
                    reason=reason,
                    labels=unit.labels,
                )
            )
            if isinstance(probe, JourneyProbeConfig):
                clock += latency
        return out


DEFAULT_LATENCY = 0.020


def unselected(scenario: Scenario, config: WatchdogConfig) -> list[tuple[str, str]]:
    """(probe, message) for each listed probe whose ``labels`` select none of its results."""
    out: list[tuple[str, str]] = []
    for probe in config.enabled_probes():
        traffic = scenario.probes.get(probe.name)
        if traffic is None or not traffic.labels:
            continue
        units = units_of(probe, traffic.labels)
        if not any(u.shaped for u in units):
            shown = "; ".join(
                sorted({", ".join(f"{k}={v}" for k, v in sorted(u.labels.items())) for u in units})
            )
            out.append((probe.name, f"select none of the probe's results (it yields: {shown})"))
    return out


def build_series(scenario: Scenario, config: WatchdogConfig) -> list[Series]:
    """A Series per enabled probe: shaped by the scenario's traffic if listed, else healthy (or none with
    ``other_probes: absent``)."""
    defaults = config.settings.defaults
    out: list[Series] = []
    for probe in config.enabled_probes():
        traffic = scenario.probes.get(probe.name)
        if traffic is None:
            if scenario.other_probes == "absent":
                continue
            traffic = Traffic()
        interval = traffic.interval or probe.interval or defaults.interval
        timeout = probe.timeout or defaults.timeout
        spread = interval if defaults.jitter is None else min(defaults.jitter, interval)
        units = units_of(probe, traffic.labels)
        out.append(
            Series(
                probe,
                traffic,
                interval,
                timeout,
                units,
                random.Random(f"{scenario.seed}:{probe.name}"),
                scenario.sampling == "even",
                spread,
            )
        )
    return out


def results_until(series: Sequence[Series], end: float, t0: float) -> list[ProbeResult]:
    """Every result of the runs due before ``end`` not yet made, sorted by start time."""
    out: list[ProbeResult] = []
    for s in series:
        for results in s.runs_until(end, t0):
            out.extend(results)
    out.sort(key=lambda r: r.started_at)
    return out

"""Burn rates per window and the multiwindow, multi-burn-rate alert state machine (pure functions).

burn rate = error ratio / (1 - objective): 1 spends the budget exactly over the SLO window, 14.4 spends 2 %
of a 30-day budget in an hour. Time to fire after a step to error ratio e at objective o:
``window * burn_rate * (1 - o) / e`` (52 s for 14.4x over 1 h at 99.9 % with e = 100 %).

A window is read as a share of the *budget*, so a window the data covers only in part is not read as a full
one: when data (for this SLI source) begins ``c`` seconds before the window's end, ``c < length``, the burn
rate divides the bad events by the events a full window would have held, ``total * length / c`` (the uncovered
part is taken to have had the same traffic and no errors), with ``c`` floored at ``MIN_COVERAGE_S`` to bound
the extrapolation. Coverage starts at the first minute with data, not at engine start: a restarted watchdog
over a full store changes nothing, while right after a fresh start (or a state reset) one failure among 75
results in 150 s burns 1 / (75 * 3600 / 150) / 0.001 = 0.56x over 1 h instead of 13.3x over every window.
A total outage still fires the 14.4x / 1 h page after 52 s: the Workbook's time to fire for a full window.
Time-slice SLIs do the same in minutes. ``error_ratio`` stays the observed bad / total.

No NaN or infinity leaves this module: an empty window has error ratio 0 and state ``no_data``; every input
is clamped to be finite and non-negative first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from watchdog.core.durations import format_duration

WindowState = Literal["ok", "low_traffic", "no_data"]
NoDataPolicy = Literal["ignore", "alert", "bad"]

_EPS = 1e-9
_INF = math.inf
MIN_COVERAGE_S = 60.0
"""Coverage below this counts as this much: a window is extrapolated at most ``length / 60 s`` times."""


def finite(x: float, default: float = 0.0) -> float:
    return x if math.isfinite(x) else default


def nonneg(x: float) -> float:
    """Finite and >= 0 (interpolated differences can be -1e-12)."""
    return x if x > 0.0 and math.isfinite(x) else 0.0


@dataclass(slots=True)
class WindowStats:
    """One window's counts and burn rate (read-only by convention: not frozen, which is 5x cheaper to build,
    and thousands are built per tick)."""

    seconds: float
    good: float
    """Good events (or good minutes for time-slice SLIs), after the no-data policy."""
    total: float
    """All events (or valid minutes), after the no-data policy (``bad`` adds the missing minutes)."""
    events: float
    """Probe results (or observations) actually seen: what the low-traffic guard counts."""
    missing: float
    """Minutes without data (beyond ``no_data_after``)."""
    error_ratio: float
    burn_rate: float
    state: WindowState
    counts: bool
    """Whether this window's burn rate may fire or hold an alert (guard passed, or ``no_data: bad``)."""
    covered: float
    """Seconds of the window covered by data (``seconds`` once data is older than the window); the burn rate
    reads ``total * seconds / max(covered, MIN_COVERAGE_S)`` events as the window's expected total."""

    @property
    def label(self) -> str:
        return format_duration(self.seconds)

    @property
    def bad(self) -> float:
        return max(0.0, self.total - self.good)

    def exceeds(self, rate: float) -> bool:
        return self.counts and self.burn_rate > rate


def window_stats(
    seconds: float,
    good: float,
    total: float,
    events: float,
    missing: float,
    data_minutes: float,
    budget_ratio: float,
    min_events: int,
    no_data: NoDataPolicy,
    time_slices: bool,
    covered: float | None = None,
) -> WindowStats:
    """Counts of a window -> burn rate, applying the no-data policy, the coverage normalisation and the
    low-traffic guard.

    ``covered``: seconds of the window since data began (None: all of it). Under ``seconds`` the burn rate is
    normalised by the expected total ``total * seconds / max(covered, MIN_COVERAGE_S)`` (module docstring).

    ``no_data: bad``: a missing minute is a bad slice (time-slice SLIs) or that many bad events as an
    average minute with data in the window had (event SLIs; 1 when the window has no data at all), so a dead
    probe burns the budget like a total outage.
    """
    # Finite and >= 0 (interpolated differences can be -1e-12; NaN fails every comparison).
    if not 0.0 < total < _INF:
        total = 0.0
    if not 0.0 < good < _INF:
        good = 0.0
    elif good > total:
        good = total
    if not 0.0 < events < _INF:
        events = 0.0
    if not 0.0 < missing < _INF:
        missing = 0.0
    if not 0.0 < data_minutes < _INF:
        data_minutes = 0.0
    if no_data == "bad" and missing > _EPS:
        if time_slices:
            total += missing
        else:
            rate = total / data_minutes if data_minutes > _EPS and total > _EPS else 1.0
            total += missing * rate
    error_ratio = (total - good) / total if total > _EPS else 0.0
    if not 0.0 <= error_ratio <= 1.0:
        error_ratio = 1.0 if error_ratio > 1.0 else 0.0
    if covered is None or not covered < seconds:  # NaN reads as fully covered
        covered = seconds
        share = 1.0
    else:
        covered = max(covered, 0.0)
        share = max(covered, MIN_COVERAGE_S) / seconds if seconds > 0 else 1.0
        share = min(share, 1.0)
    burn = error_ratio * share / budget_ratio if budget_ratio > 0 else 0.0
    if not burn < _INF:  # pragma: no cover - objective < 100 keeps budget_ratio well above 0
        burn = 1e15
    if events <= _EPS:
        state: WindowState = "no_data"
    elif events + _EPS < min_events:
        state = "low_traffic"
    else:
        state = "ok"
    counts = state == "ok" or (no_data == "bad" and missing > _EPS)
    return WindowStats(seconds, good, total, events, missing, error_ratio, burn, state, counts, covered)


@dataclass(slots=True)
class RuleState:
    """Mutable state of one burn-rate rule between evaluations."""

    firing: bool = False
    since: float | None = None
    clear_since: float | None = None


Transition = Literal["fired", "resolved"]


def rule_conditions(
    long: WindowStats, short: WindowStats, rate: float, gate: WindowStats | None = None
) -> tuple[bool, bool]:
    """(fire, clear): fire when both windows exceed the rate and so does ``gate`` (the severity's shortest
    short window: the errors are still happening); clear otherwise.

    So a firing rule resolves once the gate window has been back under *its* rate for ``resolve_after``
    (the 6x / 6 h-30 m page 5 minutes after the errors stop, not 30: its 30-minute window would hold them
    that long), while a sustained burn over the rate keeps it over in every window. Firing needs the gate
    too, so the stale errors still in the long and short windows cannot fire the rule again after it
    resolved. A gate with too few events to count is not used (the caller passes ``short`` or None)."""
    fire = long.exceeds(rate) and short.exceeds(rate) and (gate is None or gate.exceeds(rate))
    return fire, not fire


def step_rule(state: RuleState, *, fire: bool, clear: bool, now: float, hold: float) -> Transition | None:
    """Advance a rule: a quiet rule fires as soon as ``fire``; a firing rule resolves once ``clear`` has held
    continuously for ``hold`` seconds (hysteresis: a short dip under the rate does not resolve it)."""
    if not state.firing:
        if fire:
            state.firing, state.since, state.clear_since = True, now, None
            return "fired"
        return None
    if clear:
        if state.clear_since is None:
            state.clear_since = now
        if now - state.clear_since >= hold:
            state.firing, state.since, state.clear_since = False, None, None
            return "resolved"
    else:
        state.clear_since = None
    return None

"""What an SLO evaluation produces: per-SLO status (SLI, budget, burn rates per rule, forecast), the alert
signals handed to the incident layer, and the budget burn-down history. Plain data, no I/O."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from watchdog.slo.budget import Budget
from watchdog.slo.burn import WindowStats

Severity = Literal["page", "ticket"]
SignalReason = Literal["burn_rate", "no_data"]
SEVERITIES: tuple[Severity, ...] = ("page", "ticket")


@dataclass(frozen=True, slots=True)
class AlertSignal:
    """A transition for the alerting layer: an SLO's page/ticket started or stopped firing."""

    slo: str
    severity: Severity
    state: Literal["firing", "resolved"]
    burn_rates: Mapping[str, float]
    """Burn rate per window label (``"1h"``, ``"5m"``...) of the rules of this severity."""
    at: float
    summary: str
    reason: SignalReason = "burn_rate"
    rules: tuple[str, ...] = ()
    """Rules firing (for ``firing``) or that were firing (for ``resolved``), e.g. ``("page-1h-5m",)``."""
    since: float | None = None
    """Where the incident's cost is counted from: the leading rule's short window when it fired (engine
    start for an incident restored after a restart). None for no-data signals."""
    bad: float | None = None
    """Bad events (or minutes) since ``since``: so far (``firing``) or the incident's whole cost."""
    budget_spent: float | None = None
    """``bad`` as a share of the SLO window's budget (0.041: 4.1 %)."""

    @property
    def dedup_key(self) -> str:
        return f"slo:{self.slo}:{self.reason}:{self.severity}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "slo": self.slo,
            "severity": self.severity,
            "state": self.state,
            "reason": self.reason,
            "rules": list(self.rules),
            "burn_rates": dict(self.burn_rates),
            "at": self.at,
            "summary": self.summary,
            "since": self.since,
            "bad": self.bad,
            "budget_spent": self.budget_spent,
        }


@dataclass(slots=True)
class RuleStatus:
    rule: str
    severity: Severity
    burn_rate: float
    """The threshold."""
    long_window: str
    short_window: str
    long_burn_rate: float
    short_burn_rate: float
    long_counts: bool
    short_counts: bool
    firing: bool
    since: float | None
    clear_since: float | None
    resolve_window: str
    """The window that must show the burn for the rule to fire and stay firing: the severity's shortest short
    window (``"5m"`` for both page rules), or the rule's own short one when that has too few events to
    count. A firing rule resolves once this (or another of its windows) has been under the rate for
    ``resolve_after``."""
    resolve_burn_rate: float
    resolve_counts: bool
    resolve_after: float
    """The hysteresis hold in seconds."""
    fault_rate: float | None = None
    """While firing: the error ratio the incident showed (bad / total from the resolve window before it
    fired to the last bad event); None when nothing was bad or the rule is quiet."""
    quiet_needed: float | None = None
    """While firing: seconds without a bad event after which the fault is over at the current traffic
    (good events in a row conclusive at ``fault_rate``; at most the rule's short window, at least the
    resolve window)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "severity": self.severity,
            "burn_rate": self.burn_rate,
            "long_window": self.long_window,
            "short_window": self.short_window,
            "long_burn_rate": self.long_burn_rate,
            "short_burn_rate": self.short_burn_rate,
            "long_counts": self.long_counts,
            "short_counts": self.short_counts,
            "firing": self.firing,
            "since": self.since,
            "clear_since": self.clear_since,
            "resolve_window": self.resolve_window,
            "resolve_burn_rate": self.resolve_burn_rate,
            "resolve_counts": self.resolve_counts,
            "fault_rate": self.fault_rate,
            "quiet_needed": self.quiet_needed,
            "resolve_after": self.resolve_after,
        }


@dataclass(slots=True)
class SloStatus:
    """One SLO at one evaluation. Every float is finite. Read-only by convention (statuses, windows and rules
    are plain slotted dataclasses: a thousand SLOs build ~15,000 of them per tick)."""

    name: str
    description: str
    kind: str
    objective: float
    """As a ratio: 0.999."""
    window: str
    """``"30d"`` or ``"calendar month (Asia/Taipei)"``."""
    window_start: float
    window_end: float
    period_end: float
    """When the budget period ends (calendar windows; equals window_end for rolling ones)."""
    evaluated_at: float
    sli: float | None
    """Good / total over the SLO window; None without any data in it."""
    good: float
    total: float
    events: float
    budget: Budget
    budget_spent_24h: float
    """Share of the window's budget spent in the last 24 hours."""
    windows: Mapping[str, WindowStats]
    """Alert and forecast windows by label (``"5m"``, ``"1h"``, ...)."""
    slo_window: WindowStats
    rules: tuple[RuleStatus, ...]
    firing: tuple[str, ...]
    """Severities firing now: ``"page"``, ``"ticket"``, ``"no_data"``."""
    no_data: bool
    """No result/observation for longer than ``no_data_after`` (or none in the window at all)."""
    last_data_at: float | None
    """End of the last minute with data (None: no data in the loaded span)."""
    exhaustion_at: float | None
    """Earliest projected budget exhaustion at the current 1 h / 6 h burn rate; None when not on course to."""
    forecasts: Mapping[str, float | None]

    @property
    def budget_remaining(self) -> float:
        return self.budget.remaining

    @property
    def burn_rates(self) -> dict[str, float]:
        return {label: w.burn_rate for label, w in self.windows.items()}

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "kind": self.kind,
            "objective": self.objective,
            "window": self.window,
            "window_start": self.window_start,
            "window_end": self.window_end,
            "period_end": self.period_end,
            "evaluated_at": self.evaluated_at,
            "sli": self.sli,
            "good": self.good,
            "total": self.total,
            "events": self.events,
            "budget": {
                "allowed": self.budget.allowed,
                "spent": self.budget.spent,
                "remaining": self.budget.remaining,
                "spent_24h": self.budget_spent_24h,
            },
            "burn_rates": self.burn_rates,
            "windows": {
                label: {
                    "seconds": w.seconds,
                    "good": w.good,
                    "total": w.total,
                    "events": w.events,
                    "missing_minutes": w.missing,
                    "error_ratio": w.error_ratio,
                    "burn_rate": w.burn_rate,
                    "state": w.state,
                    "counts": w.counts,
                }
                for label, w in self.windows.items()
            },
            "rules": [r.to_dict() for r in self.rules],
            "firing": list(self.firing),
            "no_data": self.no_data,
            "last_data_at": self.last_data_at,
            "exhaustion_at": self.exhaustion_at,
            "forecasts": dict(self.forecasts),
        }


@dataclass(frozen=True, slots=True)
class Evaluation:
    at: float
    statuses: list[SloStatus]
    signals: list[AlertSignal]
    """Transitions since the previous evaluation."""
    duration_s: float = 0.0

    def status(self, name: str) -> SloStatus:
        for s in self.statuses:
            if s.name == name:
                return s
        raise KeyError(name)


@dataclass(frozen=True, slots=True)
class BudgetHistory:
    """The budget burn-down of one SLO over its current window, for plots."""

    name: str
    objective: float
    window: str
    start: float
    end: float
    period_end: float
    times: list[float]
    remaining: list[float]
    """Budget remaining at each of ``times`` (1.0 at the window start)."""
    day_starts: list[float]
    spent_per_day: list[float]
    """Share of the budget spent in each day starting at ``day_starts`` (local days for calendar windows)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "objective": self.objective,
            "window": self.window,
            "start": self.start,
            "end": self.end,
            "period_end": self.period_end,
            "burn_down": [[t, r] for t, r in zip(self.times, self.remaining, strict=True)],
            "spent_per_day": [[t, s] for t, s in zip(self.day_starts, self.spent_per_day, strict=True)],
        }



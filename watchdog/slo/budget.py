"""Error budgets and their exhaustion forecast (pure functions).

- Event SLIs: the budget is ``(1 - objective) x events in the window``; remaining = 1 - bad / allowed, the
  same as ``1 - error_ratio / (1 - objective)`` (what Sloth and Pyrra show).
- Time-slice SLIs: the budget is ``(1 - objective) x minutes in the whole window`` (43.2 bad minutes per 30
  days at 99.9 %; 44.58 for a 743-hour March in New York), whatever share of them had data.

``remaining`` is a fraction of the budget and goes negative once the budget is overspent (-0.5 = spent 150 %);
it is reported as is (status, JSON, /metrics), never NaN or infinite. People read it in words instead
(``messages.budget_state``: "exhausted (burned 1.5x the budget)").
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(slots=True)
class Budget:
    allowed: float
    """Bad events (or bad minutes) the window allows."""
    spent: float
    """Bad events (or bad minutes) in the window so far."""
    remaining: float
    """Fraction of the budget left: 1 - spent / allowed (1.0 with nothing allowed or spent yet)."""

    @property
    def spent_fraction(self) -> float:
        """Spent / allowed: 1.5 = burned 1.5 times the budget."""
        return 1.0 - self.remaining

    @property
    def exhausted(self) -> bool:
        return self.remaining <= 0


def budget(good: float, total: float, *, budget_ratio: float, slice_minutes: float | None = None) -> Budget:
    """Budget of a window. ``slice_minutes`` (time-slice SLIs): minutes in the whole window."""
    good = good if math.isfinite(good) and good > 0 else 0.0
    total = total if math.isfinite(total) and total > 0 else 0.0
    bad = max(0.0, total - good)
    base = total if slice_minutes is None else max(0.0, slice_minutes)
    allowed = budget_ratio * base if budget_ratio > 0 and math.isfinite(budget_ratio) else 0.0
    remaining = 1.0 - bad / allowed if allowed > 0 else 1.0
    if not math.isfinite(remaining):  # pragma: no cover - allowed > 0 and bad finite keep it finite
        remaining = 1.0
    return Budget(allowed=allowed, spent=bad, remaining=remaining)


def exhaustion_at(
    remaining: float,
    burn_rate: float,
    *,
    now: float,
    period_length: float,
    rolling: bool,
    period_end: float,
) -> float | None:
    """When the budget runs out if ``burn_rate`` persists; None when it will not (in this period).

    A burn rate b spends ``b / period_length`` of the budget per second (steady traffic). Already exhausted:
    ``now``. Rolling windows: only b > 1 exhausts the budget (below that, old errors leave the window faster
    than new ones arrive and the remaining budget settles at 1 - b). Calendar windows: only if it happens
    before the month ends.
    """
    if not (math.isfinite(remaining) and math.isfinite(burn_rate) and period_length > 0):
        return None
    if remaining <= 0:
        return now
    if burn_rate <= 0 or (rolling and burn_rate <= 1.0):
        return None
    t = now + remaining * period_length / burn_rate
    if not rolling and t > period_end:
        return None
    return t if math.isfinite(t) else None

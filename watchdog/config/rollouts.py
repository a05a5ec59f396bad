"""Rollouts (``rollouts:`` in ``alerts/*.yaml``): a canary the watchdog guards and rolls back by itself.

A rollout names the flag and where it lives, the canary cohort (the probe, and labels, pinned to the
database path) and optionally the baseline cohort (pinned to YAML), the limits (absolute, and relative to
the baseline), the sequential test's ``alpha`` and minimum sample, what to do without data (hold, never
pass), the escalation policy its pages use and, optionally, staged promotion.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from watchdog.config.flags import FlagConfig
from watchdog.config.types import Duration, Name, PositiveDuration


def _share(value: Any) -> Any:
    """``0.1%`` → 0.001; a bare number is a fraction (0.001)."""
    if isinstance(value, str) and value.strip().endswith("%"):
        try:
            return float(value.strip()[:-1]) / 100.0
        except ValueError:
            raise ValueError(f"{value!r} is not a percentage") from None
    return value


Share = Annotated[float, BeforeValidator(_share), Field(gt=0, lt=1)]
"""A rate as ``0.1%`` or ``0.001``."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Cohort(Strict):
    """The results of one probe (optionally only its series with these labels) as one cohort."""

    probe: Name
    match: dict[str, str] = Field(default_factory=dict)


class LatencyLimit(Strict):
    threshold: PositiveDuration
    """The canary fails when more than ``1 - quantile`` of its results take longer than this."""
    quantile: float = Field(default=0.95, gt=0.5, lt=1.0)


class Limits(Strict):
    error_rate: Share = 0.001
    """The canary's failed share may not exceed this (the seed: 0.1 %)."""
    relative_to_baseline: float | None = Field(default=2.0, gt=1.0)
    """...nor this many times the baseline's rate, when the baseline fails more than ``error_rate``
    (a shared outage is not the canary's fault: it does not roll back what YAML suffers too)."""
    latency: LatencyLimit | None = Field(default_factory=lambda: LatencyLimit(threshold=0.2))
    """The seed: API P95 < 200 ms."""


class Promotion(Strict):
    """Staged promotion: after ``dwell`` at a step with conclusive evidence that the canary is within its
    limits, go to the next step (e.g. 5 → 25 → 50 → 100 %)."""

    steps: list[float] = Field(min_length=1)
    dwell: PositiveDuration = 600.0

    @model_validator(mode="after")
    def _ascending(self) -> Promotion:
        if any(not 0 < s <= 100 for s in self.steps) or self.steps != sorted(set(self.steps)):
            raise ValueError("steps must be percentages in (0, 100], ascending, each once")
        return self


class Rollout(Strict):
    name: Name
    flag: FlagConfig
    canary: Cohort
    baseline: Cohort | None = None
    limits: Limits = Field(default_factory=Limits)
    alpha: float = Field(default=0.001, gt=0, lt=0.5)
    """Bound on the false-rollback probability over the whole rollout, however often it is checked."""
    min_samples: int = Field(default=3, ge=1)
    """No decision on fewer canary results than this."""
    no_data_after: PositiveDuration = 120.0
    """No canary result for this long: hold (no promotion) and say so; never read as healthy."""
    check_every: PositiveDuration = 1.0
    escalation: Name = "default"
    group: Name | None = "database"
    """The rollback's page joins this alert group's open thread (the incident that caused it)."""
    promote: Promotion | None = None
    actor: str = "sre-watchdog"
    hold_after_rollback: bool = True
    grace: Duration = 0.0
    """Results in the first ``grace`` seconds of a stage are not counted (a cold cache right after a flip)."""

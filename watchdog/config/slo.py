"""SLO instances (``slo/*.yaml``). The SLO engine (watchdog/slo) evaluates them from store aggregates."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from watchdog.config.types import Duration, Name, PositiveDuration


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RollingWindow(Strict):
    kind: Literal["rolling"] = "rolling"
    length: PositiveDuration = 30 * 86400.0


class CalendarWindow(Strict):
    kind: Literal["calendar_month"]
    timezone: str = "UTC"


Window = Annotated[RollingWindow | CalendarWindow, Field(discriminator="kind")]


class ProbeSelector(Strict):
    probe: Name
    labels: dict[str, str] = Field(default_factory=dict)
    """Only series whose labels include all of these (cohort, step, lang)."""


class RatioSli(ProbeSelector):
    """Good events / all events from probe results (availability, error rate)."""

    kind: Literal["availability"]
    degraded_is_good: bool = True


class LatencySli(ProbeSelector):
    """Events faster than ``threshold`` / all events; exact when the threshold is a bucket edge."""

    kind: Literal["latency"]
    threshold: PositiveDuration
    count_failures_as_bad: bool = True


class UptimeSli(ProbeSelector):
    """Fraction of good minutes: a minute is good when its good-event ratio reaches ``minute_good_ratio``."""

    kind: Literal["uptime"]
    minute_good_ratio: float = Field(default=1.0, gt=0, le=1)


class MetricThresholdSli(ProbeSelector):
    """Good time slices: minutes whose observation (e.g. ``db_cpu_percent``) stays under/over a bound."""

    kind: Literal["metric_threshold"]
    observation: str
    below: float | None = None
    above: float | None = None
    aggregate: Literal["max", "avg", "last"] = "max"

    @model_validator(mode="after")
    def _one_bound(self) -> MetricThresholdSli:
        if (self.below is None) == (self.above is None):
            raise ValueError("give exactly one of below or above")
        return self


Sli = Annotated[RatioSli | LatencySli | UptimeSli | MetricThresholdSli, Field(discriminator="kind")]


class BurnRateAlert(Strict):
    severity: Literal["page", "ticket"]
    burn_rate: float = Field(gt=0)
    long_window: PositiveDuration
    short_window: PositiveDuration

    @model_validator(mode="after")
    def _short_is_shorter(self) -> BurnRateAlert:
        if self.short_window >= self.long_window:
            raise ValueError("short_window must be shorter than long_window")
        return self


def default_burn_rate_alerts() -> list[BurnRateAlert]:
    """SRE Workbook, "Alerting on SLOs", multiwindow multi-burn-rate defaults."""
    return [
        BurnRateAlert(severity="page", burn_rate=14.4, long_window=3600, short_window=300),
        BurnRateAlert(severity="page", burn_rate=6, long_window=6 * 3600, short_window=1800),
        BurnRateAlert(severity="ticket", burn_rate=1, long_window=3 * 86400, short_window=6 * 3600),
    ]


class SloConfig(Strict):
    name: Name
    description: str = ""
    objective: float = Field(gt=0, lt=100)
    """Percent of good events/minutes, e.g. 99.9."""
    sli: Sli
    window: Window = Field(default_factory=RollingWindow)
    alerts: list[BurnRateAlert] = Field(default_factory=default_burn_rate_alerts)
    min_events: int = Field(default=10, ge=0)
    """Fewer events than this in a window: its burn rate does not count (low-traffic guard)."""
    no_data: Literal["ignore", "alert", "bad"] = "ignore"
    resolve_after: Duration = 300.0
    """Hysteresis: a firing alert resolves only after its short window stayed under the rate this long."""


class SloFile(Strict):
    slos: list[SloConfig] = Field(default_factory=list)

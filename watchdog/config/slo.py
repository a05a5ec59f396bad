"""SLO instances (``slo/*.yaml``). The SLO engine (watchdog/slo) evaluates them from store aggregates.

A file holds ``slos: [...]``. Example (the seed's "error rate < 0.1 %")::

    slos:
      - name: api-availability
        objective: 99.9                 # percent of good events
        sli: {kind: error_rate, probe: api-health}
        window: {kind: rolling, length: 30d}        # the default
        no_data: alert

Defaults follow the SRE Workbook ("Alerting on SLOs"): page at 14.4x over 1 h and 5 min, page at 6x over 6 h
and 30 min, ticket at 1x over 3 d and 6 h. See watchdog/slo/__init__.py for the exact semantics.
"""

from __future__ import annotations

import math
import zoneinfo
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from watchdog.config.types import Duration, Name, PositiveDuration
from watchdog.core.durations import format_duration


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RollingWindow(Strict):
    """The last ``length`` (default 30 days), moving with the clock."""

    kind: Literal["rolling"] = "rolling"
    length: PositiveDuration = 30 * 86400.0

    @field_validator("length")
    @classmethod
    def _sane_length(cls, length: float) -> float:
        if not 60.0 <= length <= 400 * 86400.0:
            raise ValueError("a rolling window is between 1m and 400d long")
        return length


class CalendarWindow(Strict):
    """The current calendar month in ``timezone`` (IANA name): from local midnight on the 1st to now.

    Months in zones with daylight saving time are 743/744/745 hours long; the budget resets at local
    midnight on the 1st.
    """

    kind: Literal["calendar_month"]
    timezone: str = "UTC"

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, name: str) -> str:
        try:
            zoneinfo.ZoneInfo(name)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {name!r} (use an IANA name such as Asia/Taipei)") from exc
        return name


Window = Annotated[RollingWindow | CalendarWindow, Field(discriminator="kind")]


class ProbeSelector(Strict):
    probe: Name
    labels: dict[str, str] = Field(default_factory=dict)
    """Only series whose labels include all of these (cohort, step, lang)."""


class RatioSli(ProbeSelector):
    """Good events / all events from probe results. ``availability`` and ``error_rate`` are the same
    measurement: "error rate < 0.1 %" is ``kind: error_rate, objective: 99.9``."""

    kind: Literal["availability", "error_rate"]
    degraded_is_good: bool = True


class LatencySli(ProbeSelector):
    """Events at or under ``threshold`` / all events; exact when the threshold is a bucket edge of the store
    (the daemon adds every configured threshold to the store's edges).

    With ``count_failures_as_bad`` a failed result is bad however fast it was. The store keeps one latency
    histogram per minute for all outcomes, so the engine counts ``min(fast, not failed)`` as good: exact
    when the failures of a minute were all slow (timeouts) or all fast (refused), an upper bound otherwise.
    """

    kind: Literal["latency"]
    threshold: PositiveDuration
    count_failures_as_bad: bool = True


class UptimeSli(ProbeSelector):
    """Fraction of good minutes: a minute is good when its good-event ratio reaches ``minute_good_ratio``.

    A minute counts once it is over; minutes without results follow the SLO's ``no_data`` policy.
    """

    kind: Literal["uptime"]
    minute_good_ratio: float = Field(default=1.0, gt=0, le=1)
    degraded_is_good: bool = True


class MetricThresholdSli(ProbeSelector):
    """Good time slices: minutes whose observation (e.g. ``db_cpu_percent``) stays under ``below`` / over
    ``above`` (strictly). ``aggregate`` picks the minute's value from its observations."""

    kind: Literal["metric_threshold"]
    observation: str = Field(min_length=1)
    below: float | None = None
    above: float | None = None
    aggregate: Literal["max", "min", "avg", "last"] = "max"

    @model_validator(mode="after")
    def _one_bound(self) -> MetricThresholdSli:
        if (self.below is None) == (self.above is None):
            raise ValueError("give exactly one of below or above")
        bound = self.below if self.below is not None else self.above
        if bound is not None and not math.isfinite(bound):
            raise ValueError("the bound must be a finite number")
        return self


class CountedRatioSli(ProbeSelector):
    """Good events / all events counted by a probe's observations: per minute, events = the sum of the
    ``total`` observations and bad = the sum of the ``bad`` ones (good = total - bad), e.g. a Cloud Run
    revision's real requests and their 5xx (``cloud_run_traffic``: ``total: cloud_run_requests, bad:
    cloud_run_5xx``). ``labels`` select the observation series (``revision: …``)."""

    kind: Literal["counted_ratio"]
    total: str = Field(min_length=1)
    bad: str = Field(min_length=1)

    @model_validator(mode="after")
    def _distinct(self) -> CountedRatioSli:
        if self.total == self.bad:
            raise ValueError("total and bad must be different observations")
        return self


Sli = Annotated[
    RatioSli | LatencySli | UptimeSli | MetricThresholdSli | CountedRatioSli, Field(discriminator="kind")
]

TIME_SLICE_KINDS = frozenset({"uptime", "metric_threshold"})
"""SLI kinds measured in good/bad minutes rather than good/bad events."""


class BurnRateAlert(Strict):
    """Fires when the burn rate exceeds ``burn_rate`` over both windows and over the severity's shortest short
    window; resolves once that shortest short window has been back under it for ``resolve_after``."""

    name: Name | None = None
    """Rule id in statuses and metrics; default ``<severity>-<long>-<short>``, e.g. ``page-1h-5m``."""
    severity: Literal["page", "ticket"]
    burn_rate: float = Field(gt=0, allow_inf_nan=False)
    long_window: PositiveDuration
    short_window: PositiveDuration
    resolve_after: Duration | None = None
    """Hysteresis hold; default the SLO's ``resolve_after``, else a tenth of the short window."""
    min_events: int | None = Field(default=None, ge=0)
    """Per-rule low-traffic guard; default the SLO's ``min_events``."""

    @model_validator(mode="after")
    def _short_is_shorter(self) -> BurnRateAlert:
        if self.short_window >= self.long_window:
            raise ValueError("short_window must be shorter than long_window")
        if self.long_window > 400 * 86400.0:
            raise ValueError("long_window is at most 400d")
        return self

    @property
    def rule_id(self) -> str:
        if self.name:
            return self.name
        return f"{self.severity}-{format_duration(self.long_window)}-{format_duration(self.short_window)}"


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
    objective: float = Field(gt=0, lt=100, allow_inf_nan=False)
    """Percent of good events/minutes, e.g. 99.9."""
    sli: Sli
    window: Window = Field(default_factory=RollingWindow)
    alerts: list[BurnRateAlert] = Field(default_factory=default_burn_rate_alerts)
    min_events: int = Field(default=8, ge=0)
    """Low-traffic guard: a window with fewer events (probe results; observations for metric SLIs) does
    not count towards an alert. A 30 s probe puts ~10 results in a 5-minute window; a service with 10
    events an hour has ~1 in 5 minutes and ~5 in 30 minutes, so a single failure cannot page it."""
    no_data: Literal["ignore", "alert", "bad"] = "ignore"
    """What a stretch without data means: ``ignore`` (nothing; burn rates only from data present),
    ``alert`` (a no-data signal of ``no_data_severity``), ``bad`` (missing minutes are bad minutes / bad
    events at the window's event rate)."""
    no_data_after: Duration = 120.0
    """Silence shorter than this is not "no data" (jitter, a slow probe); set it above the probe interval
    for probes that run less than once a minute."""
    no_data_severity: Literal["page", "ticket"] = "ticket"
    resolve_after: Duration | None = None
    """Hysteresis for every rule without its own: a firing rule resolves only after the severity's shortest
    short window has stayed under the rule's rate this long. Default: a tenth of each rule's short window
    (30 s for the 5-minute page, 3 min for the 30-minute one, 36 min for the 6-hour ticket). The 5-minute
    window must first empty of the errors, so a page resolves about 5.5 minutes after errors stop (about 8
    when the 6x rule fired too)."""

    @model_validator(mode="after")
    def _unique_rules(self) -> SloConfig:
        ids = [a.rule_id for a in self.alerts]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"alert rules need distinct names (give `name:`); repeated: {', '.join(dupes)}")
        return self

    @property
    def objective_ratio(self) -> float:
        """0.999 for 99.9 (rounded so that 99.9 / 100 does not show as 0.9990000000000001)."""
        return round(self.objective / 100.0, 12)

    @property
    def time_slices(self) -> bool:
        return self.sli.kind in TIME_SLICE_KINDS


class SloFile(Strict):
    slos: list[SloConfig] = Field(default_factory=list)

"""Alert instances and the escalation chain (``alerts/*.yaml``)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from watchdog.config.types import Duration, Name, PositiveDuration


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SloAlert(Strict):
    """Fires when an SLO's burn-rate alert of the given severity fires."""

    name: Name
    kind: Literal["slo"]
    slo: Name
    severity: Literal["page", "ticket", "critical"] = "page"
    summary: str = ""
    escalation: Name = "default"


class ProbeAlert(Strict):
    """Fires when a probe keeps failing: ``for`` long, at least ``min_failures`` consecutive results."""

    name: Name
    kind: Literal["probe"]
    probe: Name
    labels: dict[str, str] = Field(default_factory=dict)
    for_: Duration = Field(default=120.0, alias="for")
    min_failures: int = Field(default=3, ge=1)
    degraded_counts: bool = False
    severity: Literal["page", "ticket", "critical"] = "page"
    summary: str = ""
    escalation: Name = "default"
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


Alert = Annotated[SloAlert | ProbeAlert, Field(discriminator="kind")]


class NotifyTarget(Strict):
    """A channel to page: ``slack`` (channel and/or user ids) or ``log``."""

    type: Literal["slack", "log"]
    channel: str | None = None
    mention: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _slack_needs_channel(self) -> NotifyTarget:
        if self.type == "slack" and not self.channel:
            raise ValueError("a slack target needs a channel")
        return self


class EscalationLevel(Strict):
    level: Literal["L1", "L2", "L3"]
    who: str
    notify: list[NotifyTarget] = Field(min_length=1)
    ack_within: PositiveDuration | None = None
    """Unacknowledged this long after this level was paged: page the next level."""


class EscalationPolicy(Strict):
    name: Name
    levels: list[EscalationLevel] = Field(min_length=1)
    critical_pages_immediately: Literal["L1", "L2", "L3"] | None = "L3"
    """Severity ``critical`` also pages this level at once."""
    repeat_every: Duration | None = None

    @model_validator(mode="after")
    def _ordered(self) -> EscalationPolicy:
        order = [lv.level for lv in self.levels]
        if order != sorted(order) or len(set(order)) != len(order):
            raise ValueError("levels must be L1, L2, L3 in order, each at most once")
        return self


class AlertsFile(Strict):
    alerts: list[Alert] = Field(default_factory=list)
    escalation: list[EscalationPolicy] = Field(default_factory=list)

"""Alert instances, the escalation chain, inhibition, maintenance windows and alert intake
(``alerts/*.yaml``): the *instances*; ``watchdog.incidents`` holds the behaviour.

Severity is ``info`` (recorded and posted to the first level, nobody mentioned, no escalation), ``warning``
(L1, then L2 and L3 while unacknowledged) or ``critical`` (L1 and the policy's ``critical_pages_immediately``
level at once, then escalating). The older spellings ``page`` and ``ticket`` still load: they mean
``warning`` and ``info`` and, for an SLO alert, which burn-rate tier it follows (``burn``).
"""

from __future__ import annotations

import string
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from watchdog.config.types import Duration, Name, PositiveDuration

Severity = Literal["info", "warning", "critical"]
SEVERITIES: tuple[Severity, ...] = ("info", "warning", "critical")

SUMMARY_FIELDS: dict[str, frozenset[str]] = {
    "slo": frozenset({"slo", "value", "threshold", "budget_left", "detail"}),
    "probe": frozenset({"probe", "value", "threshold", "reason", "labels", "detail"}),
}
"""Placeholders a summary template may use, per alert kind. ``value`` is the current value (the burn rate,
or how many results failed in a row), ``threshold`` what it is held against; ``detail`` is the engine's
own sentence."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _legacy_severity(data: Any, burn_key: str | None) -> Any:
    """``page``/``ticket`` → ``warning``/``info`` (and, for SLO alerts, the burn tier they named)."""
    if isinstance(data, dict) and data.get("severity") in ("page", "ticket"):
        data = dict(data)
        old = data["severity"]
        data["severity"] = "warning" if old == "page" else "info"
        if burn_key is not None:
            data.setdefault(burn_key, old)
    return data


def _check_template(template: str, kind: str) -> str:
    allowed = SUMMARY_FIELDS[kind]
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as exc:
        raise ValueError(f"summary is not a valid template: {exc}") from None
    unknown = sorted(n for n in names if n not in allowed)
    if unknown:
        raise ValueError(
            f"summary uses unknown field(s) {', '.join('{' + n + '}' for n in unknown)}; "
            f"a {kind} alert may use {', '.join('{' + n + '}' for n in sorted(allowed))} "
            "(write {{ and }} for literal braces)"
        )
    return template


class _AlertBase(Strict):
    name: Name
    severity: Severity = "warning"
    summary: str = ""
    """A template: ``{value}``, ``{threshold}`` and the kind's other fields are filled in when it fires."""
    escalation: Name = "default"
    group: Name | None = None
    """Alerts of one group that fire together share one incident thread (one Slack thread, not ten)."""
    labels: dict[str, str] = Field(default_factory=dict)


class SloAlert(_AlertBase):
    """Fires when an SLO's burn-rate alert of the given tier fires."""

    kind: Literal["slo"]
    slo: Name
    burn: Literal["page", "ticket"] = "page"
    """Which burn-rate tier of the SLO this alert follows: ``page`` (fast burn) or ``ticket`` (slow)."""

    @model_validator(mode="before")
    @classmethod
    def _legacy(cls, data: Any) -> Any:
        return _legacy_severity(data, "burn")

    @field_validator("summary")
    @classmethod
    def _template(cls, value: str) -> str:
        return _check_template(value, "slo")


class ProbeAlert(_AlertBase):
    """Fires when a probe keeps failing: ``for`` long, at least ``min_failures`` consecutive results;
    resolves after ``min_successes`` consecutive good results of every failing series."""

    kind: Literal["probe"]
    probe: Name
    match: dict[str, str] = Field(default_factory=dict)
    """Only the probe's series whose labels include these (e.g. ``{check: connections}``)."""
    for_: Duration = Field(default=120.0, alias="for")
    min_failures: int = Field(default=3, ge=1)
    min_successes: int = Field(default=1, ge=1)
    degraded_counts: bool = False
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _legacy(cls, data: Any) -> Any:
        return _legacy_severity(data, None)

    @field_validator("summary")
    @classmethod
    def _template(cls, value: str) -> str:
        return _check_template(value, "probe")


Alert = Annotated[SloAlert | ProbeAlert, Field(discriminator="kind")]


class NotifyTarget(Strict):
    """A channel to page: ``slack`` (a channel, plus user ``U…`` and user-group ``S…`` ids to mention) or
    ``log``."""

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
    repeat_every: PositiveDuration | None = None
    """While unacknowledged, page the level reached again this often."""
    ack_timeout: PositiveDuration | None = 4 * 3600.0
    """An acknowledgement lasts this long; an incident still firing then pages again (None: for ever)."""
    flap_window: Duration = 900.0
    """An incident firing again this soon after it resolved continues in its thread, marked flapping,
    instead of paging afresh."""

    @model_validator(mode="after")
    def _ordered(self) -> EscalationPolicy:
        order = [lv.level for lv in self.levels]
        if order != sorted(order) or len(set(order)) != len(order):
            raise ValueError("levels must be L1, L2, L3 in order, each at most once")
        return self


class InhibitRule(Strict):
    """While ``source`` fires, the ``targets`` it explains are recorded but not paged, and the source's
    page says which alerts it muted (e.g. the database down mutes the API and content alerts)."""

    name: Name
    source: Name
    targets: list[Name] = Field(min_length=1)
    reason: str = ""
    grace: Duration = 600.0
    """A target muted from the start stays muted this long after the source resolves: its windows still
    hold the errors the source explained (an SLO burn clears minutes after the errors stop), so paging it
    then would page for an outage that is over. Still firing after ``grace``: it pages, saying so."""


class MaintenanceWindow(Strict):
    """A scheduled window: alerts matching ``match`` (``alertname`` and labels; empty: every alert) are
    not paged in it; its start and end are announced to the first level of ``announce`` (a policy)."""

    name: Name
    start: datetime
    end: datetime
    match: dict[str, str] = Field(default_factory=dict)
    reason: str
    announce: Name | None = "default"

    @model_validator(mode="after")
    def _timed(self) -> MaintenanceWindow:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("start and end need a time zone, e.g. 2026-12-05T02:00:00Z")
        if self.end <= self.start:
            raise ValueError("end must be after start")
        return self


class Intake(Strict):
    """Alerts from elsewhere into the same chain: ``alertmanager`` (its webhook JSON at
    ``POST /api/v1/alerts/alertmanager``) or ``cloud_monitoring`` (a Cloud Monitoring webhook notification
    channel at ``POST /api/v1/alerts/cloud-monitoring``). Requests carry the token in ``token_env`` as a
    bearer token (or ``?auth_token=`` for Cloud Monitoring, which cannot set headers)."""

    name: Name
    kind: Literal["alertmanager", "cloud_monitoring"]
    escalation: Name = "default"
    token_env: str = "WATCHDOG_INTAKE_TOKEN"
    severity: Severity = "warning"
    """Severity of alerts that do not say (label ``severity``: critical/warning/info; Cloud Monitoring's
    policy severity)."""


class AlertsFile(Strict):
    """One ``alerts/*.yaml`` file (``rollouts`` are ``watchdog.config.rollouts.Rollout``, validated by the
    loader)."""

    alerts: list[Alert] = Field(default_factory=list)
    escalation: list[EscalationPolicy] = Field(default_factory=list)
    inhibit: list[InhibitRule] = Field(default_factory=list)
    maintenance: list[MaintenanceWindow] = Field(default_factory=list)
    intake: list[Intake] = Field(default_factory=list)

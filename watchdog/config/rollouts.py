"""Rollouts (``rollouts:`` in ``alerts/*.yaml``): a canary the watchdog guards and rolls back by itself.

A rollout names the flag and where it lives, the canary cohort (the probe, and labels, pinned to the
database path, the service's own request counters of that path in Prometheus, or one Cloud Run revision's
real traffic from Cloud Monitoring) and optionally the
baseline cohort (pinned to YAML, likewise), the limits (absolute, and relative to
the baseline), the sequential test's ``alpha`` and minimum sample, what to do without data (hold, never
pass), the escalation policy its pages use and, optionally, staged promotion.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

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


_AGGREGATION = re.compile(
    r"^\s*\(*\s*(sum|avg|min|max|count|group|stddev|stdvar|topk|bottomk|quantile|count_values)\b", re.I
)
_NOT_A_COUNTER = re.compile(r"\b(rate|irate|increase|delta|idelta|deriv|resets)\s*\(", re.I)
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _counter_expression(value: str) -> str:
    """A PromQL expression whose series are counters, one per instance: the guard takes each series'
    increase since the stage began itself (a drop is that series restarting), then sums them."""
    text = value.strip()
    if not text:
        raise ValueError("empty PromQL expression")
    if _AGGREGATION.match(text):
        raise ValueError(
            "give the per-series counters, not an aggregation (sum, …): the guard sums the increases "
            "itself, per series, so one instance restarting resets its own series only "
            "(a dropping sum would read as a reset of everything)"
        )
    if _NOT_A_COUNTER.search(text):
        raise ValueError(
            "give the counters themselves, not rate()/increase(): the guard counts events since the "
            "stage began from the counters' values"
        )
    return text


CounterExpression = Annotated[str, AfterValidator(_counter_expression)]


class PrometheusCohort(Strict):
    """A cohort read from the service's own request counters over a Prometheus HTTP API (``GET
    /api/v1/query``): each check counts the counters' increase since the stage began, per series, a
    series that drops counting as restarted from zero (as ``increase()`` does)."""

    url: str
    """The Prometheus server's base URL, e.g. ``http://prometheus:9090``."""
    requests: CounterExpression
    """The cohort's requests, e.g. ``http_requests_total{cohort="db",selection="flag"}``."""
    errors: CounterExpression
    """Its failed requests, e.g. ``http_requests_total{cohort="db",selection="flag",status_class="5xx"}``."""
    slow: CounterExpression | None = None
    """Its requests over the rollout's latency threshold, from a histogram whose buckets include it:
    ``http_request_duration_seconds_count{cohort="db"} - ignoring(le)
    http_request_duration_seconds_bucket{cohort="db",le="0.2"}``. Needed when the rollout has a latency
    limit."""
    token_env: str | None = None
    """Environment variable holding a bearer token for the API (none: no Authorization header)."""
    timeout: PositiveDuration = 3.0
    """One query's bound; a source that does not answer adds nothing (the counts stay as they were)."""

    @model_validator(mode="after")
    def _checks(self) -> PrometheusCohort:
        if not re.match(r"^https?://[^/\s]+", self.url):
            raise ValueError(f"url must be an http:// or https:// URL, got {self.url!r}")
        if re.match(r"^https?://[^/@\s]*:[^/@\s]*@", self.url):
            raise ValueError("url must not carry credentials; put a token in the variable named by token_env")
        if self.token_env is not None and not _ENV_NAME.match(self.token_env):
            raise ValueError(f"token_env {self.token_env!r} is not an environment variable name")
        return self


_RUN_SERVICE = re.compile(r"^projects/[^/\s]+/locations/[^/\s]+/services/[^/\s]+$")
_RUN_REVISION = re.compile(r"^[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?$")


class CloudRunCohort(Strict):
    """A cohort read from Cloud Run's own request metrics of one revision in Cloud Monitoring
    (``run.googleapis.com/request_count`` by response code class, ``request_latencies`` for the latency
    limit): the revision's real traffic, minute by minute, from the first whole minute of the stage to the
    newest complete one (Cloud Monitoring's data is complete about 3.5 min after a minute ends, so the
    counts run that far behind; ``watchdog.canary.cohorts``)."""

    service: str = ""
    """``projects/P/locations/R/services/S``; empty: ``google_cloud.cloud_run_service`` of watchdog.yaml."""
    revision: str
    """The revision's name, e.g. ``ai-square-00042-def`` (``gcloud run revisions list``)."""
    timeout: PositiveDuration = 10.0
    """One read's bound (retries of UNAVAILABLE included); a read that fails adds nothing."""

    @model_validator(mode="after")
    def _names(self) -> CloudRunCohort:
        if self.service and not _RUN_SERVICE.match(self.service):
            raise ValueError(
                f"service must be projects/PROJECT/locations/REGION/services/NAME, got {self.service!r}"
            )
        if not _RUN_REVISION.match(self.revision):
            raise ValueError(
                f"revision {self.revision!r} is not a Cloud Run revision name (lower-case letters, digits "
                "and hyphens, e.g. ai-square-00042-def)"
            )
        return self


class Cohort(Strict):
    """One cohort: the results of one probe (optionally only its series with these labels), the service's
    own per-cohort request counters in Prometheus (``prometheus:``), or one Cloud Run revision's traffic
    from Cloud Monitoring (``cloud_run:``); exactly one of the three."""

    probe: Name | None = None
    match: dict[str, str] = Field(default_factory=dict)
    prometheus: PrometheusCohort | None = None
    cloud_run: CloudRunCohort | None = None

    @model_validator(mode="after")
    def _one_source(self) -> Cohort:
        given = [self.probe is not None, self.prometheus is not None, self.cloud_run is not None]
        if sum(given) != 1:
            raise ValueError("a cohort needs exactly one of probe, prometheus or cloud_run")
        if self.prometheus is not None and self.match:
            raise ValueError("match selects a probe's series; a prometheus cohort selects in its PromQL")
        if self.cloud_run is not None and self.match:
            raise ValueError("match selects a probe's series; a cloud_run cohort is one revision's traffic")
        return self


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
    slos: list[Name] | None = None
    """The SLOs that must be healthy to promote (default: every SLO of the config): none of their burn-rate
    alerts firing and at least ``min_budget_left`` of each one's error budget left. A canary can pass its own
    test while the service as a whole burns budget (the baseline fails too, a dependency is degraded):
    moving more traffic then is the wrong call."""
    min_budget_left: Share = 0.25

    @model_validator(mode="after")
    def _ascending(self) -> Promotion:
        if any(not 0 < s <= 100 for s in self.steps) or self.steps != sorted(set(self.steps)):
            raise ValueError("steps must be percentages in (0, 100], ascending, each once")
        return self


class CloudRunRollback(Strict):
    """Step 2 of the rollback plan ("restore the old Cloud Run version"), as the escalation of a flag
    rollback that did not bring the error rate back: ``after`` the verified flip, while the rollout is held
    rolled back, the guard counts ``cohort`` since the flip; conclusive evidence that it still breaks the
    rollout's error limit sends 100 % of the service's traffic to the previous serving revision
    (``watchdog.canary.cloud_run``), verified by reading the service back, audited, paged, then held until a
    person releases it (``watchdog traffic release``)."""

    service: str = ""
    """``projects/P/locations/R/services/S``; empty: ``google_cloud.cloud_run_service`` of watchdog.yaml."""
    after: PositiveDuration = 120.0
    """How long the flag rollback has to bring the error rate back before traffic is rolled back."""
    cohort: Literal["canary", "baseline"] = "canary"
    """Whose error rate since the flip decides: ``canary`` (the cohort the guard judges: a probe pinned to the
    database path keeps testing that path, which no user takes after the flip) or ``baseline`` (the YAML
    path, which every user takes after the flip: what users see)."""
    timeout: PositiveDuration = 120.0
    """One attempt's bound: reading the service, the update's long-running operation, the read-back."""

    @model_validator(mode="after")
    def _service_name(self) -> CloudRunRollback:
        if self.service and not _RUN_SERVICE.match(self.service):
            raise ValueError(
                f"service must be projects/PROJECT/locations/REGION/services/NAME, got {self.service!r}"
            )
        return self


class Rollout(Strict):
    name: Name
    flag: FlagConfig
    canary: Cohort
    baseline: Cohort | None = None
    limits: Limits = Field(default_factory=Limits)
    alpha: float = Field(default=0.001, gt=0, lt=0.5)
    """Bound on the false-rollback probability per day of watching, however often it is checked (spent on
    the stage-long test and the restarted ones: ``watchdog.canary.sequential``)."""
    min_samples: int = Field(default=3, ge=1)
    """No decision on fewer canary results than this."""
    no_data_after: PositiveDuration = 120.0
    """No canary result for this long: hold (no promotion) and say so; never read as healthy. For a
    ``cloud_run`` cohort, silence is measured up to the newest minute whose data should be complete (not up
    to now: Cloud Monitoring runs ~3.5 min behind), and its data comes a minute at a time, so at least
    ``1m``."""
    check_every: PositiveDuration = 1.0
    escalation: Name = "default"
    group: Name | None = "database"
    """The rollback's page joins this alert group's open thread (the incident that caused it)."""
    promote: Promotion | None = None
    actor: str = "sre-watchdog"
    hold_after_rollback: bool = True
    grace: Duration = 0.0
    """Results in the first ``grace`` seconds of a stage are not counted (a cold cache right after a flip)."""
    cloud_run: CloudRunRollback | None = None
    """Cloud Run traffic back to the previous revision when the flag rollback was not enough (see there)."""

    @model_validator(mode="after")
    def _cloud_run_minutes(self) -> Rollout:
        if self.canary.cloud_run is not None and self.no_data_after < 60:
            raise ValueError(
                "a cloud_run canary's data comes a minute at a time: no_data_after must be at least 1m"
            )
        return self

    @model_validator(mode="after")
    def _latency_needs_slow(self) -> Rollout:
        metric, latency = self.canary.prometheus, self.limits.latency
        if latency is None or metric is None:
            return self
        if metric.slow is None:
            raise ValueError(
                "the latency limit needs canary.prometheus.slow (requests over the threshold, from a "
                "histogram bucket); or set limits.latency: null"
            )
        for edge in re.findall(r'\ble\s*=\s*"([^"]*)"', metric.slow):
            try:
                seconds = float(edge)
            except ValueError:
                continue
            if abs(seconds - latency.threshold) > 1e-9:
                raise ValueError(
                    f'canary.prometheus.slow counts requests over le="{edge}" s but the latency limit is '
                    f"{latency.threshold:g} s; use the bucket at the limit"
                )
        return self

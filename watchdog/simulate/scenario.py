"""Scenario files: traffic over simulated time and what should page, as pydantic models.

A scenario is one YAML mapping (times are offsets from the scenario's start, ``t+0``; durations and
times take ``250ms``, ``30s``, ``5m``, ``1h30m``, ``10m59s`` or a number of seconds)::

    description: A 59 s outage of the database path pages, and the page resolves within 6 minutes.
    config: ../..                 # the config directory, relative to this file (--config overrides it)
    seed: 1                       # every random draw (error sampling, probe phases) follows it
    duration: 3h
    history: 1h                   # healthy data already in the store at t+0 (default: none, a fresh start)
    evaluation_interval: 5s       # default: the config's
    sampling: random              # errors drawn per result (default); even: exactly the rate, evenly spread
    other_probes: healthy         # enabled probes not listed below: healthy (default) or absent (no results)
    probes:
      content-db:
        interval: 10s             # default: the probe's
        errors:
          - steady: 0.05%                          # background rate, the whole run (from/to optional)
          - {blip: 2m30s, failures: 1}             # the first result at or after 2m30s fails
          - {step: 100%, from: 10m, to: 10m59s}    # an outage; rates add up, at most 100 %
          - {ramp: [0%, 20%], from: 1h, to: 2h}    # rising linearly over [from, to]
        latency:
          - steady: 20ms                           # the base latency (default 20ms)
          - {step: 300ms, from: 1h, to: 2h}        # added latency; share: 50% slows half the results
          - {ramp: [0ms, 300ms], from: 1h, to: 2h}
          - {blip: 5m, add: 2s, results: 3}
    restarts:
      - {at: 20m, keep_state: false}  # a new engine and incident manager over an emptied store (a redeploy)
    expect:
      - page: {alert: content-db-burn, within: 90s, of: 10m}
      - resolved: {alert: content-db-burn, within: 6m, of: 10m59s}
      - escalated: {alert: content-db-burn, level: L3, within: 90s, of: 10m}   # critical: L3 at once
      - firing: {alert: content-db-burn, from: 11m, to: 16m}    # open throughout: no flapping
      - no_page: {alert: any, from: 20m, to: 1h}    # `except: [NAME]` leaves alerts out

A rate is a fraction (``0.2``) or a percentage (``"20%"``, ``0.05%``). Results become what the probe would
have recorded: ``failed`` for an error (and past the probe's ``timeout`` or ``expect.max_latency``),
``degraded`` over its ``degraded_when.latency_over`` (a PostgreSQL probe's ``slow_query`` for its
connectivity check), ``ok`` otherwise. ``labels`` narrows a journey's or PostgreSQL probe's profile to
the results carrying them (``{step: login}``, ``{check: connectivity}``; the others stay healthy) and adds
labels an HTTP probe's results do not carry (a cohort). Observations (database CPU and memory) are not
simulated: metric-threshold SLOs see no data.

``load_scenario`` reports every problem as ``file:line: field: message``, like the config loader.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from watchdog.config.loader import (
    ConfigError,
    ConfigProblem,
    WatchdogConfig,
    _parse,  # the config loader's line-keeping, bounded YAML reader: scenarios get the same errors
    _problems_from,
)

ANY = "any"
_TIME = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_TIME_SHAPE = "a time is a number of seconds or a string like '90s', '10m59s', '1h30m'"


def parse_time(value: Any) -> float:
    """``"10m59s"``, ``"1h30m"``, ``"250ms"`` or a number of seconds → seconds (>= 0)."""
    if isinstance(value, bool):
        raise ValueError(_TIME_SHAPE)
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.replace(" ", "")
        parts = _TIME.findall(text)
        if not parts or "".join(n + u for n, u in parts) != text:
            raise ValueError(f"{value!r} is not a time (examples: 250ms, 90s, 10m59s, 1h30m, 2d)")
        seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    else:
        raise ValueError(_TIME_SHAPE)
    if seconds != seconds or seconds in (float("inf"), float("-inf")):
        raise ValueError("a time must be finite")
    if seconds < 0:
        raise ValueError("a time cannot be negative")
    return seconds


def parse_rate(value: Any) -> float:
    """``0.2``, ``"20%"``, ``"0.05 %"`` → a fraction in [0, 1]."""
    if isinstance(value, bool):
        raise ValueError("a rate is a fraction (0.2) or a percentage ('20%')")
    if isinstance(value, str):
        text = value.strip()
        if not text.endswith("%"):
            raise ValueError(f"{value!r}: write a percentage with % ('20%') or a fraction (0.2)")
        try:
            rate = float(text[:-1].strip()) / 100.0
        except ValueError:
            raise ValueError(f"{value!r} is not a percentage") from None
    elif isinstance(value, int | float):
        rate = float(value)
    else:
        raise ValueError("a rate is a fraction (0.2) or a percentage ('20%')")
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"{value!r}: a rate is between 0 and 100 %")
    return rate


Time = Annotated[float, BeforeValidator(parse_time)]
Rate = Annotated[float, BeforeValidator(parse_rate)]
PositiveTime = Annotated[float, BeforeValidator(parse_time), Field(gt=0)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


_ERROR_KINDS = ("steady", "blip", "step", "ramp")


class _Segment(Strict):
    """One segment of a profile: exactly one of ``steady``, ``blip``, ``step``, ``ramp`` plus its fields."""

    from_: Time | None = Field(default=None, alias="from")
    to: Time | None = None
    blip: Time | None = None
    """When a blip starts: the next results at or after it fail (are slowed)."""

    @property
    def kind(self) -> str:
        return next(k for k in _ERROR_KINDS if getattr(self, k, None) is not None)

    def _check(self, allowed: dict[str, tuple[str, ...]], what: str) -> None:
        given = [k for k in _ERROR_KINDS if getattr(self, k, None) is not None]
        if len(given) != 1:
            shown = ", ".join(_ERROR_KINDS)
            raise ValueError(
                f"a {what} segment is exactly one of {shown}"
                + (f" (got {', '.join(given)})" if given else "")
            )
        kind = given[0]
        extra = [f for f in self.model_fields_set if f not in allowed[kind] and f != kind]
        if extra:
            shown = ", ".join(("from" if f == "from_" else f) for f in sorted(extra))
            fits = ", ".join(("from" if f == "from_" else f) for f in allowed[kind]) or "nothing else"
            raise ValueError(f"{shown} does not apply to {kind} (it takes {fits})")
        if kind in ("step", "ramp") and self.from_ is None:
            raise ValueError(f"a {kind} needs from (and to, unless it lasts to the end)")
        if self.from_ is not None and self.to is not None and self.to <= self.from_:
            raise ValueError("to must be after from")

    def active(self, t: float) -> bool:
        lo = -float("inf") if self.from_ is None else self.from_
        hi = float("inf") if self.to is None else self.to
        return lo <= t < hi

    def progress(self, t: float) -> float:
        """0 at ``from``, 1 at ``to`` (a ramp's position)."""
        assert self.from_ is not None
        if self.to is None or self.to <= self.from_:
            return 1.0
        return min(1.0, max(0.0, (t - self.from_) / (self.to - self.from_)))


class ErrorSegment(_Segment):
    steady: Rate | None = None
    failures: int | None = Field(default=None, ge=1)
    step: Rate | None = None
    ramp: tuple[Rate, Rate] | None = None
    reason: str | None = None
    """What the failed results say (default: ``simulated error``)."""

    @model_validator(mode="after")
    def _one_kind(self) -> ErrorSegment:
        self._check(
            {
                "steady": ("from_", "to", "reason"),
                "blip": ("failures", "reason"),
                "step": ("from_", "to", "reason"),
                "ramp": ("from_", "to", "reason"),
            },
            "error",
        )
        return self

    def rate(self, t: float) -> float:
        if self.blip is not None or not self.active(t):
            return 0.0
        if self.steady is not None:
            return self.steady
        if self.step is not None:
            return self.step
        assert self.ramp is not None
        a, b = self.ramp
        return a + (b - a) * self.progress(t)


class LatencySegment(_Segment):
    steady: PositiveTime | None = None
    """The base latency (default 20 ms) while the segment applies."""
    add: PositiveTime | None = None
    """A blip's added latency, for ``results`` results from ``blip`` on."""
    results: int | None = Field(default=None, ge=1)
    step: PositiveTime | None = None
    """Latency added from ``from`` to ``to``."""
    ramp: tuple[Time, Time] | None = None
    """Added latency rising linearly over [from, to]."""
    share: Rate | None = None
    """The share of results a step or ramp slows down (default all of them), drawn at random."""

    @model_validator(mode="after")
    def _one_kind(self) -> LatencySegment:
        self._check(
            {
                "steady": ("from_", "to"),
                "blip": ("add", "results"),
                "step": ("from_", "to", "share"),
                "ramp": ("from_", "to", "share"),
            },
            "latency",
        )
        if self.blip is not None and self.add is None:
            raise ValueError("a latency blip needs add (the latency it adds)")
        return self

    def added(self, t: float) -> float:
        if not self.active(t):
            return 0.0
        if self.step is not None:
            return self.step
        if self.ramp is not None:
            a, b = self.ramp
            return a + (b - a) * self.progress(t)
        return 0.0


DEFAULT_LATENCY_S = 0.020


class Traffic(Strict):
    """What one probe's results look like over time."""

    interval: PositiveTime | None = None
    """Default: the probe's own interval (else ``defaults.interval`` of the config)."""
    labels: dict[str, str] = Field(default_factory=dict)
    errors: list[ErrorSegment] = Field(default_factory=list)
    latency: list[LatencySegment] = Field(default_factory=list)

    def error_rate(self, t: float) -> float:
        return min(1.0, sum(s.rate(t) for s in self.errors))

    def base_latency(self, t: float) -> float:
        base = DEFAULT_LATENCY_S
        for s in self.latency:
            if s.steady is not None and s.active(t):
                base = s.steady
        return base


class Restart(Strict):
    at: Time
    keep_state: bool = True
    """False: the new daemon starts over an empty store (a fresh database, or a reset)."""
    downtime: Time = 0.0
    """How long nothing runs (no probes, no evaluation) before the new daemon starts."""


class _Check(Strict):
    alert: str
    """An alert of the config, or ``any``."""


class PageCheck(_Check):
    within: Time
    of: Time = 0.0


class ResolvedCheck(_Check):
    within: Time
    of: Time = 0.0


class EscalatedCheck(_Check):
    level: str
    within: Time
    of: Time = 0.0


class FiringCheck(_Check):
    from_: Time = Field(alias="from")
    to: Time


class NoPageCheck(_Check):
    alert: str = ANY
    from_: Time = Field(default=0.0, alias="from")
    to: Time | None = None
    except_: list[str] = Field(default_factory=list, alias="except")


_EXPECT_KINDS = ("page", "no_page", "resolved", "escalated", "firing")


class Expectation(Strict):
    page: PageCheck | None = None
    """The alert pages (an incident opens and someone is called) within ``within`` after ``of``."""
    no_page: NoPageCheck | None = None
    """The alert (or any alert) does not fire and page anyone in [from, to] (default: the whole run);
    ``info`` alerts count too (they post to the first level). Reminders and escalations of an incident
    that fired before ``from`` are not new pages."""
    resolved: ResolvedCheck | None = None
    """The alert's incident resolves within ``within`` after ``of``."""
    escalated: EscalatedCheck | None = None
    """The alert's page reaches ``level`` (by escalation, or at once for a critical alert's extra level)
    within ``within`` after ``of``."""
    firing: FiringCheck | None = None
    """The alert's incident stays open over all of [from, to]: it does not resolve (and flap) while the
    fault lasts."""

    @model_validator(mode="after")
    def _one(self) -> Expectation:
        given = [k for k in _EXPECT_KINDS if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"an expectation is exactly one of {', '.join(_EXPECT_KINDS)}")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in _EXPECT_KINDS if getattr(self, k) is not None)

    @property
    def check(self) -> PageCheck | NoPageCheck | ResolvedCheck | EscalatedCheck | FiringCheck:
        found = self.page or self.no_page or self.resolved or self.escalated or self.firing
        assert found is not None
        return found


class Scenario(Strict):
    description: str = ""
    config: str | None = None
    """The config directory, relative to the scenario file."""
    seed: int = 0
    duration: PositiveTime
    history: Time = 0.0
    evaluation_interval: PositiveTime | None = None
    sampling: Literal["random", "even"] = "random"
    other_probes: Literal["healthy", "absent"] = "healthy"
    start: float = 1_767_225_600.0
    """The scenario's t+0 as epoch seconds (default 2026-01-01T00:00:00Z)."""
    probes: dict[str, Traffic] = Field(default_factory=dict)
    restarts: list[Restart] = Field(default_factory=list)
    expect: list[Expectation] = Field(default_factory=list)

    @model_validator(mode="after")
    def _restarts_in_order(self) -> Scenario:
        ats = [r.at for r in self.restarts]
        if ats != sorted(ats):
            raise ValueError("restarts must be listed in time order")
        return self


class ScenarioError(ConfigError):
    """Every problem found in a scenario file (and its config), each as ``file:line: field: message``."""


def load_scenario(path: str | Path) -> tuple[Scenario, dict[tuple[str | int, ...], int]]:
    """Parse and validate a scenario file: the model, and the line of every value (for later checks
    against the config). Raises ScenarioError."""
    file = Path(path)
    rel = str(file)
    if not file.is_file():
        raise ScenarioError([ConfigProblem(rel, 0, "", "no such scenario file")])
    try:
        doc = _parse(file, rel, os.environ)
    except ConfigError as exc:
        raise ScenarioError(exc.problems) from exc
    if not isinstance(doc.data, dict):
        raise ScenarioError([ConfigProblem(rel, doc.lines.get((), 1), "", "a scenario is a YAML mapping")])
    problems = list(doc.problems)
    try:
        scenario = Scenario.model_validate(doc.data)
    except ValidationError as exc:
        raise ScenarioError(problems + _problems_from(doc, exc)) from exc
    if problems:
        raise ScenarioError(problems)
    return scenario, dict(doc.lines)


def config_dir(scenario: Scenario, scenario_path: Path, override: Path | None) -> Path:
    """Where the config is: ``--config``, else the scenario's ``config:`` relative to its file."""
    if override is not None:
        return override
    if scenario.config is None:
        return Path(".")
    return (scenario_path.parent / scenario.config).resolve()


def check_against(
    scenario: Scenario, lines: dict[tuple[str | int, ...], int], config: WatchdogConfig, rel: str
) -> list[ConfigProblem]:
    """What the scenario names that the config does not have, and times past the end."""
    problems: list[ConfigProblem] = []

    def at(*path: str | int) -> int:
        while path:
            if path in lines:
                return lines[path]
            path = path[:-1]
        return 0

    probes = {p.name for p in config.probes}
    enabled = {p.name for p in config.enabled_probes()}
    for name in scenario.probes:
        if name not in probes:
            known = ", ".join(sorted(probes)) or "none"
            problems.append(
                ConfigProblem(
                    rel,
                    at("probes", name),
                    f"probes.{name}",
                    f"no probe named {name!r} in the config (it has {known})",
                )
            )
        elif name not in enabled:
            problems.append(
                ConfigProblem(
                    rel, at("probes", name), f"probes.{name}", "this probe has enabled: false in the config"
                )
            )
    alerts = {a.name for a in config.alerts}
    levels = {lv.level for p in config.escalation for lv in p.levels}
    end = scenario.duration
    for i, exp in enumerate(scenario.expect):
        kind = exp.kind
        check = exp.check
        names = [check.alert] + (list(check.except_) if isinstance(check, NoPageCheck) else [])
        for name in names:
            if name != ANY and name not in alerts:
                known = ", ".join(sorted(alerts)) or "none"
                problems.append(
                    ConfigProblem(
                        rel,
                        at("expect", i, kind, "alert"),
                        f"expect[{i}].{kind}.alert",
                        f"no alert named {name!r} in the config (it has {known})",
                    )
                )
        if isinstance(check, EscalatedCheck) and check.level not in levels:
            problems.append(
                ConfigProblem(
                    rel,
                    at("expect", i, kind, "level"),
                    f"expect[{i}].{kind}.level",
                    f"no escalation level {check.level!r} (the config has "
                    f"{', '.join(sorted(levels)) or 'none'})",
                )
            )
        if isinstance(check, PageCheck | ResolvedCheck | EscalatedCheck) and check.of > end:
            problems.append(
                ConfigProblem(
                    rel,
                    at("expect", i, kind, "of"),
                    f"expect[{i}].{kind}.of",
                    "is after the scenario's end (duration)",
                )
            )
        if isinstance(check, FiringCheck):
            if check.alert == ANY:
                problems.append(
                    ConfigProblem(
                        rel,
                        at("expect", i, kind, "alert"),
                        f"expect[{i}].{kind}.alert",
                        "name one alert, not any",
                    )
                )
            if not check.from_ < check.to <= end:
                problems.append(
                    ConfigProblem(
                        rel,
                        at("expect", i, kind, "to"),
                        f"expect[{i}].{kind}.to",
                        "must be after from and at most the scenario's duration",
                    )
                )
    for name, traffic in scenario.probes.items():
        for kind, segments in (("errors", traffic.errors), ("latency", traffic.latency)):
            for i, seg in enumerate(segments):
                begins = seg.blip if seg.blip is not None else seg.from_
                if begins is not None and begins >= end:
                    problems.append(
                        ConfigProblem(
                            rel,
                            at("probes", name, kind, i),
                            f"probes.{name}.{kind}[{i}]",
                            "starts at or after the scenario's end (duration)",
                        )
                    )
    for i, restart in enumerate(scenario.restarts):
        if restart.at >= end:
            problems.append(
                ConfigProblem(
                    rel,
                    at("restarts", i, "at"),
                    f"restarts[{i}].at",
                    "is at or after the scenario's end (duration)",
                )
            )
    return problems

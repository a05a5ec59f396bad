"""Probe instances (``probes/*.yaml``). Each file holds ``probes: [...]``; ``kind`` picks the model."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from watchdog.config.postgres import PostgresProbeConfig
from watchdog.config.types import Duration, Name, PositiveDuration

_STATUS_CLASS = re.compile(r"^[1-5]xx$")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class JsonAssertion(Strict):
    """One assertion on the JSON body. ``path`` is a JMESPath expression (``checks.database.status``).

    Exactly one comparison applies; with none, the path must simply exist (be non-null).
    """

    path: str
    equals: Any = None
    not_equals: Any = None
    one_of: list[Any] | None = Field(default=None, alias="in")
    regex: str | None = None
    min: float | None = None
    max: float | None = None
    exists: bool | None = None
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("path")
    @classmethod
    def _compiles(cls, path: str) -> str:
        import jmespath
        import jmespath.exceptions

        try:
            jmespath.compile(path)
        except jmespath.exceptions.JMESPathError as exc:
            raise ValueError(f"not a JMESPath expression: {exc}") from exc
        return path

    @field_validator("regex")
    @classmethod
    def _regex_compiles(cls, pattern: str | None) -> str | None:
        if pattern is not None:
            _compile_regex(pattern)
        return pattern

    @model_validator(mode="after")
    def _one_comparison(self) -> JsonAssertion:
        set_fields = [
            name
            for name in ("equals", "not_equals", "one_of", "regex", "exists")
            if name in self.model_fields_set
        ]
        if len(set_fields) > 1:
            raise ValueError(f"use one comparison per assertion, got {', '.join(set_fields)}")
        return self


def _compile_regex(pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"invalid regular expression {pattern!r}: {exc}") from exc


StatusSpec = int | str


class Expectations(Strict):
    """What makes a response pass. Failing any of these makes the result ``failed``."""

    status: list[StatusSpec] = Field(default_factory=lambda: list[StatusSpec](["2xx"]))
    body_regex: str | None = None
    json_: list[JsonAssertion] = Field(default_factory=list, alias="json")
    headers: dict[str, str] = Field(default_factory=dict)
    """Header name → regex the value must match (a missing header fails)."""
    max_latency: Duration | None = None
    """Slower than this is a failure (the request timeout is a separate, hard bound)."""
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("status")
    @classmethod
    def _status_specs(cls, specs: list[StatusSpec]) -> list[StatusSpec]:
        for spec in specs:
            if isinstance(spec, int):
                if not 100 <= spec <= 599:
                    raise ValueError(f"{spec} is not an HTTP status code")
            elif not _STATUS_CLASS.match(spec):
                raise ValueError(f"{spec!r} is neither a status code nor a class like '2xx'")
        return specs

    @field_validator("body_regex")
    @classmethod
    def _body_regex(cls, pattern: str | None) -> str | None:
        if pattern is not None:
            _compile_regex(pattern)
        return pattern

    @field_validator("headers")
    @classmethod
    def _header_regexes(cls, headers: dict[str, str]) -> dict[str, str]:
        for pattern in headers.values():
            _compile_regex(pattern)
        return headers


class DegradedWhen(Strict):
    """Conditions that turn an otherwise passing response into ``degraded``."""

    latency_over: Duration | None = None
    json_: list[JsonAssertion] = Field(default_factory=list, alias="json")
    """Degraded when ANY of these assertions holds (e.g. ``status`` equals ``degraded``)."""
    status: list[StatusSpec] = Field(default_factory=list)
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class TlsCheck(Strict):
    """Certificate expiry: fewer days left than ``fail_days`` fails, than ``warn_days`` degrades."""

    warn_days: float = 21
    fail_days: float = 7
    verify: bool = True


class RequestSpec(Strict):
    method: Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"] = "GET"
    url: str
    """Absolute, or relative to the journey's ``base_url``. ``{{var}}`` inserts a captured variable."""
    headers: dict[str, str] = Field(default_factory=dict)
    params: dict[str, str] = Field(default_factory=dict)
    body: str | None = None
    json_body: Any = Field(default=None, alias="json")
    follow_redirects: bool = False
    expect: Expectations = Field(default_factory=Expectations)
    degraded_when: DegradedWhen = Field(default_factory=DegradedWhen)
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _one_body(self) -> RequestSpec:
        if self.body is not None and self.json_body is not None:
            raise ValueError("give either body or json, not both")
        return self

    def latency_thresholds(self) -> tuple[float, ...]:
        """Latency limits this request is judged by (fail and degraded), for exact histogram buckets."""
        limits = (self.expect.max_latency, self.degraded_when.latency_over)
        return tuple(v for v in limits if v is not None and v > 0)


class ProbeCommon(Strict):
    name: Name
    description: str = ""
    interval: PositiveDuration | None = None
    """Defaults to ``defaults.interval`` in watchdog.yaml."""
    timeout: PositiveDuration | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    """Fixed labels on every result (cohort, lang, ...). ``probe`` and ``step`` are reserved."""
    enabled: bool = True

    @field_validator("labels")
    @classmethod
    def _reserved_labels(cls, labels: dict[str, str]) -> dict[str, str]:
        for key in labels:
            if key in {"probe", "step", "__name__"}:
                raise ValueError(f"label {key!r} is reserved")
            if not re.match(r"^[a-zA-Z_][a-zA-Z0-9_]*$", key):
                raise ValueError(f"label {key!r} is not a valid Prometheus label name")
        return labels


class HttpProbeConfig(ProbeCommon, RequestSpec):
    kind: Literal["http"]
    tls: TlsCheck | None = None


class Capture(Strict):
    """Where a journey step takes a variable from: exactly one of json (JMESPath), header, cookie, regex."""

    json_: str | None = Field(default=None, alias="json")
    header: str | None = None
    cookie: str | None = None
    regex: str | None = None
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _exactly_one(self) -> Capture:
        given = [n for n in ("json_", "header", "cookie", "regex") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError("a capture takes exactly one of json, header, cookie, regex")
        if self.regex is not None:
            _compile_regex(self.regex)
        return self


class JourneyStep(RequestSpec):
    name: Name
    capture: dict[str, Capture] = Field(default_factory=dict)
    for_each: dict[str, list[str]] = Field(default_factory=dict)
    """Expand this step once per value, e.g. ``{lang: [en, zhTW, zhCN]}``: ``{{lang}}`` is substituted and
    each run is its own result labelled ``lang=…`` (several keys expand to their product)."""

    @field_validator("for_each")
    @classmethod
    def _non_empty(cls, for_each: dict[str, list[str]]) -> dict[str, list[str]]:
        for key, values in for_each.items():
            if not values:
                raise ValueError(f"for_each.{key} needs at least one value")
            if key in {"probe", "step"}:
                raise ValueError(f"for_each key {key!r} is reserved")
        return for_each


class JourneyProbeConfig(ProbeCommon):
    """Ordered steps sharing a cookie jar and captured variables; a failed step stops the journey."""

    kind: Literal["journey"]
    base_url: str = ""
    steps: list[JourneyStep] = Field(min_length=1)
    variables: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _unique_steps(self) -> JourneyProbeConfig:
        names = [s.name for s in self.steps]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"step names must be unique, repeated: {', '.join(dupes)}")
        return self

    def latency_thresholds(self) -> tuple[float, ...]:
        return tuple(v for step in self.steps for v in step.latency_thresholds())


ProbeConfig = Annotated[
    HttpProbeConfig | JourneyProbeConfig | PostgresProbeConfig,
    Field(discriminator="kind"),
]


class ProbesFile(Strict):
    probes: list[ProbeConfig] = Field(default_factory=list)

"""Probe instances (``probes/*.yaml``). Each file holds ``probes: [...]``; ``kind`` picks the model."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from watchdog.config.postgres import PostgresProbeConfig
from watchdog.config.types import Duration, Name, PositiveDuration
from watchdog.core.redact import redact_url, split_userinfo

_STATUS_CLASS = re.compile(r"^[1-5]xx$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _has_userinfo(url: str) -> bool:
    """Whether ``url`` carries credentials (``user:pass@``), read as the redactor reads it."""
    scheme, sep, rest = url.partition("://")
    return bool(sep) and split_userinfo(scheme, rest) is not None


def _has_authorization(headers: dict[str, str]) -> bool:
    return any(name.lower() == "authorization" for name in headers)


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
    """Certificate expiry: fewer days left than ``fail_days`` fails, than ``warn_days`` degrades.

    The probe's URL must be https:// (a config problem otherwise), unless ``only_when_https``: then the
    check runs when the URL (after ``${VAR}`` expansion) is https:// and is skipped when it is http://, so
    one config serves a production https:// target and a local http:// one.
    """

    warn_days: float = 21
    fail_days: float = 7
    verify: bool = True
    only_when_https: bool = False


class BasicAuth(Strict):
    """HTTP basic auth. The password never sits in the YAML: ``password_env`` names the environment
    variable holding it, read when the probe is built (daemon start, ``watchdog check``), so ``validate``
    runs without the secret (in CI, say). An unset or empty variable fails every run of the probe with a
    reason naming it, and no request is sent. Credentials in the URL (``https://user:pass@host/``) are
    sent as basic auth too."""

    username: str
    password_env: str

    @field_validator("password_env")
    @classmethod
    def _env_name(cls, name: str) -> str:
        if not _ENV_NAME.match(name):
            raise ValueError(f"{name!r} is not an environment variable name")
        return name


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
    basic_auth: BasicAuth | None = None
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    # Credentials may come from one place only (fields validate in order: url, headers, ..., basic_auth).
    @field_validator("headers")
    @classmethod
    def _header_or_url_credentials(cls, headers: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        if _has_authorization(headers) and _has_userinfo(info.data.get("url", "")):
            raise ValueError("credentials are given twice: in the URL and an Authorization header")
        return headers

    @field_validator("basic_auth")
    @classmethod
    def _basic_auth_alone(cls, auth: BasicAuth | None, info: ValidationInfo) -> BasicAuth | None:
        if auth is not None and _has_authorization(info.data.get("headers", {})):
            raise ValueError("credentials are given twice: an Authorization header and basic_auth")
        if auth is not None and _has_userinfo(info.data.get("url", "")):
            raise ValueError("credentials are given twice: in the URL and in basic_auth")
        return auth

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

    @field_validator("tls")
    @classmethod
    def _tls_needs_https(cls, tls: TlsCheck | None, info: ValidationInfo) -> TlsCheck | None:
        url = info.data.get("url")
        if tls is None or tls.only_when_https or url is None or url.lower().startswith("https://"):
            return tls
        raise ValueError(
            f"tls check needs an https:// URL, got {redact_url(url)} "
            "(use an https:// URL, or set only_when_https: true to check the certificate only when it is one)"
        )


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


class CloudRunTrafficProbeConfig(ProbeCommon):
    """A Cloud Run service's real traffic per revision, read from Cloud Monitoring
    (``run.googleapis.com/request_count`` and ``request_latencies``): each run records, per revision and
    per complete minute not yet recorded, the observations ``cloud_run_requests``, ``cloud_run_5xx`` and
    (with ``latency_threshold``) ``cloud_run_slow``, labelled ``revision``. A ``counted_ratio`` SLI over
    them is an availability (or latency) SLO of the revision's real requests."""

    kind: Literal["cloud_run_traffic"]
    service: str = ""
    """``projects/P/locations/R/services/S`` (or ``S``); default ``google_cloud.cloud_run_service``."""
    revision: str = ""
    """One revision only; empty: every revision serving traffic, one series per ``revision`` label."""
    latency_threshold: PositiveDuration | None = None
    """Requests slower than this are counted as ``cloud_run_slow`` (exact at a bucket bound of Cloud
    Run's latency distribution, else interpolated inside its bucket)."""
    interval: PositiveDuration | None = 60.0
    """Cloud Run's metrics are per minute: more often reads nothing new."""

    def latency_thresholds(self) -> tuple[float, ...]:
        """None: the result's latency is the read's; the traffic's latency is in the observations."""
        return ()


ProbeConfig = Annotated[
    HttpProbeConfig | JourneyProbeConfig | PostgresProbeConfig | CloudRunTrafficProbeConfig,
    Field(discriminator="kind"),
]


class ProbesFile(Strict):
    probes: list[ProbeConfig] = Field(default_factory=list)

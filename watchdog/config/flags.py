"""Where the YAML/DB content-source flag lives: ``FlagConfig``, one model per backend, picked by ``backend``.

```yaml
flag:
  backend: flagd_file          # or postgres | redis | gcs | http | unleash
  path: /etc/flagd/flags.json
  key: content-data-source
```

Secrets never live in YAML: each backend names the environment variable that holds its DSN, URL or token
(``dsn_env``, ``url_env``, ``token_env``). The kill switch must not share fate with what it guards, so the
``postgres`` backend refuses ``DATABASE_URL``, the monitored database's variable in this project.
Every remote backend bounds one read or write, retries included, by ``deadline`` (default 10 s), and one
request by ``timeout`` (default 3 s), so a rollback never hangs on an unreachable backend.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator, model_validator

from watchdog.config.types import PositiveDuration

DEFAULT_FLAG_KEY = "content-data-source"
"""Mirrors ``watchdog.flags.flagd_file.DEFAULT_FLAG_KEY`` (config sits below flags and cannot import it)."""

MONITORED_DSN_ENV = "DATABASE_URL"
"""The variable that holds the monitored (migrating) database's DSN in this project."""

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SQL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]{0,62}$")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$")
_FLAG_KEY = re.compile(r"^[A-Za-z0-9_.:/-]{1,200}$")


def _env_name(value: str) -> str:
    if not _ENV_NAME.match(value):
        raise ValueError(
            f"{value!r} is not an environment variable name (letters, digits, _; not a digit first)"
        )
    return value


def _http_url(value: str, what: str) -> str:
    if not re.match(r"^https?://[^/\s]+", value):
        raise ValueError(f"{what} must be an http:// or https:// URL, got {value!r}")
    if re.match(r"^https?://[^/@\s]*:[^/@\s]*@", value):
        raise ValueError(
            f"{what} must not carry credentials; put the token in the variable named by token_env"
        )
    return value


FlagKey = Annotated[str, Field(pattern=_FLAG_KEY.pattern)]
"""A flag's key inside its document (flagd flag keys: letters, digits, ``_ . : / -``)."""


class _Backend(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    timeout: PositiveDuration = 3.0
    """One request to the backend (connect, read or write)."""
    deadline: PositiveDuration = 10.0
    """One whole read or write, retries with backoff included: past it the call fails with FlagError."""

    @model_validator(mode="after")
    def _timeout_within_deadline(self) -> _Backend:
        if self.timeout > self.deadline:
            raise ValueError(f"timeout ({self.timeout:g} s) must not exceed deadline ({self.deadline:g} s)")
        return self


class FlagdFileFlagConfig(_Backend):
    """A flagd flag-definition file on a local or mounted filesystem (the default)."""

    backend: Literal["flagd_file"]
    path: str = Field(min_length=1)
    key: FlagKey = DEFAULT_FLAG_KEY


class PostgresFlagConfig(_Backend):
    """A row holding the flagd document (jsonb) in a PostgreSQL database that is NOT the monitored one."""

    backend: Literal["postgres"]
    dsn_env: str
    """Variable holding the flag database's DSN (``postgresql://user:pass@flags-db:5432/flags``)."""
    table: str = "watchdog_flags"
    """Table name, optionally ``schema.table``; created by ``PostgresFlagBackend.create``."""
    key: FlagKey = DEFAULT_FLAG_KEY

    @field_validator("dsn_env")
    @classmethod
    def _not_the_monitored_database(cls, value: str) -> str:
        _env_name(value)
        if value == MONITORED_DSN_ENV:
            raise ValueError(
                f"{MONITORED_DSN_ENV} is the monitored database: the kill switch must not live in the "
                "database it guards; point dsn_env at another database's DSN (e.g. FLAG_DATABASE_URL)"
            )
        return value

    @field_validator("table")
    @classmethod
    def _table_name(cls, value: str) -> str:
        parts = value.split(".")
        if len(parts) > 2 or not all(_SQL_NAME.match(part) for part in parts):
            raise ValueError(f"{value!r} is not a table name: use table or schema.table (letters, digits, _)")
        return value


class RedisFlagConfig(_Backend):
    """A Redis string key holding the flagd document."""

    backend: Literal["redis"]
    url_env: str = "FLAG_REDIS_URL"
    """Variable holding the Redis URL (``redis://:password@flags-redis:6379/0``, ``rediss://`` for TLS)."""
    redis_key: str = Field(default="sre-watchdog:flags", min_length=1, max_length=512)
    """The Redis key whose value is the flagd JSON document."""
    key: FlagKey = DEFAULT_FLAG_KEY

    @field_validator("url_env")
    @classmethod
    def _url_env(cls, value: str) -> str:
        return _env_name(value)


class GcsFlagConfig(_Backend):
    """A flagd JSON document in a Google Cloud Storage object (what flagd and the OpenFeature flagd providers
    sync from on Cloud Run). Credentials: the library's default (ADC, the service account on Cloud Run);
    ``STORAGE_EMULATOR_HOST`` points it at an emulator."""

    backend: Literal["gcs"]
    bucket: str
    object: str = Field(min_length=1, max_length=1024)
    key: FlagKey = DEFAULT_FLAG_KEY

    @field_validator("bucket")
    @classmethod
    def _bucket_name(cls, value: str) -> str:
        if value.startswith("gs://"):
            raise ValueError(
                f"give the bucket name without gs:// (got {value!r}); the object goes in 'object'"
            )
        if not _BUCKET.match(value):
            raise ValueError(f"{value!r} is not a bucket name (3-222 characters: a-z, 0-9, '.', '_', '-')")
        return value

    @field_validator("object")
    @classmethod
    def _object_name(cls, value: str) -> str:
        if value.startswith("/") or "\n" in value or "\r" in value:
            raise ValueError(f"{value!r} is not an object name (no leading '/', no line breaks)")
        return value


class HttpFlagConfig(_Backend):
    """A generic webhook: ``GET url`` answers the state; ``PUT`` (or ``POST``) with a JSON body
    ``{db_percent, reason, updated_by, idempotency_key}`` sets it (see ``watchdog.flags.http``)."""

    backend: Literal["http"]
    url: str
    method: Literal["PUT", "POST"] = "PUT"
    token_env: str | None = None
    """Variable holding a bearer token sent as ``Authorization: Bearer …`` (none: no header)."""

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _http_url(value, "url")

    @field_validator("token_env")
    @classmethod
    def _token_env(cls, value: str | None) -> str | None:
        return None if value is None else _env_name(value)


class UnleashFlagConfig(_Backend):
    """Unleash's admin API: ``db_percent`` is the ``rollout`` parameter of the feature's ``flexibleRollout``
    strategy in ``environment`` (whole percents); rollback sets it to 0."""

    backend: Literal["unleash"]
    url: str
    """Unleash's base URL (``https://unleash.example.com``; a trailing ``/api`` is accepted and dropped)."""
    project: str = Field(default="default", min_length=1)
    feature: str = Field(default=DEFAULT_FLAG_KEY, min_length=1)
    environment: str = Field(min_length=1)
    token_env: str = "UNLEASH_API_TOKEN"
    """Variable holding an admin or personal access token allowed to update the feature's strategies."""
    strategy_id: str | None = None
    """The strategy to drive when the environment has more than one ``flexibleRollout`` strategy."""

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        value = _http_url(value, "url").rstrip("/")
        return value[: -len("/api")] if value.endswith("/api") else value

    @field_validator("token_env")
    @classmethod
    def _token_env(cls, value: str) -> str:
        return _env_name(value)


def _backend_tag(value: object) -> str | None:
    if isinstance(value, dict):
        tag = value.get("backend")
        return tag if isinstance(tag, str) else None
    return getattr(value, "backend", None)


FlagConfig = Annotated[
    Annotated[FlagdFileFlagConfig, Tag("flagd_file")]
    | Annotated[PostgresFlagConfig, Tag("postgres")]
    | Annotated[RedisFlagConfig, Tag("redis")]
    | Annotated[GcsFlagConfig, Tag("gcs")]
    | Annotated[HttpFlagConfig, Tag("http")]
    | Annotated[UnleashFlagConfig, Tag("unleash")],
    Discriminator(
        _backend_tag,
        custom_error_type="flag_backend",
        custom_error_message=("backend must be one of flagd_file, postgres, redis, gcs, http, unleash"),
        custom_error_context={"discriminator": "backend"},
    ),
]
"""Where the flag lives; ``backend`` picks the model."""

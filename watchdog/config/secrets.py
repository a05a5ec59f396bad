"""Secret Manager references in config values: ``sm://projects/P/secrets/NAME/versions/V`` (``V`` a version
number or ``latest``; without ``/versions/V``: latest) or the short ``sm://NAME`` (the project of
``google_cloud.project``, the latest version), resolved when the config is loaded, so at start and on every
reload (a reload is another ``load_config``: a rotated secret's new ``latest`` is read then).

Decisions:

- **Whole values only.** A value is a reference when the whole string is one; ``sm://`` inside a longer string
  is left as it is. A DSN is therefore stored whole in Secret Manager (``state: sm://watchdog-state-dsn``),
  not pieced together as ``postgresql://app:sm://pw@host/db``: where a reference ends inside a string is
  ambiguous, and a password pasted into a URL needs percent-encoding the loader cannot know it needs (the
  watched service's history: special characters in a password broke its connections). Compose with the
  environment instead where a piece must vary: ``${STATE_DSN_REF:-sm://watchdog-state-dsn}``.
- **Resolved after ``${VAR}`` expansion, at the same place.** The loader expands ``${VAR}`` first, so an
  environment variable may hold a reference (``${DB_DSN}`` set to ``sm://db-dsn`` on Cloud Run). A secret's
  value is never expanded or interpreted again: a ``$`` or ``sm://`` in a password stays what it is.
- **The value is used exactly as stored**, trailing newline included (create secrets with ``printf``, not
  ``echo``); its CRC32C is checked when Secret Manager sends one.
- **One call per distinct reference per load** (``sm://db`` and ``sm://projects/P/secrets/db/versions/latest``
  are one), errors cached too, so a reference used by ten fields fails once, reported at each field.
- **Errors name the field and the reference** (the loader adds ``file:line: field:``); NOT_FOUND,
  FAILED_PRECONDITION (a disabled or destroyed version), PERMISSION_DENIED and UNAUTHENTICATED fail at once;
  UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED and INTERNAL are retried with exponential backoff
  within ``google_cloud.secrets_deadline`` for the whole load (30 s by default), so a Secret Manager outage
  delays a start by at most that long and then fails it naming the reference.
- **The value is never logged**: nothing here logs a value; the loader masks every resolved value in its
  problem messages and in ``repr()`` of the loaded config (``WatchdogConfig.secret_values``).
- **Nothing Google is imported** unless a reference is present. ``google_cloud.endpoints["secretmanager"]``
  may name another endpoint: ``http://HOST:PORT`` is a plaintext gRPC channel without credentials (a server
  on loopback in tests); anything else is used with Application Default Credentials.
"""

from __future__ import annotations

import re
import time
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from watchdog.config.gcp import GoogleCloud

if TYPE_CHECKING:
    from google.cloud.secretmanager_v1 import SecretManagerServiceClient

PREFIX = "sm://"
FORMS = "sm://projects/PROJECT/secrets/NAME/versions/(N|latest) or sm://NAME"
DEFAULT_DEADLINE_S = 30.0
"""How long resolving one load's references may take, retries included (``google_cloud.secrets_deadline``)."""
FIRST_BACKOFF_S = 0.25
MAX_BACKOFF_S = 4.0
CALL_TIMEOUT_S = 10.0

_SECRET = r"[A-Za-z0-9_-]{1,255}"
_FULL = re.compile(
    rf"^sm://projects/(?P<project>[A-Za-z0-9.:_-]+)/secrets/(?P<secret>{_SECRET})"
    r"(?:/versions/(?P<version>[1-9][0-9]{0,18}|latest))?$"
)
_SHORT = re.compile(rf"^sm://(?P<secret>{_SECRET})$")

Path_ = tuple[str | int, ...]


class SecretError(Exception):
    """A reference that could not be resolved; the message names it, never a value."""


@dataclass(frozen=True, slots=True)
class SecretRef:
    project: str
    secret: str
    version: str = "latest"

    @property
    def name(self) -> str:
        """The secret version's resource name, as Secret Manager takes it."""
        return f"projects/{self.project}/secrets/{self.secret}/versions/{self.version}"

    def __str__(self) -> str:
        return PREFIX + self.name


def is_reference(value: object) -> bool:
    return isinstance(value, str) and value.startswith(PREFIX)


def parse_reference(text: str, project: str | None) -> SecretRef:
    """``text`` as a reference; the short form takes ``project`` (``google_cloud.project``)."""
    if m := _FULL.match(text):
        return SecretRef(m["project"], m["secret"], m["version"] or "latest")
    if m := _SHORT.match(text):
        if not project:
            raise SecretError(
                f"{text}: the short form needs google_cloud.project in watchdog.yaml "
                "(or write sm://projects/PROJECT/secrets/NAME/versions/latest)"
            )
        return SecretRef(project, m["secret"])
    raise SecretError(f"{text!r} is not a Secret Manager reference; expected {FORMS}")


def find_references(data: Any, path: Path_ = ()) -> Iterator[tuple[Path_, str]]:
    """Every string value in ``data`` (parsed YAML) that is a whole reference, with its path."""
    if isinstance(data, dict):
        for key, value in data.items():
            yield from find_references(value, (*path, key))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            yield from find_references(value, (*path, index))
    elif is_reference(data):
        yield path, data


def google_cloud_of(settings: Any) -> GoogleCloud | None:
    """``google_cloud`` of watchdog.yaml's parsed data, when it is valid (an invalid one is reported by the
    settings' own validation); it says where references resolve, so it is read before anything else."""
    section = settings.get("google_cloud") if isinstance(settings, dict) else None
    if not isinstance(section, dict):
        return None
    try:
        return GoogleCloud.model_validate(section)
    except ValueError:
        return None


def resolve_in(
    data: Any, resolver: SecretResolver, skip: Collection[Path_] = (), settings_file: bool = False
) -> list[tuple[Path_, str]]:
    """Replace every whole-value reference in ``data`` (parsed YAML, changed in place) by its secret's
    value; returns (path, problem) for each that could not be resolved (the caller names file and line).
    ``skip``: paths already reported. In watchdog.yaml (``settings_file``), ``google_cloud`` configures the
    resolver first and may hold no reference itself."""
    if settings_file:
        resolver.configure(google_cloud_of(data))
    problems: list[tuple[Path_, str]] = []
    for path, text in list(find_references(data)):
        if not path or path in skip:
            continue
        if settings_file and path[0] == "google_cloud":
            problems.append((path, f"{text}: google_cloud says where references resolve; it holds none"))
            continue
        try:
            value = resolver.resolve(text)
        except SecretError as exc:
            problems.append((path, str(exc)))
            continue
        parent = data
        for key in path[:-1]:
            parent = parent[key]
        parent[path[-1]] = value
    return problems


class SecretResolver:
    """Resolves references for one load: one client (made on first use), one call per distinct version,
    a shared deadline for retries. ``close()`` when the load is done."""

    def __init__(self, google_cloud: GoogleCloud | None = None) -> None:
        self._google_cloud = google_cloud
        self._client: SecretManagerServiceClient | None = None
        self._cache: dict[str, str | SecretError] = {}
        self._values: set[str] = set()
        self._deadline_at: float | None = None
        self.calls = 0
        """Calls made to Secret Manager by this resolver, retries included."""

    def configure(self, google_cloud: GoogleCloud | None) -> None:
        """Where to resolve (``google_cloud`` of watchdog.yaml); before the first reference."""
        self._google_cloud = google_cloud

    @property
    def values(self) -> frozenset[str]:
        """Every value resolved so far (to mask them wherever config may be shown)."""
        return frozenset(self._values)

    def resolve(self, text: str) -> str:
        """The secret's value; SecretError naming the reference otherwise."""
        project = self._google_cloud.project if self._google_cloud is not None else None
        ref = parse_reference(text, project)
        cached = self._cache.get(ref.name)
        if cached is None:
            try:
                cached = self._access(ref)
            except SecretError as exc:
                cached = exc
            self._cache[ref.name] = cached
        if isinstance(cached, SecretError):
            raise cached
        return cached

    def close(self) -> None:
        if self._client is not None:
            self._client.transport.close()  # type: ignore[no-untyped-call]
            self._client = None

    # -- the call --------------------------------------------------------------------------------------
    def _access(self, ref: SecretRef) -> str:
        client = self._connect(ref)
        from google.api_core import exceptions as gexc

        retryable = (
            gexc.ServiceUnavailable,
            gexc.DeadlineExceeded,
            gexc.ResourceExhausted,
            gexc.InternalServerError,
        )
        deadline = self._google_cloud.secrets_deadline if self._google_cloud else DEFAULT_DEADLINE_S
        if self._deadline_at is None:
            self._deadline_at = time.monotonic() + deadline
        backoff = FIRST_BACKOFF_S
        attempts = 0
        while True:
            attempts += 1
            left = self._deadline_at - time.monotonic()
            self.calls += 1
            try:
                response = client.access_secret_version(
                    name=ref.name, retry=None, timeout=max(1.0, min(CALL_TIMEOUT_S, left))
                )
            except retryable as exc:
                left = self._deadline_at - time.monotonic()
                if left <= backoff:
                    raise SecretError(
                        f"{ref}: Secret Manager did not answer ({_code(exc)}) after {attempts} attempt(s) "
                        f"within the {deadline:g} s allowed (google_cloud.secrets_deadline)"
                    ) from None
                time.sleep(backoff)
                backoff = min(MAX_BACKOFF_S, backoff * 2)
                continue
            except gexc.NotFound:
                raise SecretError(
                    f"{ref}: not found (NOT_FOUND): no such secret or version in project {ref.project}"
                ) from None
            except gexc.FailedPrecondition as exc:
                raise SecretError(
                    f"{ref}: FAILED_PRECONDITION, the version is disabled or destroyed ({_message(exc)})"
                ) from None
            except gexc.PermissionDenied:
                raise SecretError(
                    f"{ref}: permission denied (PERMISSION_DENIED): the watchdog's service account needs "
                    "roles/secretmanager.secretAccessor on this secret"
                ) from None
            except gexc.GoogleAPICallError as exc:
                raise SecretError(f"{ref}: {_code(exc)}: {_message(exc)}") from None
            return self._value(ref, response.payload.data, response.payload)

    def _value(self, ref: SecretRef, data: bytes, payload: Any) -> str:
        if "data_crc32c" in payload:
            import google_crc32c

            if int(google_crc32c.value(data)) != int(payload.data_crc32c):
                raise SecretError(f"{ref}: the payload's CRC32C does not match (corrupted in transit)")
        try:
            value = data.decode("utf-8")
        except UnicodeDecodeError:
            raise SecretError(f"{ref}: the secret is not UTF-8 text") from None
        if value:
            self._values.add(value)
        return value

    def _connect(self, ref: SecretRef) -> SecretManagerServiceClient:
        if self._client is not None:
            return self._client
        try:
            from google.auth.exceptions import DefaultCredentialsError
            from google.cloud.secretmanager_v1 import SecretManagerServiceClient
            from google.cloud.secretmanager_v1.services.secret_manager_service.transports import (
                SecretManagerServiceGrpcTransport,
            )
        except ImportError as exc:
            raise SecretError(
                f"{ref}: google-cloud-secret-manager is not installed ({exc}); install sre-watchdog[gcp]"
            ) from None

        endpoints = self._google_cloud.endpoints if self._google_cloud is not None else {}
        endpoint = endpoints.get("secretmanager", "")
        if endpoint.startswith("http://"):
            import grpc  # type: ignore[import-untyped]

            channel = grpc.insecure_channel(endpoint.removeprefix("http://").rstrip("/"))
            transport = SecretManagerServiceGrpcTransport(channel=channel)
            self._client = SecretManagerServiceClient(transport=transport)
            return self._client
        options = {"api_endpoint": endpoint.removeprefix("https://").rstrip("/")} if endpoint else None
        try:
            self._client = SecretManagerServiceClient(client_options=options)
        except DefaultCredentialsError as exc:
            raise SecretError(
                f"{ref}: no Application Default Credentials to call Secret Manager with ({exc}); on Google "
                "Cloud the service account provides them, elsewhere set GOOGLE_APPLICATION_CREDENTIALS or "
                "run `gcloud auth application-default login`"
            ) from None
        return self._client


def _code(exc: Any) -> str:
    code = getattr(exc, "grpc_status_code", None)
    return str(code.name) if code is not None else type(exc).__name__


def _message(exc: Any) -> str:
    return str(getattr(exc, "message", "") or exc)

"""FlagBackend over a flagd document in a Google Cloud Storage object: what flagd and the OpenFeature flagd
providers sync from on Cloud Run (``gs://bucket/object``), the same JSON the file backend writes.

Every read takes the object's metadata (its ``generation``) and then downloads exactly that generation
(``if_generation_match``); every write uploads with ``if_generation_match=<the generation it was planned
on>``, so two writers never clobber each other: the loser gets 412 Precondition Failed and plans again on
the new generation (where a retried change is recognised by its idempotency key). A rollback that replaces
an unreadable document first copies it to ``<object>.corrupt-<generation>``. Then the object is read back.

Credentials are the library's default (Application Default Credentials: the service account on Cloud Run);
``STORAGE_EMULATOR_HOST`` in the environment points the client at an emulator with anonymous credentials.
The client is synchronous, so each attempt runs in a worker thread; the library's own retries are off
(``retry=None``) so that one bound, ``deadline``, holds for the whole call.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from watchdog.core.clock import Clock, SystemClock
from watchdog.flags._remote import (
    DEFAULT_DEADLINE_S,
    DEFAULT_TIMEOUT_S,
    CorruptDocument,
    Transient,
    bounded,
    decode,
    encode,
    plan_change,
    read_state,
    verify_document,
)
from watchdog.flags.base import FlagError, FlagState
from watchdog.flags.flagd_file import DEFAULT_FLAG_KEY, SCHEMA_URL, canonical_flag, normalize_percent

T = TypeVar("T")

CACHE_CONTROL = "no-cache, max-age=0"
"""Readers of a public URL must not be served an hour-old flag (GCS's default for public objects)."""


class GcsFlagBackend:
    """FlagBackend over one GCS object (module docstring)."""

    def __init__(
        self,
        bucket: str,
        object_name: str,
        *,
        flag_key: str = DEFAULT_FLAG_KEY,
        clock: Clock | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        deadline: float = DEFAULT_DEADLINE_S,
        emulator_host: str | None = None,
        project: str | None = None,
    ) -> None:
        self.bucket = bucket
        self.object_name = object_name
        self.flag_key = flag_key
        self._clock: Clock = clock or SystemClock()
        self._timeout = timeout
        self._deadline = deadline
        self._emulator_host = emulator_host
        self._project = project
        self._client_lock = threading.Lock()
        self._client_obj: Any = None
        self.name = f"gcs:gs://{bucket}/{object_name}#{flag_key}"
        self._where = f"gs://{bucket}/{object_name}"

    @classmethod
    def from_config(cls, config: Any, env: Mapping[str, str], clock: Clock) -> GcsFlagBackend:
        return cls(
            config.bucket,
            config.object,
            flag_key=config.key,
            clock=clock,
            timeout=config.timeout,
            deadline=config.deadline,
            emulator_host=env.get("STORAGE_EMULATOR_HOST") or None,
            project=env.get("GOOGLE_CLOUD_PROJECT") or None,
        )

    # --- FlagBackend --------------------------------------------------------------------------------

    async def get(self) -> FlagState:
        def attempt() -> FlagState:
            raw, _ = self._read()
            return read_state(decode(raw, self._where), self.flag_key, self._where)

        return await bounded(f"reading {self.name}", self._clock, self._deadline, self._threaded(attempt))

    async def set(self, db_percent: float, reason: str, updated_by: str, idempotency_key: str) -> FlagState:
        percent = normalize_percent(db_percent)

        def attempt() -> FlagState:
            raw, generation = self._read()
            try:
                current: Any = decode(raw, self._where)
            except CorruptDocument as exc:
                current = exc
            plan = plan_change(
                current,
                flag_key=self.flag_key,
                percent=percent,
                reason=reason,
                updated_by=updated_by,
                idempotency_key=idempotency_key,
                now=self._clock.now(),
                where=self._where,
            )
            if plan.document is None:
                return plan.state
            if plan.repaired:
                self._keep_corrupt(raw, generation)
            self._upload(encode(plan.document), if_generation_match=generation)
            written, _ = self._read()
            return verify_document(
                decode(written, self._where),
                flag_key=self.flag_key,
                percent=percent,
                idempotency_key=idempotency_key,
                where=self._where,
            )

        return await bounded(f"setting {self.name}", self._clock, self._deadline, self._threaded(attempt))

    # --- setup ----------------------------------------------------------------------------------------

    async def create(
        self, db_percent: float = 0.0, *, updated_by: str = "sre-watchdog", reason: str = "initial flag"
    ) -> FlagState:
        """Upload a document holding only the flag if the object does not exist; returns the flag's state."""
        flag = canonical_flag(
            db_percent, updated_by=updated_by, reason=reason, idempotency_key="", updated_at=self._clock.now()
        )
        data = encode({"$schema": SCHEMA_URL, "flags": {self.flag_key: flag}})

        def attempt() -> FlagState:
            from google.api_core import exceptions as gexc

            with contextlib.suppress(gexc.PreconditionFailed):  # it exists already: left alone
                self._upload(data, if_generation_match=0)
            raw, _ = self._read()
            return read_state(decode(raw, self._where), self.flag_key, self._where)

        return await bounded(f"creating {self.name}", self._clock, self._deadline, self._threaded(attempt))

    # --- internals (run in a worker thread) ------------------------------------------------------------

    def _client(self) -> Any:
        with self._client_lock:
            if self._client_obj is None:
                import google.cloud.storage as storage  # type: ignore[import-untyped]

                if self._emulator_host:
                    from google.auth.credentials import AnonymousCredentials

                    host = self._emulator_host
                    endpoint = host if "://" in host else f"http://{host}"
                    self._client_obj = storage.Client(
                        project=self._project or "sre-watchdog",
                        credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
                        client_options={"api_endpoint": endpoint},
                    )
                else:
                    self._client_obj = storage.Client(project=self._project)
            return self._client_obj

    def _read(self) -> tuple[bytes, int]:
        """The object's bytes and the generation they belong to."""
        bucket = self._client().bucket(self.bucket)
        blob = bucket.get_blob(self.object_name, timeout=self._timeout, retry=None)
        if blob is None:
            raise FlagError(
                f"{self._where} does not exist (a wrong bucket or object is never created by a write; "
                "GcsFlagBackend.create makes it)"
            )
        generation = int(blob.generation)
        data = blob.download_as_bytes(if_generation_match=generation, timeout=self._timeout, retry=None)
        return bytes(data), generation

    def _upload(self, data: bytes, *, if_generation_match: int) -> int:
        blob = self._client().bucket(self.bucket).blob(self.object_name)
        blob.cache_control = CACHE_CONTROL
        blob.upload_from_string(
            data,
            content_type="application/json",
            if_generation_match=if_generation_match,
            timeout=self._timeout,
            retry=None,
        )
        return int(blob.generation)

    def _keep_corrupt(self, raw: bytes, generation: int) -> None:
        from google.api_core import exceptions as gexc

        backup = self._client().bucket(self.bucket).blob(f"{self.object_name}.corrupt-{generation}")
        with contextlib.suppress(gexc.PreconditionFailed):  # kept by an earlier attempt
            backup.upload_from_string(raw, if_generation_match=0, timeout=self._timeout, retry=None)

    def _threaded(self, attempt: Callable[[], T]) -> Callable[[], Any]:
        async def run() -> T:
            return await asyncio.to_thread(self._mapped, attempt)

        return run

    def _mapped(self, attempt: Callable[[], T]) -> T:
        """Map the client's errors: lost races (412), overload and network trouble are retried; a missing
        bucket or object, or refused credentials, are reported at once."""
        import requests
        from google.api_core import exceptions as gexc
        from google.auth import exceptions as auth_errors

        try:
            return attempt()
        except gexc.PreconditionFailed as exc:
            raise Transient(f"{self._where} changed while we were writing; planning again") from exc
        except gexc.NotFound as exc:
            raise FlagError(f"{self._where}: not found ({_message(exc)}); is the bucket right?") from exc
        except (gexc.Unauthorized, gexc.Forbidden, auth_errors.RefreshError) as exc:
            raise FlagError(f"{self._where}: access refused: {_message(exc)}") from exc
        except (
            gexc.TooManyRequests,
            gexc.InternalServerError,
            gexc.BadGateway,
            gexc.ServiceUnavailable,
            gexc.GatewayTimeout,
            gexc.RequestRangeNotSatisfiable,
            requests.ConnectionError,
            requests.Timeout,
            auth_errors.TransportError,
        ) as exc:
            raise Transient(f"{self._where}: {type(exc).__name__}: {_message(exc)}") from exc
        except gexc.GoogleAPICallError as exc:
            raise FlagError(f"{self._where}: {type(exc).__name__}: {_message(exc)}") from exc


def _message(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:300]

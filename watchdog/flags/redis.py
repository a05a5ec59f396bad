"""FlagBackend over a Redis string key holding the flagd document (the same JSON the file backend writes).

A write is an optimistic transaction: ``WATCH key``, ``GET``, plan the change on what it holds, then
``MULTI; SET; EXEC``. If anyone wrote the key in between, ``EXEC`` aborts (WatchError) and the attempt is
planned again on the new value, so two writers never clobber each other and a retried change that someone
else already applied is recognised by its idempotency key. A rollback that replaces an unreadable value
keeps the old bytes under ``<key>:corrupt:<epoch>`` in the same transaction. Then a fresh ``GET`` reads it
back. Connection errors, timeouts and lost races are retried within the deadline; redis-py's own retries
are off so that one bound holds. One client per call (``redis.asyncio``), closed after it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis import exceptions as redis_errors
from redis.asyncio.client import Pipeline
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from watchdog.core.clock import Clock, SystemClock
from watchdog.core.redact import redact_url, scrub, secret_spellings
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

DEFAULT_REDIS_KEY = "sre-watchdog:flags"


class RedisFlagBackend:
    """FlagBackend over one Redis key (module docstring)."""

    def __init__(
        self,
        url: str,
        *,
        redis_key: str = DEFAULT_REDIS_KEY,
        flag_key: str = DEFAULT_FLAG_KEY,
        clock: Clock | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        deadline: float = DEFAULT_DEADLINE_S,
    ) -> None:
        self._url = url
        self._secrets = secret_spellings(url)
        self.redis_key = redis_key
        self.flag_key = flag_key
        self._clock: Clock = clock or SystemClock()
        self._timeout = timeout
        self._deadline = deadline
        self.name = f"redis:{redact_url(url)}/{redis_key}#{flag_key}"
        self._where = f"Redis key {redis_key!r}"

    @classmethod
    def from_config(cls, config: Any, env: Mapping[str, str], clock: Clock) -> RedisFlagBackend:
        url = env.get(config.url_env, "")
        if not url:
            raise FlagError(f"{config.url_env} is not set: the redis flag backend needs the Redis URL")
        return cls(
            url,
            redis_key=config.redis_key,
            flag_key=config.key,
            clock=clock,
            timeout=config.timeout,
            deadline=config.deadline,
        )

    # --- FlagBackend --------------------------------------------------------------------------------

    async def get(self) -> FlagState:
        async def attempt() -> FlagState:
            async with self._client() as client:
                raw = await client.get(self.redis_key)
            return read_state(self._decode(raw), self.flag_key, self._where)

        return await bounded(f"reading {self.name}", self._clock, self._deadline, self._guard(attempt))

    async def set(self, db_percent: float, reason: str, updated_by: str, idempotency_key: str) -> FlagState:
        percent = normalize_percent(db_percent)

        async def attempt() -> FlagState:
            async with self._client() as client:
                async with client.pipeline(transaction=True) as pipe:
                    await pipe.watch(self.redis_key)
                    raw = await pipe.get(self.redis_key)
                    try:
                        current: Any = self._decode(raw)
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
                    pipe.multi()  # type: ignore[no-untyped-call]
                    self._queue_write(pipe, encode(plan.document))
                    if plan.repaired and raw is not None:
                        pipe.set(f"{self.redis_key}:corrupt:{int(self._clock.now())}", raw)
                    await pipe.execute()
                written = await client.get(self.redis_key)
            return verify_document(
                self._decode(written),
                flag_key=self.flag_key,
                percent=percent,
                idempotency_key=idempotency_key,
                where=self._where,
            )

        return await bounded(f"setting {self.name}", self._clock, self._deadline, self._guard(attempt))

    # --- setup ----------------------------------------------------------------------------------------

    async def create(
        self, db_percent: float = 0.0, *, updated_by: str = "sre-watchdog", reason: str = "initial flag"
    ) -> FlagState:
        """Write a document holding only the flag if the key does not exist (``SET NX``); returns the
        flag's state."""
        flag = canonical_flag(
            db_percent, updated_by=updated_by, reason=reason, idempotency_key="", updated_at=self._clock.now()
        )
        data = encode({"$schema": SCHEMA_URL, "flags": {self.flag_key: flag}})

        async def attempt() -> FlagState:
            async with self._client() as client:
                await client.set(self.redis_key, data, nx=True)
                raw = await client.get(self.redis_key)
            return read_state(self._decode(raw), self.flag_key, self._where)

        return await bounded(f"creating {self.name}", self._clock, self._deadline, self._guard(attempt))

    # --- internals ------------------------------------------------------------------------------------

    def _client(self) -> aioredis.Redis:
        return aioredis.Redis.from_url(
            self._url,
            socket_timeout=self._timeout,
            socket_connect_timeout=self._timeout,
            retry=Retry(NoBackoff(), 0),
            decode_responses=False,
        )

    def _queue_write(self, pipe: Pipeline, data: bytes) -> None:
        pipe.set(self.redis_key, data)

    def _decode(self, raw: Any) -> Any:
        if raw is None:
            raise FlagError(
                f"{self._where} does not exist (a wrong key is never created by a write; "
                "RedisFlagBackend.create makes it)"
            )
        return decode(raw, self._where)

    def _guard(self, attempt: Callable[[], Awaitable[T]]) -> Callable[[], Awaitable[T]]:
        async def guarded() -> T:
            try:
                return await attempt()
            except redis_errors.WatchError as exc:
                raise Transient(f"{self._where} changed while we were writing; planning again") from exc
            except redis_errors.AuthenticationError as exc:
                raise FlagError(f"{self.name}: authentication failed: {self._scrub(exc)}") from exc
            except (
                redis_errors.ConnectionError,
                redis_errors.TimeoutError,
                redis_errors.ReadOnlyError,
                redis_errors.TryAgainError,
                redis_errors.ClusterDownError,
            ) as exc:
                raise Transient(f"{self.name}: {type(exc).__name__}: {self._scrub(exc)}") from exc
            except redis_errors.RedisError as exc:
                raise FlagError(f"{self.name}: {type(exc).__name__}: {self._scrub(exc)}") from exc

        return guarded

    def _scrub(self, exc: BaseException) -> str:
        return scrub(" ".join(str(exc).split()), self._secrets)

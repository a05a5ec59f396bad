"""FlagBackend over a PostgreSQL table: one row per flag key, the flagd document in a ``jsonb`` column.

The database must NOT be the monitored one (the kill switch must work while that database is down); the
config refuses ``DATABASE_URL``. Table (``PostgresFlagBackend.create`` makes it)::

    CREATE TABLE watchdog_flags (
      flag_key         text PRIMARY KEY,
      document         jsonb NOT NULL,        -- a flagd document holding the flag (file backend layout)
      version          bigint NOT NULL,       -- +1 on every write
      updated_at       timestamptz NOT NULL,
      corrupt_document jsonb                  -- the unreadable document a rollback replaced, kept for people
    );

A write is one transaction: ``SELECT … FOR UPDATE`` locks the row, the change is planned on what it holds
(idempotency, refusal of unreadable documents), the ``UPDATE`` commits, and a fresh ``SELECT`` reads it
back. Two writers queue on the row lock, so the second sees the first's write (the same key is then a
no-op). Connection errors, lock and statement timeouts are retried within the deadline; one connection per
call (psycopg 3, async), closed after it: nothing is held between the rare flag operations.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from watchdog.core.clock import Clock, SystemClock
from watchdog.core.redact import redact_url, scrub, secret_spellings
from watchdog.flags._remote import (
    DEFAULT_DEADLINE_S,
    DEFAULT_TIMEOUT_S,
    CorruptDocument,
    Plan,
    Transient,
    bounded,
    plan_change,
    read_state,
    verify_document,
)
from watchdog.flags.base import FlagError, FlagState
from watchdog.flags.flagd_file import DEFAULT_FLAG_KEY, SCHEMA_URL, canonical_flag, normalize_percent

T = TypeVar("T")

DEFAULT_TABLE = "watchdog_flags"
APPLICATION_NAME = "sre-watchdog-flag"


class PostgresFlagBackend:
    """FlagBackend over a row of a PostgreSQL table (module docstring)."""

    def __init__(
        self,
        dsn: str,
        *,
        table: str = DEFAULT_TABLE,
        flag_key: str = DEFAULT_FLAG_KEY,
        clock: Clock | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        deadline: float = DEFAULT_DEADLINE_S,
    ) -> None:
        self._dsn = dsn
        self._secrets = secret_spellings(dsn)
        self.table = table
        self.flag_key = flag_key
        self._table = sql.Identifier(*table.split("."))
        self._clock: Clock = clock or SystemClock()
        self._timeout = timeout
        self._deadline = deadline
        self.name = f"postgres:{redact_url(dsn)}/{table}#{flag_key}"
        self._where = f"flag row {flag_key!r} of table {table}"

    @classmethod
    def from_config(cls, config: Any, env: Mapping[str, str], clock: Clock) -> PostgresFlagBackend:
        dsn = env.get(config.dsn_env, "")
        if not dsn:
            raise FlagError(
                f"{config.dsn_env} is not set: the postgres flag backend needs the flag database's DSN"
            )
        return cls(
            dsn,
            table=config.table,
            flag_key=config.key,
            clock=clock,
            timeout=config.timeout,
            deadline=config.deadline,
        )

    # --- FlagBackend --------------------------------------------------------------------------------

    async def get(self) -> FlagState:
        async def attempt() -> FlagState:
            async with await self._connect() as conn:
                return read_state(await self._select(conn, lock=False), self.flag_key, self._where)

        return await bounded(f"reading {self.name}", self._clock, self._deadline, self._guard(attempt))

    async def set(self, db_percent: float, reason: str, updated_by: str, idempotency_key: str) -> FlagState:
        percent = normalize_percent(db_percent)

        async def attempt() -> FlagState:
            async with await self._connect() as conn:
                async with conn.transaction():
                    try:
                        current: Any = await self._select(conn, lock=True)
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
                    await self._update(conn, plan)
                # Committed: read it back as any reader would.
                written = await self._select(conn, lock=False)
            return verify_document(
                written,
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
        """Create the table if missing and the flag's row if missing (an existing row is left alone);
        returns the flag's state."""
        percent = normalize_percent(db_percent)

        async def attempt() -> FlagState:
            flag = canonical_flag(
                percent,
                updated_by=updated_by,
                reason=reason,
                idempotency_key="",
                updated_at=self._clock.now(),
            )
            document = {"$schema": SCHEMA_URL, "flags": {self.flag_key: flag}}
            async with await self._connect() as conn:
                async with conn.transaction():
                    await conn.execute(
                        sql.SQL(
                            "CREATE TABLE IF NOT EXISTS {} (flag_key text PRIMARY KEY, "
                            "document jsonb NOT NULL, version bigint NOT NULL DEFAULT 1, "
                            "updated_at timestamptz NOT NULL DEFAULT now(), corrupt_document jsonb)"
                        ).format(self._table)
                    )
                    await conn.execute(
                        sql.SQL(
                            "INSERT INTO {} (flag_key, document) VALUES (%s, %s) "
                            "ON CONFLICT (flag_key) DO NOTHING"
                        ).format(self._table),
                        (self.flag_key, Jsonb(document)),
                    )
                return read_state(await self._select(conn, lock=False), self.flag_key, self._where)

        return await bounded(f"creating {self.name}", self._clock, self._deadline, self._guard(attempt))

    # --- internals ------------------------------------------------------------------------------------

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        conn = await psycopg.AsyncConnection.connect(
            self._dsn,
            connect_timeout=max(1, math.ceil(self._timeout)),
            application_name=APPLICATION_NAME,
        )
        ms = str(max(1, int(self._timeout * 1000)))
        try:
            # Server-side bounds: a stuck lock holder or a slow statement is a retryable error, not a hang.
            await conn.execute(
                "SELECT set_config('statement_timeout', %s, false), set_config('lock_timeout', %s, false), "
                "set_config('idle_in_transaction_session_timeout', %s, false)",
                (ms, ms, str(max(1000, int(self._deadline * 1000)))),
            )
            await conn.commit()
        except BaseException:
            await conn.close()
            raise
        return conn

    async def _select(self, conn: psycopg.AsyncConnection[Any], *, lock: bool) -> Any:
        query = sql.SQL(
            "SELECT document FROM {} WHERE flag_key = %s" + (" FOR UPDATE" if lock else "")
        ).format(self._table)
        cur = await conn.execute(query, (self.flag_key,))
        row = await cur.fetchone()
        if row is None:
            raise FlagError(
                f"no row for flag {self.flag_key!r} in table {self.table} (a wrong key or table is never "
                "created by a write; PostgresFlagBackend.create makes the row)"
            )
        return row[0]

    async def _update(self, conn: psycopg.AsyncConnection[Any], plan: Plan) -> None:
        cur = await conn.execute(
            sql.SQL(
                "UPDATE {} SET document = %s, version = version + 1, updated_at = now(), "
                "corrupt_document = CASE WHEN %s THEN document ELSE corrupt_document END "
                "WHERE flag_key = %s"
            ).format(self._table),
            (Jsonb(plan.document), bool(plan.repaired), self.flag_key),
        )
        if cur.rowcount != 1:
            raise FlagError(f"update of {self._where} touched {cur.rowcount} rows, expected 1")

    def _guard(self, attempt: Callable[[], Awaitable[T]]) -> Callable[[], Awaitable[T]]:
        """Map psycopg's errors: operational ones (connection, timeouts, lock waits, deadlocks) are retried;
        the rest (no such table, no permission) are configuration errors, reported at once."""

        async def guarded() -> T:
            try:
                return await attempt()
            except psycopg.errors.UndefinedTable as exc:
                raise FlagError(
                    f"table {self.table} does not exist in the flag database ({self._scrub(exc)}); "
                    "PostgresFlagBackend.create makes it"
                ) from exc
            except psycopg.OperationalError as exc:
                raise Transient(f"{self.name}: {self._scrub(exc)}") from exc
            except psycopg.Error as exc:
                raise FlagError(f"{self.name}: {type(exc).__name__}: {self._scrub(exc)}") from exc

        return guarded

    def _scrub(self, exc: BaseException) -> str:
        return scrub(" ".join(str(exc).split()), self._secrets)

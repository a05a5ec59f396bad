"""PostgreSQL StateStore (psycopg 3, async), for several watchdog replicas sharing one database.

One connection, used under an asyncio.Lock (a connection runs one transaction at a time), reconnected on
the next call after a failure. Coordination is done by the database, not by the lock, because the other
replica has its own connection: SKIP LOCKED for outbox claims, compare-and-set on ``version`` for incidents,
and a conditional UPSERT for the lease. Concurrent UPSERT batches lock rows in primary-key order, so two
writers merging the same minutes cannot deadlock.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, LiteralString, TypeVar, cast

import psycopg
from psycopg import sql
from psycopg.pq import TransactionStatus

from watchdog.core.redact import redact_url, scrub, secret_spellings
from watchdog.core.results import ProbeResult
from watchdog.store._common import (
    DEFAULT_MINUTE_RETENTION_S,
    DEFAULT_RAW_RETENTION_S,
    OBSERVATION_SERIES,
    RESULT_SERIES,
    AggRow,
    Batch,
    BucketRow,
    ObsRow,
    SeriesInfo,
    aggregate,
    check_args_positive,
    dumps,
    filter_series,
    incident,
    merge_minute_rows,
    minute_of,
    normalize_edges,
    observation_rows,
    quantiles_from_bins,
    result_from_json,
    result_to_json,
)
from watchdog.store.base import (
    LATENCY_BUCKETS_S,
    Incident,
    Lease,
    MinuteAggregate,
    ObservationMinute,
    OutboxEntry,
    OutboxItem,
    StoreUnavailable,
)

T = TypeVar("T")
Conn = psycopg.AsyncConnection[tuple[Any, ...]]

SCHEMA_VERSION = 1
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")

# {s} is the schema. Minute tables are keyed (minute, series_id, ...) so recent-minute reads and prune's
# range delete use the primary key; there is no other index to maintain on the hot write path.
_SCHEMA: tuple[LiteralString, ...] = (
    "CREATE TABLE IF NOT EXISTS {s}.schema_version (version integer NOT NULL)",
    """CREATE TABLE IF NOT EXISTS {s}.series (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        kind text NOT NULL,
        skey text NOT NULL,
        probe text NOT NULL,
        name text NOT NULL,
        labels text NOT NULL,
        UNIQUE (kind, skey))""",
    """CREATE TABLE IF NOT EXISTS {s}.minute_agg (
        minute bigint NOT NULL,
        series_id bigint NOT NULL,
        n bigint NOT NULL,
        failures bigint NOT NULL,
        degraded bigint NOT NULL,
        latency_sum double precision NOT NULL,
        PRIMARY KEY (minute, series_id))""",
    """CREATE TABLE IF NOT EXISTS {s}.minute_bucket (
        minute bigint NOT NULL,
        series_id bigint NOT NULL,
        le double precision NOT NULL,
        n bigint NOT NULL,
        PRIMARY KEY (minute, series_id, le))""",
    """CREATE TABLE IF NOT EXISTS {s}.minute_sketch (
        minute bigint NOT NULL,
        series_id bigint NOT NULL,
        bin integer NOT NULL,
        n bigint NOT NULL,
        PRIMARY KEY (minute, series_id, bin))""",
    """CREATE TABLE IF NOT EXISTS {s}.obs_minute (
        minute bigint NOT NULL,
        series_id bigint NOT NULL,
        n bigint NOT NULL,
        total double precision NOT NULL,
        lo double precision NOT NULL,
        hi double precision NOT NULL,
        last double precision NOT NULL,
        last_at double precision NOT NULL,
        PRIMARY KEY (minute, series_id))""",
    """CREATE TABLE IF NOT EXISTS {s}.latest (
        series_id bigint PRIMARY KEY,
        probe text NOT NULL,
        started_at double precision NOT NULL,
        result text NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS {s}.raw_result (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        probe text NOT NULL,
        started_at double precision NOT NULL,
        result text NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS raw_result_started ON {s}.raw_result (started_at)",
    "CREATE INDEX IF NOT EXISTS raw_result_probe ON {s}.raw_result (probe, started_at)",
    """CREATE TABLE IF NOT EXISTS {s}.outbox (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        topic text NOT NULL,
        payload jsonb NOT NULL,
        dedup_key text NOT NULL UNIQUE,
        attempts integer NOT NULL DEFAULT 0,
        created_at double precision NOT NULL,
        available_at double precision NOT NULL,
        claimed_by text,
        claimed_until double precision,
        done_at double precision,
        last_error text)""",
    "CREATE INDEX IF NOT EXISTS outbox_ready ON {s}.outbox (topic, available_at) WHERE done_at IS NULL",
    """CREATE TABLE IF NOT EXISTS {s}.incident (
        incident_key text PRIMARY KEY,
        state text NOT NULL,
        version bigint NOT NULL,
        data jsonb NOT NULL,
        updated_at double precision NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS incident_state ON {s}.incident (state)",
    """CREATE TABLE IF NOT EXISTS {s}.lease (
        name text PRIMARY KEY,
        holder text NOT NULL,
        expires_at double precision NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS {s}.record (
        kind text NOT NULL,
        rkey text NOT NULL,
        value jsonb NOT NULL,
        updated_at double precision NOT NULL,
        PRIMARY KEY (kind, rkey))""",
)

_ENQUEUE: LiteralString = (
    "INSERT INTO {s}.outbox (topic, payload, dedup_key, created_at, available_at)"
    " VALUES (%s, %s::jsonb, %s, %s, %s) ON CONFLICT (dedup_key) DO NOTHING"
)

_OUTBOX_RETURNING: LiteralString = (
    " RETURNING o.id, o.topic, o.payload, o.dedup_key, o.attempts, o.created_at, o.available_at"
)


class PostgresStore:
    def __init__(
        self,
        dsn: str,
        *,
        schema: str = "public",
        latency_buckets: Iterable[float] = LATENCY_BUCKETS_S,
        raw_retention_s: float = DEFAULT_RAW_RETENTION_S,
        minute_retention_s: float = DEFAULT_MINUTE_RETENTION_S,
        connect_timeout_s: float = 5.0,
        statement_timeout_s: float = 10.0,
        reconnect_backoff_s: float = 1.0,
    ) -> None:
        check_args_positive(
            raw_retention_s=raw_retention_s,
            minute_retention_s=minute_retention_s,
            connect_timeout_s=connect_timeout_s,
            statement_timeout_s=statement_timeout_s,
        )
        if reconnect_backoff_s < 0:
            raise ValueError(f"reconnect_backoff_s must be >= 0, got {reconnect_backoff_s!r}")
        if not _IDENTIFIER.match(schema):
            raise ValueError(f"invalid schema name {schema!r}")
        self._dsn = dsn
        self._schema = schema
        self._edges = normalize_edges(latency_buckets)
        self._raw_retention_s = raw_retention_s
        self._minute_retention_s = minute_retention_s
        self._connect_timeout_s = connect_timeout_s
        self._statement_timeout_s = statement_timeout_s
        self._reconnect_backoff_s = reconnect_backoff_s
        # After a failed connect, calls fail fast until this monotonic time instead of each waiting out
        # connect_timeout: callers queued on the lock must not pile up behind an unreachable server.
        self._retry_at = 0.0
        self._last_error = ""
        self._conn: Conn | None = None
        self._migrated = False
        self._closed = False
        self._lock = asyncio.Lock()
        self._queries: dict[str, sql.Composed] = {}
        self._series_ids: dict[tuple[str, str], int] = {}

    @property
    def schema(self) -> str:
        return self._schema

    def __repr__(self) -> str:
        return f"PostgresStore({redact_url(self._dsn)!r}, schema={self._schema!r})"

    # -- plumbing --------------------------------------------------------------------------------
    def _q(self, template: LiteralString) -> sql.Composed:
        """The statement with the schema filled in, composed once."""
        q = self._queries.get(template)
        if q is None:
            q = sql.SQL(template).format(s=sql.Identifier(self._schema))
            self._queries[template] = q
        return q

    def _unavailable(self, what: str, e: BaseException) -> StoreUnavailable:
        # libpq may echo parts of the conninfo (even the password) in its errors: scrub them.
        detail = scrub(str(e), secret_spellings(self._dsn))
        return StoreUnavailable(f"postgres store {redact_url(self._dsn)}: {what}: {detail}")

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):  # already broken; nothing more to release
                await conn.close()

    async def _connection(self) -> Conn:
        if self._closed:
            raise StoreUnavailable(f"postgres store {redact_url(self._dsn)} is closed")
        conn = self._conn
        if conn is not None and not conn.closed and not conn.broken:
            return conn
        await self._drop()
        if time.monotonic() < self._retry_at:
            raise StoreUnavailable(self._last_error)
        try:
            # autocommit: transactions are explicit (conn.transaction()), so a read never leaves one open.
            conn = await psycopg.AsyncConnection.connect(
                self._dsn,
                autocommit=True,
                connect_timeout=max(2, round(self._connect_timeout_s)),
                application_name="sre-watchdog",
            )
        except (psycopg.Error, OSError) as e:
            error = self._unavailable("cannot connect", e)
            self._retry_at = time.monotonic() + self._reconnect_backoff_s
            self._last_error = str(error)
            raise error from None
        try:
            await conn.execute(
                "SELECT set_config('statement_timeout', %s, false)",
                (f"{int(self._statement_timeout_s * 1000)}ms",),
            )
            if not self._migrated:
                await self._migrate(conn)
                self._migrated = True
        except BaseException as e:
            await conn.close()
            if isinstance(e, psycopg.Error):
                raise self._unavailable("cannot prepare the schema", e) from None
            raise
        self._conn = conn
        return conn

    async def _migrate(self, conn: Conn) -> None:
        async with conn.transaction():
            # Serialise concurrent migrations: CREATE ... IF NOT EXISTS is not race-free between sessions.
            await conn.execute(
                "SELECT pg_advisory_xact_lock(hashtext(%s))", (f"sre-watchdog:{self._schema}",)
            )
            cur = await conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (self._schema,))
            if await cur.fetchone() is None:
                await conn.execute(self._q("CREATE SCHEMA IF NOT EXISTS {s}"))
            for statement in _SCHEMA:
                await conn.execute(self._q(statement))
            cur = await conn.execute(self._q("SELECT max(version) FROM {s}.schema_version"))
            row = await cur.fetchone()
            version = None if row is None else row[0]
            if version is None:
                await conn.execute(
                    self._q("INSERT INTO {s}.schema_version (version) VALUES (%s)"), (SCHEMA_VERSION,)
                )
            elif version > SCHEMA_VERSION:
                raise StoreUnavailable(
                    f"postgres store {redact_url(self._dsn)} schema {self._schema} has version {version}, "
                    f"newer than this watchdog's {SCHEMA_VERSION}; upgrade the watchdog"
                )

    async def _run(self, what: str, fn: Callable[[Conn], Awaitable[T]]) -> T:
        async with self._lock:
            conn = await self._connection()
            try:
                return await fn(conn)
            except psycopg.Error as e:
                if isinstance(e, psycopg.OperationalError | psycopg.InterfaceError) or conn.broken:
                    await self._drop()
                raise self._unavailable(what, e) from None
            except BaseException:
                # Cancelled mid-statement: do not reuse a connection in an unknown state.
                if conn.closed or conn.info.transaction_status != TransactionStatus.IDLE:
                    await self._drop()
                raise

    async def open(self) -> None:
        # Not opened yet, or open() failed: every call (re)tries to connect, so a daemon started before
        # its database comes up recovers by itself. Only close() makes the store refuse.
        async with self._lock:
            self._closed = False
            self._retry_at = 0.0
            await self._connection()

    async def close(self) -> None:
        async with self._lock:
            self._closed = True
            await self._drop()

    async def ping(self) -> None:
        async def _ping(conn: Conn) -> None:
            await conn.execute("SELECT 1")

        await self._run("ping", _ping)

    # -- probe results ---------------------------------------------------------------------------
    async def record(self, results: Sequence[ProbeResult]) -> None:
        if not results:
            return
        batch = aggregate(results, self._edges)
        new_ids: dict[tuple[str, str], int] = {}

        async def _record(conn: Conn) -> None:
            async with conn.transaction():
                new_ids.update(await self._write(conn, batch))

        await self._run("record", _record)
        # Only cache ids once committed: a rolled-back insert would leave a dangling id behind.
        self._series_ids.update(new_ids)

    async def _ensure_series(
        self, conn: Conn, series: Mapping[tuple[str, str], SeriesInfo]
    ) -> dict[tuple[str, str], int]:
        ids = {sk: self._series_ids[sk] for sk in series if sk in self._series_ids}
        missing = sorted(sk for sk in series if sk not in ids)
        if missing:
            async with conn.cursor() as cur:
                await cur.executemany(
                    self._q(
                        "INSERT INTO {s}.series (kind, skey, probe, name, labels) VALUES (%s, %s, %s, %s, %s)"
                        " ON CONFLICT (kind, skey) DO NOTHING"
                    ),
                    [
                        (
                            kind,
                            key,
                            series[(kind, key)].probe,
                            series[(kind, key)].name,
                            dumps(series[(kind, key)].labels),
                        )
                        for kind, key in missing
                    ],
                )
                await cur.execute(
                    self._q("SELECT kind, skey, id FROM {s}.series WHERE skey = ANY(%s)"),
                    ([key for _, key in missing],),
                )
                wanted = set(missing)
                for kind, key, sid in await cur.fetchall():
                    if (kind, key) in wanted:
                        ids[(kind, key)] = int(sid)
        return ids

    async def _write(self, conn: Conn, batch: Batch) -> dict[tuple[str, str], int]:
        ids = await self._ensure_series(conn, batch.series)
        rid = {key: sid for (kind, key), sid in ids.items() if kind == RESULT_SERIES}
        oid = {key: sid for (kind, key), sid in ids.items() if kind == OBSERVATION_SERIES}
        # Rows sorted by primary key: concurrent writers then lock shared rows in the same order.
        aggs = sorted(
            (minute, rid[skey], a.count, a.failures, a.degraded, a.latency_sum_s)
            for (skey, minute), a in batch.aggs.items()
        )
        buckets = sorted(
            (minute, rid[skey], le, n)
            for (skey, minute), a in batch.aggs.items()
            for le, n in a.buckets.items()
        )
        bins = sorted(
            (minute, rid[skey], k, n) for (skey, minute), a in batch.aggs.items() for k, n in a.sketch.items()
        )
        obs = sorted(
            (minute, oid[okey], o.count, o.sum, o.min, o.max, o.last, o.last_at)
            for (okey, minute), o in batch.obs.items()
        )
        latest = sorted(
            (rid[skey], r.probe, r.started_at, result_to_json(r)) for skey, r in batch.latest.items()
        )
        async with conn.cursor() as cur:
            await cur.executemany(
                self._q(
                    "INSERT INTO {s}.minute_agg AS t (minute, series_id, n, failures, degraded, latency_sum)"
                    " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (minute, series_id) DO UPDATE SET"
                    " n = t.n + excluded.n, failures = t.failures + excluded.failures,"
                    " degraded = t.degraded + excluded.degraded,"
                    " latency_sum = t.latency_sum + excluded.latency_sum"
                ),
                aggs,
            )
            await cur.executemany(
                self._q(
                    "INSERT INTO {s}.minute_bucket AS t (minute, series_id, le, n) VALUES (%s, %s, %s, %s)"
                    " ON CONFLICT (minute, series_id, le) DO UPDATE SET n = t.n + excluded.n"
                ),
                buckets,
            )
            await cur.executemany(
                self._q(
                    "INSERT INTO {s}.minute_sketch AS t (minute, series_id, bin, n) VALUES (%s, %s, %s, %s)"
                    " ON CONFLICT (minute, series_id, bin) DO UPDATE SET n = t.n + excluded.n"
                ),
                bins,
            )
            if obs:
                # last: the value with the greatest timestamp wins, whichever writer commits first.
                await cur.executemany(
                    self._q(
                        "INSERT INTO {s}.obs_minute AS t (minute, series_id, n, total, lo, hi, last, last_at)"
                        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
                        " ON CONFLICT (minute, series_id) DO UPDATE SET"
                        " n = t.n + excluded.n, total = t.total + excluded.total,"
                        " lo = LEAST(t.lo, excluded.lo), hi = GREATEST(t.hi, excluded.hi),"
                        " last = CASE WHEN excluded.last_at >= t.last_at THEN excluded.last ELSE t.last END,"
                        " last_at = GREATEST(t.last_at, excluded.last_at)"
                    ),
                    obs,
                )
            await cur.executemany(
                self._q(
                    "INSERT INTO {s}.latest AS t (series_id, probe, started_at, result)"
                    " VALUES (%s, %s, %s, %s)"
                    " ON CONFLICT (series_id) DO UPDATE SET probe = excluded.probe,"
                    " started_at = excluded.started_at, result = excluded.result"
                    " WHERE excluded.started_at >= t.started_at"
                ),
                latest,
            )
            await cur.executemany(
                self._q("INSERT INTO {s}.raw_result (probe, started_at, result) VALUES (%s, %s, %s)"),
                [(r.probe, r.started_at, result_to_json(r)) for r in batch.raw],
            )
        return ids

    async def _select_series(
        self,
        conn: Conn,
        kind: str,
        probe: str | None,
        name: str | None,
        labels: Mapping[str, str] | None,
    ) -> tuple[dict[int, SeriesInfo], list[int] | None]:
        """Matching series and, when the query is restricted, their ids (None = every series)."""
        query = self._q(
            "SELECT id, kind, skey, probe, name, labels FROM {s}.series WHERE kind = %(kind)s"
            " AND (%(probe)s::text IS NULL OR probe = %(probe)s)"
            " AND (%(name)s::text IS NULL OR name = %(name)s)"
        )
        cur = await conn.execute(query, {"kind": kind, "probe": probe, "name": name})
        series = filter_series(await cur.fetchall(), labels)
        restricted = probe is not None or name is not None or bool(labels)
        return series, (sorted(series) if restricted else None)

    async def _snapshot(self, conn: Conn) -> None:
        # Several selects in one snapshot: buckets always match their aggregate rows.
        await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")

    async def minutes(
        self,
        start_minute: int,
        end_minute: int,
        probe: str | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> list[MinuteAggregate]:
        if end_minute <= start_minute:
            return []

        async def _read(conn: Conn) -> list[MinuteAggregate]:
            async with conn.transaction():
                await self._snapshot(conn)
                series, ids = await self._select_series(conn, RESULT_SERIES, probe, None, labels)
                if not series:
                    return []
                params = {"start": start_minute, "end": end_minute, "ids": ids}
                cur = await conn.execute(
                    self._q(
                        "SELECT minute, series_id, n, failures, degraded, latency_sum FROM {s}.minute_agg"
                        " WHERE minute >= %(start)s AND minute < %(end)s"
                        " AND (%(ids)s::bigint[] IS NULL OR series_id = ANY(%(ids)s::bigint[]))"
                        " ORDER BY minute, series_id"
                    ),
                    params,
                )
                # bigint and double precision already arrive as int and float.
                aggs = cast(list[AggRow], await cur.fetchall())
                cur = await conn.execute(
                    self._q(
                        "SELECT minute, series_id, le, n FROM {s}.minute_bucket"
                        " WHERE minute >= %(start)s AND minute < %(end)s"
                        " AND (%(ids)s::bigint[] IS NULL OR series_id = ANY(%(ids)s::bigint[]))"
                        " ORDER BY minute, series_id, le"
                    ),
                    params,
                )
                buckets = cast(list[BucketRow], await cur.fetchall())
            return merge_minute_rows(aggs, buckets, series)

        return await self._run("minutes", _read)

    async def observation_minutes(
        self,
        start_minute: int,
        end_minute: int,
        probe: str | None = None,
        name: str | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> list[ObservationMinute]:
        if end_minute <= start_minute:
            return []

        async def _read(conn: Conn) -> list[ObservationMinute]:
            async with conn.transaction():
                await self._snapshot(conn)
                series, ids = await self._select_series(conn, OBSERVATION_SERIES, probe, name, labels)
                if not series:
                    return []
                cur = await conn.execute(
                    self._q(
                        "SELECT minute, series_id, n, total, lo, hi, last, last_at FROM {s}.obs_minute"
                        " WHERE minute >= %(start)s AND minute < %(end)s"
                        " AND (%(ids)s::bigint[] IS NULL OR series_id = ANY(%(ids)s::bigint[]))"
                        " ORDER BY minute, series_id"
                    ),
                    {"start": start_minute, "end": end_minute, "ids": ids},
                )
                rows = cast(list[ObsRow], await cur.fetchall())
            return observation_rows(rows, series)

        return await self._run("observation_minutes", _read)

    async def latency_quantiles(
        self,
        start_minute: int,
        end_minute: int,
        quantiles: Sequence[float],
        probe: str | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> dict[float, float | None]:
        if end_minute <= start_minute:
            return quantiles_from_bins({}, quantiles)

        async def _read(conn: Conn) -> dict[int, int]:
            async with conn.transaction():
                await self._snapshot(conn)
                series, ids = await self._select_series(conn, RESULT_SERIES, probe, None, labels)
                if not series:
                    return {}
                cur = await conn.execute(
                    self._q(
                        "SELECT bin, sum(n) FROM {s}.minute_sketch"
                        " WHERE minute >= %(start)s AND minute < %(end)s"
                        " AND (%(ids)s::bigint[] IS NULL OR series_id = ANY(%(ids)s::bigint[]))"
                        " GROUP BY bin"
                    ),
                    {"start": start_minute, "end": end_minute, "ids": ids},
                )
                return {int(k): int(n) for k, n in await cur.fetchall()}

        return quantiles_from_bins(await self._run("latency_quantiles", _read), quantiles)

    async def latest(self, probe: str | None = None) -> list[ProbeResult]:
        async def _read(conn: Conn) -> list[ProbeResult]:
            cur = await conn.execute(
                self._q(
                    "SELECT l.result FROM {s}.latest l JOIN {s}.series s ON s.id = l.series_id"
                    ' WHERE %(probe)s::text IS NULL OR l.probe = %(probe)s ORDER BY s.skey COLLATE "C"'
                ),
                {"probe": probe},
            )
            return [result_from_json(row[0]) for row in await cur.fetchall()]

        return await self._run("latest", _read)

    async def recent(self, probe: str | None = None, limit: int = 100) -> list[ProbeResult]:
        if limit <= 0:
            return []

        async def _read(conn: Conn) -> list[ProbeResult]:
            if probe is None:
                cur = await conn.execute(
                    self._q("SELECT result FROM {s}.raw_result ORDER BY started_at DESC, id DESC LIMIT %s"),
                    (limit,),
                )
            else:
                cur = await conn.execute(
                    self._q(
                        "SELECT result FROM {s}.raw_result WHERE probe = %s"
                        " ORDER BY started_at DESC, id DESC LIMIT %s"
                    ),
                    (probe, limit),
                )
            return [result_from_json(row[0]) for row in await cur.fetchall()]

        return await self._run("recent", _read)

    async def prune(self, now: float) -> int:
        raw_cutoff = now - self._raw_retention_s
        minute_cutoff = minute_of(now - self._minute_retention_s)

        async def _prune(conn: Conn) -> int:
            async with conn.transaction():
                cur = await conn.execute(
                    self._q("DELETE FROM {s}.raw_result WHERE started_at < %s"), (raw_cutoff,)
                )
                removed = max(0, cur.rowcount)
                for table in ("minute_agg", "minute_bucket", "minute_sketch", "obs_minute"):
                    cur = await conn.execute(
                        sql.SQL("DELETE FROM {s}.{t} WHERE minute < %s").format(
                            s=sql.Identifier(self._schema), t=sql.Identifier(table)
                        ),
                        (minute_cutoff,),
                    )
                    removed += max(0, cur.rowcount)
            return removed

        return await self._run("prune", _prune)

    # -- coordination ----------------------------------------------------------------------------
    async def acquire_lease(self, name: str, holder: str, ttl_s: float, now: float) -> Lease | None:
        check_args_positive(ttl_s=ttl_s)

        async def _acquire(conn: Conn) -> Lease | None:
            # The DO UPDATE's WHERE is the check-and-set: no row comes back while another holder's lease
            # is unexpired. A concurrent first insert waits on the unique index, then takes that branch.
            cur = await conn.execute(
                self._q(
                    "INSERT INTO {s}.lease AS l (name, holder, expires_at) VALUES (%s, %s, %s)"
                    " ON CONFLICT (name) DO UPDATE SET"
                    " holder = excluded.holder, expires_at = excluded.expires_at"
                    " WHERE l.holder = excluded.holder OR l.expires_at <= %s"
                    " RETURNING l.name, l.holder, l.expires_at"
                ),
                (name, holder, now + ttl_s, now),
            )
            row = await cur.fetchone()
            return None if row is None else Lease(name=row[0], holder=row[1], expires_at=float(row[2]))

        return await self._run("acquire_lease", _acquire)

    async def release_lease(self, name: str, holder: str) -> None:
        async def _release(conn: Conn) -> None:
            await conn.execute(
                self._q("DELETE FROM {s}.lease WHERE name = %s AND holder = %s"), (name, holder)
            )

        await self._run("release_lease", _release)

    async def get_incident(self, key: str) -> Incident | None:
        async def _get(conn: Conn) -> Incident | None:
            cur = await conn.execute(
                self._q(
                    "SELECT incident_key, state, version, data, updated_at FROM {s}.incident"
                    " WHERE incident_key = %s"
                ),
                (key,),
            )
            row = await cur.fetchone()
            return None if row is None else incident(row[0], row[1], row[2], row[3], row[4])

        return await self._run("get_incident", _get)

    async def list_incidents(self, states: Sequence[str] | None = None) -> list[Incident]:
        async def _list(conn: Conn) -> list[Incident]:
            cur = await conn.execute(
                self._q(
                    "SELECT incident_key, state, version, data, updated_at FROM {s}.incident"
                    " WHERE %(states)s::text[] IS NULL OR state = ANY(%(states)s::text[])"
                    ' ORDER BY incident_key COLLATE "C"'
                ),
                {"states": None if states is None else list(states)},
            )
            return [incident(r[0], r[1], r[2], r[3], r[4]) for r in await cur.fetchall()]

        return await self._run("list_incidents", _list)

    async def transition_incident(
        self,
        key: str,
        expected_version: int | None,
        new_state: str,
        data: Mapping[str, Any],
        now: float,
        outbox: Sequence[OutboxEntry] = (),
    ) -> Incident | None:
        text = dumps(dict(data))
        entries = [(e.topic, dumps(dict(e.payload)), e.dedup_key, now, now + e.delay_s) for e in outbox]

        async def _transition(conn: Conn) -> Incident | None:
            async with conn.transaction():
                return await _cas(conn)

        async def _cas(conn: Conn) -> Incident | None:
            if expected_version is None:
                cur = await conn.execute(
                    self._q(
                        "INSERT INTO {s}.incident (incident_key, state, version, data, updated_at)"
                        " VALUES (%s, %s, 1, %s::jsonb, %s) ON CONFLICT (incident_key) DO NOTHING"
                        " RETURNING version, data"
                    ),
                    (key, new_state, text, now),
                )
            else:
                # Under READ COMMITTED a concurrent update of the same row makes this one re-check the
                # version after the other commits, so exactly one of them matches.
                cur = await conn.execute(
                    self._q(
                        "UPDATE {s}.incident SET state = %s, version = version + 1, data = %s::jsonb,"
                        " updated_at = %s WHERE incident_key = %s AND version = %s RETURNING version, data"
                    ),
                    (new_state, text, now, key, expected_version),
                )
            row = await cur.fetchone()
            if row is None:
                return None
            if entries:
                async with conn.cursor() as many:
                    await many.executemany(self._q(_ENQUEUE), entries)
            return incident(key, new_state, row[0], row[1], now)

        return await self._run("transition_incident", _transition)

    async def enqueue(
        self, topic: str, payload: Mapping[str, Any], dedup_key: str, now: float, delay_s: float = 0.0
    ) -> bool:
        text = dumps(dict(payload))

        async def _enqueue(conn: Conn) -> bool:
            cur = await conn.execute(
                self._q(_ENQUEUE + " RETURNING id"), (topic, text, dedup_key, now, now + delay_s)
            )
            return await cur.fetchone() is not None

        return await self._run("enqueue", _enqueue)

    async def claim(
        self, topic: str, worker: str, limit: int, lease_s: float, now: float
    ) -> list[OutboxItem]:
        check_args_positive(lease_s=lease_s)
        if limit <= 0:
            return []

        async def _claim(conn: Conn) -> list[OutboxItem]:
            # SKIP LOCKED: a concurrent claimer skips rows this one is taking instead of waiting for them;
            # a row claimed and committed meanwhile fails the re-checked claimed_until condition.
            cur = await conn.execute(
                self._q(
                    "UPDATE {s}.outbox AS o SET claimed_by = %(worker)s, claimed_until = %(until)s,"
                    " attempts = o.attempts + 1"
                    " FROM (SELECT id FROM {s}.outbox WHERE topic = %(topic)s AND done_at IS NULL"
                    " AND available_at <= %(now)s AND (claimed_until IS NULL OR claimed_until <= %(now)s)"
                    " ORDER BY available_at, id LIMIT %(limit)s FOR UPDATE SKIP LOCKED) AS c"
                    " WHERE o.id = c.id"
                )
                + sql.SQL(_OUTBOX_RETURNING),
                {"worker": worker, "until": now + lease_s, "topic": topic, "now": now, "limit": limit},
            )
            items = [
                OutboxItem(
                    id=int(r[0]),
                    topic=r[1],
                    payload=r[2],
                    dedup_key=r[3],
                    attempts=int(r[4]),
                    created_at=float(r[5]),
                    available_at=float(r[6]),
                )
                for r in await cur.fetchall()
            ]
            items.sort(key=lambda i: (i.available_at, i.id))
            return items

        return await self._run("claim", _claim)

    async def complete(self, item_id: int, worker: str, now: float) -> None:
        async def _complete(conn: Conn) -> None:
            await conn.execute(
                self._q(
                    "UPDATE {s}.outbox SET done_at = %s, claimed_until = NULL"
                    " WHERE id = %s AND claimed_by = %s AND done_at IS NULL"
                ),
                (now, item_id, worker),
            )

        await self._run("complete", _complete)

    async def retry_later(self, item_id: int, worker: str, error: str, retry_at: float) -> None:
        async def _retry(conn: Conn) -> None:
            await conn.execute(
                self._q(
                    "UPDATE {s}.outbox SET claimed_by = NULL, claimed_until = NULL,"
                    " available_at = %s, last_error = %s"
                    " WHERE id = %s AND claimed_by = %s AND done_at IS NULL"
                ),
                (retry_at, error, item_id, worker),
            )

        await self._run("retry_later", _retry)

    async def release_claims(self, worker: str) -> int:
        async def _release(conn: Conn) -> int:
            cur = await conn.execute(
                self._q(
                    "UPDATE {s}.outbox SET claimed_by = NULL, claimed_until = NULL"
                    " WHERE claimed_by = %s AND done_at IS NULL"
                ),
                (worker,),
            )
            return cur.rowcount

        return await self._run("release_claims", _release)

    # -- records ---------------------------------------------------------------------------------------
    async def put_record(self, kind: str, key: str, value: Mapping[str, Any], now: float) -> None:
        text = dumps(dict(value))

        async def _put(conn: Conn) -> None:
            await conn.execute(
                self._q(
                    "INSERT INTO {s}.record (kind, rkey, value, updated_at) VALUES (%s, %s, %s::jsonb, %s)"
                    " ON CONFLICT (kind, rkey) DO UPDATE SET value = excluded.value,"
                    " updated_at = excluded.updated_at"
                ),
                (kind, key, text, now),
            )

        await self._run("put_record", _put)

    async def get_record(self, kind: str, key: str) -> dict[str, Any] | None:
        async def _get(conn: Conn) -> dict[str, Any] | None:
            cur = await conn.execute(
                self._q("SELECT value FROM {s}.record WHERE kind = %s AND rkey = %s"), (kind, key)
            )
            row = await cur.fetchone()
            return None if row is None else dict(row[0])

        return await self._run("get_record", _get)

    async def list_records(self, kind: str) -> list[tuple[str, dict[str, Any]]]:
        async def _list(conn: Conn) -> list[tuple[str, dict[str, Any]]]:
            cur = await conn.execute(
                self._q('SELECT rkey, value FROM {s}.record WHERE kind = %s ORDER BY rkey COLLATE "C"'),
                (kind,),
            )
            return [(r[0], dict(r[1])) for r in await cur.fetchall()]

        return await self._run("list_records", _list)

    async def delete_record(self, kind: str, key: str) -> bool:
        async def _delete(conn: Conn) -> bool:
            cur = await conn.execute(
                self._q("DELETE FROM {s}.record WHERE kind = %s AND rkey = %s"), (kind, key)
            )
            return cur.rowcount > 0

        return await self._run("delete_record", _delete)

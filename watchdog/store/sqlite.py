"""SQLite StateStore (the embedded default): stdlib sqlite3 in WAL mode on one dedicated worker thread.

All sqlite calls run on a single-thread executor, so the event loop never blocks on a write, an fsync or a
WAL checkpoint, and the connection is only ever used by the thread that created it. Writes use
``BEGIN IMMEDIATE``: the write lock is taken up front, so two processes sharing the file queue on
busy_timeout instead of failing with SQLITE_BUSY when a read transaction tries to upgrade.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, TypeVar

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

SCHEMA_VERSION = 1

# Minute tables are WITHOUT ROWID and keyed (minute, series_id, ...): rows are clustered by time, so the
# SLO engine's "last few minutes" reads, the startup read of the whole window and prune's range delete are
# all range scans on the primary key with no secondary index to maintain.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS series (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    skey TEXT NOT NULL,
    probe TEXT NOT NULL,
    name TEXT NOT NULL,
    labels TEXT NOT NULL,
    UNIQUE (kind, skey)
);
CREATE TABLE IF NOT EXISTS minute_agg (
    minute INTEGER NOT NULL,
    series_id INTEGER NOT NULL,
    n INTEGER NOT NULL,
    failures INTEGER NOT NULL,
    degraded INTEGER NOT NULL,
    latency_sum REAL NOT NULL,
    PRIMARY KEY (minute, series_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS minute_bucket (
    minute INTEGER NOT NULL,
    series_id INTEGER NOT NULL,
    le REAL NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (minute, series_id, le)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS minute_sketch (
    minute INTEGER NOT NULL,
    series_id INTEGER NOT NULL,
    bin INTEGER NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (minute, series_id, bin)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS obs_minute (
    minute INTEGER NOT NULL,
    series_id INTEGER NOT NULL,
    n INTEGER NOT NULL,
    total REAL NOT NULL,
    lo REAL NOT NULL,
    hi REAL NOT NULL,
    last REAL NOT NULL,
    last_at REAL NOT NULL,
    PRIMARY KEY (minute, series_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS latest (
    series_id INTEGER PRIMARY KEY,
    probe TEXT NOT NULL,
    started_at REAL NOT NULL,
    result TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS raw_result (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    probe TEXT NOT NULL,
    started_at REAL NOT NULL,
    result TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS raw_result_started ON raw_result (started_at);
CREATE INDEX IF NOT EXISTS raw_result_probe ON raw_result (probe, started_at);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    payload TEXT NOT NULL,
    dedup_key TEXT NOT NULL UNIQUE,
    attempts INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    available_at REAL NOT NULL,
    claimed_by TEXT,
    claimed_until REAL,
    done_at REAL,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS outbox_ready ON outbox (topic, available_at) WHERE done_at IS NULL;
CREATE TABLE IF NOT EXISTS incident (
    incident_key TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    version INTEGER NOT NULL,
    data TEXT NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS incident_state ON incident (state);
CREATE TABLE IF NOT EXISTS lease (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS record (
    kind TEXT NOT NULL,
    rkey TEXT NOT NULL,
    value TEXT NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (kind, rkey)
);
"""

_ENQUEUE_SQL = (
    "INSERT INTO outbox (topic, payload, dedup_key, created_at, available_at)"
    " VALUES (?, ?, ?, ?, ?) ON CONFLICT (dedup_key) DO NOTHING"
)
_OUTBOX_COLUMNS = "id, topic, payload, dedup_key, attempts, created_at, available_at"


@contextmanager
def _transaction(conn: sqlite3.Connection, mode: str = "IMMEDIATE") -> Iterator[None]:
    conn.execute(f"BEGIN {mode}")
    try:
        yield
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _in_ids(ids: Iterable[int]) -> str:
    """Bind a list of ids as one JSON parameter (``IN (SELECT value FROM json_each(?))``), which avoids
    both SQLite's variable limit and building SQL text."""
    return json.dumps(sorted(ids))


def _outbox_item(row: Sequence[Any]) -> OutboxItem:
    return OutboxItem(
        id=int(row[0]),
        topic=row[1],
        payload=json.loads(row[2]),
        dedup_key=row[3],
        attempts=int(row[4]),
        created_at=float(row[5]),
        available_at=float(row[6]),
    )


class SqliteStore:
    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        latency_buckets: Iterable[float] = LATENCY_BUCKETS_S,
        raw_retention_s: float = DEFAULT_RAW_RETENTION_S,
        minute_retention_s: float = DEFAULT_MINUTE_RETENTION_S,
        busy_timeout_s: float = 5.0,
    ) -> None:
        check_args_positive(
            raw_retention_s=raw_retention_s,
            minute_retention_s=minute_retention_s,
            busy_timeout_s=busy_timeout_s,
        )
        self._path = os.fspath(path)
        self._edges = normalize_edges(latency_buckets)
        self._raw_retention_s = raw_retention_s
        self._minute_retention_s = minute_retention_s
        self._busy_timeout_s = busy_timeout_s
        self._executor: ThreadPoolExecutor | None = None
        # Owned by the worker thread only.
        self._conn: sqlite3.Connection | None = None
        self._series_ids: dict[tuple[str, str], int] = {}

    @property
    def path(self) -> str:
        return self._path

    # -- plumbing --------------------------------------------------------------------------------
    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        executor = self._executor
        if executor is None:
            raise StoreUnavailable(f"sqlite store {self._path} is not open")
        try:
            return await asyncio.get_running_loop().run_in_executor(executor, self._call, fn)
        except RuntimeError as e:  # closed while this call was being scheduled
            raise StoreUnavailable(f"sqlite store {self._path} is closed") from e

    def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._conn is None:
            raise StoreUnavailable(f"sqlite store {self._path} is not open")
        try:
            return fn(self._conn)
        except sqlite3.Error as e:
            raise StoreUnavailable(f"sqlite store {self._path}: {e}") from e

    def _connect(self) -> None:
        try:
            # isolation_level=None: we issue BEGIN/COMMIT ourselves (the stdlib's implicit transactions
            # would start DEFERRED ones). timeout= is sqlite's busy handler.
            conn = sqlite3.connect(self._path, timeout=self._busy_timeout_s, isolation_level=None)
        except (sqlite3.Error, OSError) as e:
            raise StoreUnavailable(f"cannot open sqlite store {self._path}: {e}") from e
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_s * 1000)}")
            conn.execute("PRAGMA journal_mode = WAL")
            # NORMAL in WAL mode: a power loss may drop the last commits but never corrupts the file; this is
            # telemetry we can afford to lose a second of, and it saves an fsync per batch.
            conn.execute("PRAGMA synchronous = NORMAL")
            self._migrate(conn)
        except sqlite3.Error as e:
            conn.close()
            raise StoreUnavailable(f"cannot open sqlite store {self._path}: {e}") from e
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def _migrate(self, conn: sqlite3.Connection) -> None:
        with _transaction(conn):
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
            version = row[0] if row else None
            if version is None:
                conn.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
            elif version > SCHEMA_VERSION:
                raise StoreUnavailable(
                    f"sqlite store {self._path} has schema version {version}, newer than this watchdog's "
                    f"{SCHEMA_VERSION}; upgrade the watchdog"
                )

    async def open(self) -> None:
        if self._executor is not None:
            return
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="watchdog-sqlite")
        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._connect)
        except BaseException:
            self._executor.shutdown(wait=False)
            self._executor = None
            raise

    async def close(self) -> None:
        executor = self._executor
        if executor is None:
            return

        def _close() -> None:
            if self._conn is not None:
                # Cheap on close, keeps the planner's statistics current for the long-lived file.
                with contextlib.suppress(sqlite3.Error):
                    self._conn.execute("PRAGMA optimize")
                self._conn.close()
                self._conn = None

        try:
            await asyncio.get_running_loop().run_in_executor(executor, _close)
        finally:
            self._executor = None
            executor.shutdown(wait=False)

    async def ping(self) -> None:
        # Reads a page of the file, unlike SELECT 1, so a vanished or unreadable file shows up here.
        await self._run(lambda conn: conn.execute("SELECT count(*) FROM schema_version").fetchone())

    # -- probe results ---------------------------------------------------------------------------
    async def record(self, results: Sequence[ProbeResult]) -> None:
        if not results:
            return
        # Pre-aggregate on the loop (pure Python, microseconds) so the worker holds the write lock briefly.
        batch = aggregate(results, self._edges)
        await self._run(lambda conn: self._record(conn, batch))

    def _ensure_series(
        self, conn: sqlite3.Connection, series: Mapping[tuple[str, str], SeriesInfo]
    ) -> dict[tuple[str, str], int]:
        ids: dict[tuple[str, str], int] = {}
        for sk, info in series.items():
            sid = self._series_ids.get(sk)
            if sid is None:
                conn.execute(
                    "INSERT OR IGNORE INTO series (kind, skey, probe, name, labels) VALUES (?, ?, ?, ?, ?)",
                    (info.kind, info.key, info.probe, info.name, dumps(info.labels)),
                )
                row = conn.execute("SELECT id FROM series WHERE kind = ? AND skey = ?", sk).fetchone()
                sid = int(row[0])
            ids[sk] = sid
        return ids

    def _record(self, conn: sqlite3.Connection, batch: Batch) -> None:
        with _transaction(conn):
            ids = self._ensure_series(conn, batch.series)
            rid = {key: sid for (kind, key), sid in ids.items() if kind == RESULT_SERIES}
            oid = {key: sid for (kind, key), sid in ids.items() if kind == OBSERVATION_SERIES}
            conn.executemany(
                "INSERT INTO minute_agg (minute, series_id, n, failures, degraded, latency_sum)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (minute, series_id) DO UPDATE SET"
                " n = n + excluded.n, failures = failures + excluded.failures,"
                " degraded = degraded + excluded.degraded, latency_sum = latency_sum + excluded.latency_sum",
                [
                    (minute, rid[skey], a.count, a.failures, a.degraded, a.latency_sum_s)
                    for (skey, minute), a in batch.aggs.items()
                ],
            )
            conn.executemany(
                "INSERT INTO minute_bucket (minute, series_id, le, n) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (minute, series_id, le) DO UPDATE SET n = n + excluded.n",
                [
                    (minute, rid[skey], le, n)
                    for (skey, minute), a in batch.aggs.items()
                    for le, n in a.buckets.items()
                ],
            )
            conn.executemany(
                "INSERT INTO minute_sketch (minute, series_id, bin, n) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (minute, series_id, bin) DO UPDATE SET n = n + excluded.n",
                [
                    (minute, rid[skey], k, n)
                    for (skey, minute), a in batch.aggs.items()
                    for k, n in a.sketch.items()
                ],
            )
            # last: the value with the greatest timestamp wins, whichever writer commits first.
            conn.executemany(
                "INSERT INTO obs_minute (minute, series_id, n, total, lo, hi, last, last_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (minute, series_id) DO UPDATE SET"
                " n = n + excluded.n, total = total + excluded.total,"
                " lo = min(lo, excluded.lo), hi = max(hi, excluded.hi),"
                " last = CASE WHEN excluded.last_at >= last_at THEN excluded.last ELSE last END,"
                " last_at = max(last_at, excluded.last_at)",
                [
                    (minute, oid[okey], o.count, o.sum, o.min, o.max, o.last, o.last_at)
                    for (okey, minute), o in batch.obs.items()
                ],
            )
            # Every latest result is also a raw one: encode each result once.
            text = {id(r): result_to_json(r) for r in batch.raw}
            conn.executemany(
                "INSERT INTO latest (series_id, probe, started_at, result) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (series_id) DO UPDATE SET probe = excluded.probe,"
                " started_at = excluded.started_at, result = excluded.result"
                " WHERE excluded.started_at >= latest.started_at",
                [(rid[skey], r.probe, r.started_at, text[id(r)]) for skey, r in batch.latest.items()],
            )
            conn.executemany(
                "INSERT INTO raw_result (probe, started_at, result) VALUES (?, ?, ?)",
                [(r.probe, r.started_at, text[id(r)]) for r in batch.raw],
            )
        # Only cache ids once committed: a rolled-back insert would leave a dangling id behind.
        self._series_ids.update(ids)

    def _select_series(
        self,
        conn: sqlite3.Connection,
        kind: str,
        probe: str | None,
        name: str | None,
        labels: Mapping[str, str] | None,
    ) -> tuple[dict[int, SeriesInfo], str | None]:
        """Matching series and, when the query is restricted, the id list to bind (None = all series)."""
        sql = "SELECT id, kind, skey, probe, name, labels FROM series WHERE kind = ?"
        params: list[Any] = [kind]
        if probe is not None:
            sql += " AND probe = ?"
            params.append(probe)
        if name is not None:
            sql += " AND name = ?"
            params.append(name)
        series = filter_series(conn.execute(sql, params), labels)
        restricted = probe is not None or name is not None or bool(labels)
        return series, (_in_ids(series) if restricted else None)

    async def minutes(
        self,
        start_minute: int,
        end_minute: int,
        probe: str | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> list[MinuteAggregate]:
        if end_minute <= start_minute:
            return []

        def _read(conn: sqlite3.Connection) -> list[MinuteAggregate]:
            # One read transaction: both selects see the same snapshot, so buckets match their rows.
            with _transaction(conn, "DEFERRED"):
                series, ids = self._select_series(conn, RESULT_SERIES, probe, None, labels)
                if not series:
                    return []
                where, params = _minute_range(start_minute, end_minute, ids)
                aggs: list[AggRow] = conn.execute(
                    "SELECT minute, series_id, n, failures, degraded, latency_sum FROM minute_agg"
                    f" WHERE {where} ORDER BY minute, series_id",
                    params,
                ).fetchall()
                buckets: list[BucketRow] = conn.execute(
                    f"SELECT minute, series_id, le, n FROM minute_bucket WHERE {where}"
                    " ORDER BY minute, series_id, le",
                    params,
                ).fetchall()
            return merge_minute_rows(aggs, buckets, series)

        return await self._run(_read)

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

        def _read(conn: sqlite3.Connection) -> list[ObservationMinute]:
            with _transaction(conn, "DEFERRED"):
                series, ids = self._select_series(conn, OBSERVATION_SERIES, probe, name, labels)
                if not series:
                    return []
                where, params = _minute_range(start_minute, end_minute, ids)
                rows: list[ObsRow] = conn.execute(
                    "SELECT minute, series_id, n, total, lo, hi, last, last_at FROM obs_minute"
                    f" WHERE {where} ORDER BY minute, series_id",
                    params,
                ).fetchall()
            return observation_rows(rows, series)

        return await self._run(_read)

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

        def _read(conn: sqlite3.Connection) -> dict[int, int]:
            with _transaction(conn, "DEFERRED"):
                series, ids = self._select_series(conn, RESULT_SERIES, probe, None, labels)
                if not series:
                    return {}
                where, params = _minute_range(start_minute, end_minute, ids)
                rows = conn.execute(
                    f"SELECT bin, sum(n) FROM minute_sketch WHERE {where} GROUP BY bin", params
                ).fetchall()
            return {int(k): int(n) for k, n in rows}

        return quantiles_from_bins(await self._run(_read), quantiles)

    async def latest(self, probe: str | None = None) -> list[ProbeResult]:
        sql = "SELECT l.result FROM latest l JOIN series s ON s.id = l.series_id"
        params: tuple[Any, ...] = ()
        if probe is not None:
            sql += " WHERE l.probe = ?"
            params = (probe,)
        sql += " ORDER BY s.skey"
        rows = await self._run(lambda conn: conn.execute(sql, params).fetchall())
        return [result_from_json(row[0]) for row in rows]

    async def recent(self, probe: str | None = None, limit: int = 100) -> list[ProbeResult]:
        if limit <= 0:
            return []
        sql = "SELECT result FROM raw_result"
        params: tuple[Any, ...] = (limit,)
        if probe is not None:
            sql += " WHERE probe = ?"
            params = (probe, limit)
        sql += " ORDER BY started_at DESC, id DESC LIMIT ?"
        rows = await self._run(lambda conn: conn.execute(sql, params).fetchall())
        return [result_from_json(row[0]) for row in rows]

    async def prune(self, now: float) -> int:
        raw_cutoff = now - self._raw_retention_s
        minute_cutoff = minute_of(now - self._minute_retention_s)

        def _prune(conn: sqlite3.Connection) -> int:
            with _transaction(conn):
                removed = conn.execute("DELETE FROM raw_result WHERE started_at < ?", (raw_cutoff,)).rowcount
                for table in ("minute_agg", "minute_bucket", "minute_sketch", "obs_minute"):
                    cur = conn.execute(f"DELETE FROM {table} WHERE minute < ?", (minute_cutoff,))
                    removed += cur.rowcount
            return int(removed)

        return await self._run(_prune)

    # -- coordination ----------------------------------------------------------------------------
    async def acquire_lease(self, name: str, holder: str, ttl_s: float, now: float) -> Lease | None:
        check_args_positive(ttl_s=ttl_s)

        def _acquire(conn: sqlite3.Connection) -> Lease | None:
            with _transaction(conn):
                # The DO UPDATE's WHERE makes it a check-and-set: no row comes back when someone else
                # holds an unexpired lease.
                row = conn.execute(
                    "INSERT INTO lease (name, holder, expires_at) VALUES (?, ?, ?)"
                    " ON CONFLICT (name) DO UPDATE SET"
                    " holder = excluded.holder, expires_at = excluded.expires_at"
                    " WHERE lease.holder = excluded.holder OR lease.expires_at <= ?"
                    " RETURNING name, holder, expires_at",
                    (name, holder, now + ttl_s, now),
                ).fetchone()
            return None if row is None else Lease(name=row[0], holder=row[1], expires_at=float(row[2]))

        return await self._run(_acquire)

    async def release_lease(self, name: str, holder: str) -> None:
        def _release(conn: sqlite3.Connection) -> None:
            with _transaction(conn):
                conn.execute("DELETE FROM lease WHERE name = ? AND holder = ?", (name, holder))

        await self._run(_release)

    async def get_incident(self, key: str) -> Incident | None:
        row = await self._run(
            lambda conn: conn.execute(
                "SELECT incident_key, state, version, data, updated_at FROM incident WHERE incident_key = ?",
                (key,),
            ).fetchone()
        )
        return None if row is None else incident(row[0], row[1], row[2], json.loads(row[3]), row[4])

    async def list_incidents(self, states: Sequence[str] | None = None) -> list[Incident]:
        sql = "SELECT incident_key, state, version, data, updated_at FROM incident"
        params: tuple[Any, ...] = ()
        if states is not None:
            sql += " WHERE state IN (SELECT value FROM json_each(?))"
            params = (json.dumps(list(states)),)
        sql += " ORDER BY incident_key"
        rows = await self._run(lambda conn: conn.execute(sql, params).fetchall())
        return [incident(r[0], r[1], r[2], json.loads(r[3]), r[4]) for r in rows]

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

        def _transition(conn: sqlite3.Connection) -> Incident | None:
            with _transaction(conn):
                if expected_version is None:
                    row = conn.execute(
                        "INSERT INTO incident (incident_key, state, version, data, updated_at)"
                        " VALUES (?, ?, 1, ?, ?) ON CONFLICT (incident_key) DO NOTHING RETURNING version",
                        (key, new_state, text, now),
                    ).fetchone()
                else:
                    row = conn.execute(
                        "UPDATE incident SET state = ?, version = version + 1, data = ?, updated_at = ?"
                        " WHERE incident_key = ? AND version = ? RETURNING version",
                        (new_state, text, now, key, expected_version),
                    ).fetchone()
                if row is not None and entries:
                    conn.executemany(_ENQUEUE_SQL, entries)
            return None if row is None else incident(key, new_state, row[0], json.loads(text), now)

        return await self._run(_transition)

    async def enqueue(
        self, topic: str, payload: Mapping[str, Any], dedup_key: str, now: float, delay_s: float = 0.0
    ) -> bool:
        text = dumps(dict(payload))

        def _enqueue(conn: sqlite3.Connection) -> bool:
            with _transaction(conn):
                row = conn.execute(
                    _ENQUEUE_SQL + " RETURNING id", (topic, text, dedup_key, now, now + delay_s)
                ).fetchone()
            return row is not None

        return await self._run(_enqueue)

    async def claim(
        self, topic: str, worker: str, limit: int, lease_s: float, now: float
    ) -> list[OutboxItem]:
        check_args_positive(lease_s=lease_s)
        if limit <= 0:
            return []

        def _claim(conn: sqlite3.Connection) -> list[OutboxItem]:
            # BEGIN IMMEDIATE serialises claimers across processes: the select and the update see the same
            # state, so no item is handed out twice.
            with _transaction(conn):
                rows = conn.execute(
                    "UPDATE outbox SET claimed_by = ?, claimed_until = ?, attempts = attempts + 1"
                    " WHERE id IN (SELECT id FROM outbox WHERE topic = ? AND done_at IS NULL"
                    " AND available_at <= ? AND (claimed_until IS NULL OR claimed_until <= ?)"
                    " ORDER BY available_at, id LIMIT ?)"
                    f" RETURNING {_OUTBOX_COLUMNS}",
                    (worker, now + lease_s, topic, now, now, limit),
                ).fetchall()
            items = [_outbox_item(r) for r in rows]
            items.sort(key=lambda i: (i.available_at, i.id))
            return items

        return await self._run(_claim)

    async def complete(self, item_id: int, worker: str, now: float) -> None:
        def _complete(conn: sqlite3.Connection) -> None:
            with _transaction(conn):
                conn.execute(
                    "UPDATE outbox SET done_at = ?, claimed_until = NULL"
                    " WHERE id = ? AND claimed_by = ? AND done_at IS NULL",
                    (now, item_id, worker),
                )

        await self._run(_complete)

    async def retry_later(self, item_id: int, worker: str, error: str, retry_at: float) -> None:
        def _retry(conn: sqlite3.Connection) -> None:
            with _transaction(conn):
                conn.execute(
                    "UPDATE outbox SET claimed_by = NULL, claimed_until = NULL,"
                    " available_at = ?, last_error = ?"
                    " WHERE id = ? AND claimed_by = ? AND done_at IS NULL",
                    (retry_at, error, item_id, worker),
                )

        await self._run(_retry)

    async def release_claims(self, worker: str) -> int:
        def _release(conn: sqlite3.Connection) -> int:
            with _transaction(conn):
                cur = conn.execute(
                    "UPDATE outbox SET claimed_by = NULL, claimed_until = NULL"
                    " WHERE claimed_by = ? AND done_at IS NULL",
                    (worker,),
                )
            return cur.rowcount

        return await self._run(_release)

    # -- records ---------------------------------------------------------------------------------------
    async def put_record(self, kind: str, key: str, value: Mapping[str, Any], now: float) -> None:
        text = dumps(dict(value))

        def _put(conn: sqlite3.Connection) -> None:
            with _transaction(conn):
                conn.execute(
                    "INSERT INTO record (kind, rkey, value, updated_at) VALUES (?, ?, ?, ?)"
                    " ON CONFLICT (kind, rkey) DO UPDATE SET value = excluded.value,"
                    " updated_at = excluded.updated_at",
                    (kind, key, text, now),
                )

        await self._run(_put)

    async def get_record(self, kind: str, key: str) -> dict[str, Any] | None:
        row = await self._run(
            lambda conn: conn.execute(
                "SELECT value FROM record WHERE kind = ? AND rkey = ?", (kind, key)
            ).fetchone()
        )
        return None if row is None else dict(json.loads(row[0]))

    async def list_records(self, kind: str) -> list[tuple[str, dict[str, Any]]]:
        rows = await self._run(
            lambda conn: conn.execute(
                "SELECT rkey, value FROM record WHERE kind = ? ORDER BY rkey", (kind,)
            ).fetchall()
        )
        return [(r[0], dict(json.loads(r[1]))) for r in rows]

    async def delete_record(self, kind: str, key: str) -> bool:
        def _delete(conn: sqlite3.Connection) -> bool:
            with _transaction(conn):
                cur = conn.execute("DELETE FROM record WHERE kind = ? AND rkey = ?", (kind, key))
            return cur.rowcount > 0

        return await self._run(_delete)


def _minute_range(start_minute: int, end_minute: int, ids: str | None) -> tuple[str, list[Any]]:
    """WHERE clause and parameters for [start, end) minutes, optionally of some series (a JSON id list)."""
    where = "minute >= ? AND minute < ?"
    params: list[Any] = [start_minute, end_minute]
    if ids is not None:
        where += " AND series_id IN (SELECT value FROM json_each(?))"
        params.append(ids)
    return where, params

"""The DB data path of the reference service: a minimal slice of ai-square's schema v3.

Tables: ``scenarios`` (mode is the ``learning_mode`` enum on PostgreSQL), ``domains``, ``scenario_domains``
and, because the KSA framework has no v3 table but the DB path must serve it too, ``ksa_sections``,
``ksa_themes`` and ``ksa_codes``. Both engines are seeded from the YAML content at startup with upserts,
so restarting against the same database is harmless.

PostgreSQL goes through asyncpg (bounded pool, connect and statement timeouts); without a DSN an embedded
SQLite file is used, queried in worker threads so the event loop never blocks on it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import asyncpg

from watchdog.demo.content import (
    MODES,
    Competency,
    Content,
    Domain,
    KsaCode,
    KsaSection,
    KsaTheme,
    Mode,
    Scenario,
)

log = logging.getLogger(__name__)

Row = Mapping[str, Any]


class DatabaseError(Exception):
    """A query on the DB data path failed."""


class DatabaseUnavailable(DatabaseError):
    """The database cannot be reached at all."""


class ContentDatabase(Protocol):
    kind: str
    """``postgresql`` or ``sqlite``."""

    async def start(self, content: Content) -> None:
        """Connect, create the schema and seed it; raise DatabaseError if the database is unusable."""
        ...

    async def ping(self) -> None:
        """``SELECT 1``."""
        ...

    async def scenarios(self, mode: Mode) -> list[Scenario]: ...

    async def domains(self) -> list[Domain]: ...

    async def ksa(self) -> list[KsaSection]: ...

    async def close(self) -> None: ...


# --- schema and seed (shared SQL, `?` placeholders) --------------------------------------------------

_SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS scenarios (
    id TEXT PRIMARY KEY,
    mode TEXT NOT NULL CHECK (mode IN ('pbl', 'discovery', 'assessment')),
    status TEXT NOT NULL DEFAULT 'active',
    source_type TEXT NOT NULL DEFAULT 'yaml',
    source_id TEXT NOT NULL,
    title TEXT NOT NULL,
    description TEXT NOT NULL,
    difficulty TEXT,
    estimated_minutes INTEGER,
    task_count INTEGER NOT NULL DEFAULT 0,
    mode_data TEXT NOT NULL DEFAULT '{}',
    display_order INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP
);
CREATE TABLE IF NOT EXISTS domains (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    emoji TEXT,
    competencies TEXT NOT NULL DEFAULT '[]',
    display_order INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS scenario_domains (
    scenario_id TEXT NOT NULL REFERENCES scenarios(id) ON DELETE CASCADE,
    domain_id TEXT NOT NULL,
    is_primary INTEGER NOT NULL DEFAULT 0,
    display_order INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (scenario_id, domain_id)
);
CREATE TABLE IF NOT EXISTS ksa_sections (
    category TEXT PRIMARY KEY,
    description TEXT NOT NULL,
    display_order INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS ksa_themes (
    id TEXT PRIMARY KEY,
    category TEXT NOT NULL REFERENCES ksa_sections(category),
    explanation TEXT NOT NULL,
    display_order INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS ksa_codes (
    code TEXT PRIMARY KEY,
    theme_id TEXT NOT NULL REFERENCES ksa_themes(id),
    summary TEXT NOT NULL,
    display_order INTEGER NOT NULL DEFAULT 0
);
"""

# The v3 schema keeps per-mode payloads in pbl_data/discovery_data/assessment_data; one JSONB column
# named after the mode is the slice this service needs, so it is stored per mode in ``mode_data``.
_POSTGRES_SCHEMA = """
DO $$ BEGIN
    CREATE TYPE learning_mode AS ENUM ('pbl', 'discovery', 'assessment');
EXCEPTION WHEN duplicate_object THEN NULL;
END $$;
CREATE TABLE IF NOT EXISTS scenarios (
    id UUID PRIMARY KEY,
    mode learning_mode NOT NULL,
    status TEXT NOT NULL DEFAULT 'active',
    source_type TEXT NOT NULL DEFAULT 'yaml',
    source_id TEXT NOT NULL,
    title JSONB NOT NULL,
    description JSONB NOT NULL,
    difficulty TEXT,
    estimated_minutes INTEGER,
    task_count INTEGER NOT NULL DEFAULT 0,
    mode_data JSONB NOT NULL DEFAULT '{}',
    display_order INTEGER NOT NULL DEFAULT 0,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS idx_scenarios_mode ON scenarios (mode, display_order);
CREATE TABLE IF NOT EXISTS domains (
    id TEXT PRIMARY KEY,
    name JSONB NOT NULL,
    description JSONB NOT NULL,
    emoji TEXT,
    competencies JSONB NOT NULL DEFAULT '[]',
    display_order INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS scenario_domains (
    scenario_id UUID NOT NULL REFERENCES scenarios(id) ON DELETE CASCADE,
    domain_id TEXT NOT NULL,
    is_primary BOOLEAN NOT NULL DEFAULT false,
    display_order INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (scenario_id, domain_id)
);
CREATE TABLE IF NOT EXISTS ksa_sections (
    category TEXT PRIMARY KEY,
    description JSONB NOT NULL,
    display_order INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS ksa_themes (
    id TEXT PRIMARY KEY,
    category TEXT NOT NULL REFERENCES ksa_sections(category),
    explanation JSONB NOT NULL,
    display_order INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS ksa_codes (
    code TEXT PRIMARY KEY,
    theme_id TEXT NOT NULL REFERENCES ksa_themes(id),
    summary JSONB NOT NULL,
    display_order INTEGER NOT NULL DEFAULT 0
);
"""


def _upsert(table: str, columns: Sequence[str], key: Sequence[str]) -> str:
    updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c not in key)
    return (
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)}) "
        f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET {updates}"
    )


_SCENARIO_COLUMNS = (
    "id",
    "mode",
    "source_id",
    "title",
    "description",
    "difficulty",
    "estimated_minutes",
    "task_count",
    "mode_data",
    "display_order",
)


def _seed_statements(content: Content) -> list[tuple[str, list[tuple[Any, ...]]]]:
    """(SQL, rows) batches that upsert the YAML content; JSON columns are passed as JSON text."""

    def js(value: Any) -> str:
        return json.dumps(value, ensure_ascii=False, sort_keys=True)

    scenario_rows = [
        (
            s.id,
            s.mode,
            s.source_id,
            js(s.title),
            js(s.description),
            s.difficulty,
            s.estimated_minutes,
            s.task_count,
            js(s.mode_data),
            order,
        )
        for order, s in enumerate(content.scenarios)
    ]
    domain_rows = [
        (
            d.id,
            js(d.name),
            js(d.overview),
            d.emoji,
            js(
                [
                    {
                        "id": c.id,
                        "description": c.description,
                        "knowledge": c.knowledge,
                        "skills": c.skills,
                        "attitudes": c.attitudes,
                        "scenarios": c.scenarios,
                    }
                    for c in d.competencies
                ]
            ),
            order,
        )
        for order, d in enumerate(content.domains)
    ]
    link_rows = [
        (s.id, domain, index == 0, index)
        for s in content.scenarios
        for index, domain in enumerate(s.target_domains)
    ]
    section_rows = [(sec.category, js(sec.description), order) for order, sec in enumerate(content.ksa)]
    theme_rows = [
        (theme.id, sec.category, js(theme.explanation), order)
        for sec in content.ksa
        for order, theme in enumerate(sec.themes)
    ]
    code_rows = [
        (code.code, theme.id, js(code.summary), order)
        for sec in content.ksa
        for theme in sec.themes
        for order, code in enumerate(theme.codes)
    ]
    return [
        (_upsert("scenarios", _SCENARIO_COLUMNS, ["id"]), scenario_rows),
        (
            _upsert(
                "domains", ("id", "name", "description", "emoji", "competencies", "display_order"), ["id"]
            ),
            domain_rows,
        ),
        (
            _upsert(
                "scenario_domains",
                ("scenario_id", "domain_id", "is_primary", "display_order"),
                ["scenario_id", "domain_id"],
            ),
            link_rows,
        ),
        (_upsert("ksa_sections", ("category", "description", "display_order"), ["category"]), section_rows),
        (_upsert("ksa_themes", ("id", "category", "explanation", "display_order"), ["id"]), theme_rows),
        (_upsert("ksa_codes", ("code", "theme_id", "summary", "display_order"), ["code"]), code_rows),
    ]


_SELECT_SCENARIOS = (
    "SELECT id, mode, source_id, title, description, difficulty, estimated_minutes, task_count, mode_data "
    "FROM scenarios WHERE mode = ? AND status = 'active' ORDER BY display_order"
)
_SELECT_LINKS = (
    "SELECT sd.scenario_id, sd.domain_id FROM scenario_domains sd "
    "JOIN scenarios s ON s.id = sd.scenario_id WHERE s.mode = ? ORDER BY sd.display_order"
)
_SELECT_DOMAINS = "SELECT id, name, description, emoji, competencies FROM domains ORDER BY display_order"
_SELECT_KSA = (
    "SELECT s.category, s.description AS section_description, t.id AS theme_id, t.explanation, "
    "c.code, c.summary FROM ksa_sections s "
    "JOIN ksa_themes t ON t.category = s.category "
    "JOIN ksa_codes c ON c.theme_id = t.id "
    "ORDER BY s.display_order, t.display_order, c.display_order"
)


def _json(value: Any) -> Any:
    # asyncpg returns JSONB as text by default and SQLite stores text: decode in one place.
    return json.loads(value) if isinstance(value, str) else value


def _to_scenarios(mode: Mode, rows: Iterable[Row], links: Iterable[Row]) -> list[Scenario]:
    domains: dict[str, list[str]] = {}
    for link in links:
        domains.setdefault(str(link["scenario_id"]), []).append(str(link["domain_id"]))
    return [
        Scenario(
            id=str(row["id"]),
            source_id=str(row["source_id"]),
            mode=mode,
            title=_json(row["title"]),
            description=_json(row["description"]),
            difficulty=str(row["difficulty"]),
            estimated_minutes=int(row["estimated_minutes"]),
            target_domains=tuple(domains.get(str(row["id"]), ())),
            task_count=int(row["task_count"]),
            mode_data=_json(row["mode_data"]),
        )
        for row in rows
    ]


def _to_domains(rows: Iterable[Row]) -> list[Domain]:
    return [
        Domain(
            id=str(row["id"]),
            name=_json(row["name"]),
            overview=_json(row["description"]),
            emoji=str(row["emoji"] or ""),
            competencies=tuple(
                Competency(
                    id=c["id"],
                    description=c["description"],
                    knowledge=tuple(c["knowledge"]),
                    skills=tuple(c["skills"]),
                    attitudes=tuple(c["attitudes"]),
                    scenarios=tuple(c["scenarios"]),
                )
                for c in _json(row["competencies"])
            ),
        )
        for row in rows
    ]


def _to_ksa(rows: Iterable[Row]) -> list[KsaSection]:
    sections: dict[str, tuple[Any, dict[str, tuple[Any, list[KsaCode]]]]] = {}
    for row in rows:
        _, themes = sections.setdefault(str(row["category"]), (_json(row["section_description"]), {}))
        _, codes = themes.setdefault(str(row["theme_id"]), (_json(row["explanation"]), []))
        codes.append(KsaCode(code=str(row["code"]), summary=_json(row["summary"])))
    return [
        KsaSection(
            category=category,
            description=description,
            themes=tuple(
                KsaTheme(id=theme_id, explanation=explanation, codes=tuple(codes))
                for theme_id, (explanation, codes) in themes.items()
            ),
        )
        for category, (description, themes) in sections.items()
    ]


# --- SQLite ------------------------------------------------------------------------------------------


class SqliteContentDatabase:
    """Embedded database for demos and tests; one short-lived connection per query in a worker thread
    (sqlite3 connections are bound to their thread, and opening a local file costs microseconds)."""

    kind = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=5.0)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA foreign_keys = ON")
        return conn

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        try:
            conn = self._connect()
            try:
                return [dict(row) for row in conn.execute(sql, params).fetchall()]
            finally:
                conn.close()
        except sqlite3.Error as exc:
            raise DatabaseError(f"sqlite: {exc}") from exc

    def _start(self, content: Content) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = self._connect()
            try:
                conn.execute("PRAGMA journal_mode = WAL")  # readers don't block the (rare) writer
                conn.executescript(_SQLITE_SCHEMA)
                with conn:
                    for sql, rows in _seed_statements(content):
                        conn.executemany(sql, rows)
            finally:
                conn.close()
        except sqlite3.Error as exc:
            raise DatabaseUnavailable(f"sqlite: {exc}") from exc

    async def start(self, content: Content) -> None:
        await asyncio.to_thread(self._start, content)

    async def ping(self) -> None:
        await asyncio.to_thread(self._query, "SELECT 1")

    async def scenarios(self, mode: Mode) -> list[Scenario]:
        rows = await asyncio.to_thread(self._query, _SELECT_SCENARIOS, (mode,))
        links = await asyncio.to_thread(self._query, _SELECT_LINKS, (mode,))
        return _to_scenarios(mode, rows, links)

    async def domains(self) -> list[Domain]:
        return _to_domains(await asyncio.to_thread(self._query, _SELECT_DOMAINS))

    async def ksa(self) -> list[KsaSection]:
        return _to_ksa(await asyncio.to_thread(self._query, _SELECT_KSA))

    async def close(self) -> None:
        return None


# --- PostgreSQL --------------------------------------------------------------------------------------


def _dollar(sql: str) -> str:
    """``?`` placeholders → asyncpg's ``$1, $2, …`` (none of our SQL has a literal question mark)."""
    counter = iter(range(1, 1000))
    return re.sub(r"\?", lambda _: f"${next(counter)}", sql)


class PostgresContentDatabase:
    """asyncpg pool against ``dsn``. The pool is small on purpose (a demo instance must not eat the
    connection headroom a real instance needs) and every statement is bounded by ``statement_timeout``."""

    kind = "postgresql"

    def __init__(
        self,
        dsn: str,
        *,
        max_connections: int = 5,
        connect_timeout: float = 2.0,
        statement_timeout_ms: int = 5000,
    ) -> None:
        self.dsn = dsn
        self.max_connections = max_connections
        self.connect_timeout = connect_timeout
        self.statement_timeout_ms = statement_timeout_ms
        self._pool: asyncpg.Pool | None = None
        self._content: Content | None = None
        """Kept so a database that was down at startup is created and seeded on first use."""
        self._lock = asyncio.Lock()

    async def _ensure_pool(self, content: Content | None = None) -> asyncpg.Pool:
        if self._pool is not None:
            return self._pool
        async with self._lock:
            if self._pool is None:
                try:
                    pool = await asyncpg.create_pool(
                        self.dsn,
                        min_size=1,
                        max_size=self.max_connections,
                        timeout=self.connect_timeout,
                        command_timeout=self.statement_timeout_ms / 1000 + 1,
                        server_settings={
                            "statement_timeout": str(self.statement_timeout_ms),
                            "application_name": "sre-watchdog-reference-service",
                        },
                    )
                except (
                    OSError,
                    asyncpg.PostgresError,
                    asyncpg.InterfaceError,
                    TimeoutError,
                    ValueError,
                ) as exc:
                    # ValueError/InterfaceError: a malformed DSN; still a DB-path failure, not a crash.
                    raise DatabaseUnavailable(f"postgresql: {exc}") from exc
                if content is not None:
                    try:
                        await self._seed(pool, content)
                    except BaseException:
                        await pool.close()
                        raise
                self._pool = pool
            return self._pool

    async def _seed(self, pool: asyncpg.Pool, content: Content) -> None:
        try:
            async with pool.acquire() as conn, conn.transaction():
                # Serialise concurrent seeders (several instances starting at once) on one lock.
                await conn.execute("SELECT pg_advisory_xact_lock(hashtext('sre-watchdog-refsvc-seed'))")
                await conn.execute(_POSTGRES_SCHEMA)
                for sql, rows in _seed_statements(content):
                    if rows:
                        await conn.executemany(_dollar(sql), rows)
        except (OSError, asyncpg.PostgresError) as exc:
            raise DatabaseError(f"postgresql: cannot create or seed the schema: {exc}") from exc

    async def start(self, content: Content) -> None:
        self._content = content
        await self._ensure_pool(content)

    async def _fetch(self, sql: str, *params: Any) -> list[Row]:
        pool = await self._ensure_pool(self._content)
        try:
            records = await pool.fetch(_dollar(sql), *params)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
            raise DatabaseError(f"postgresql: {exc}") from exc
        return [dict(record) for record in records]

    async def ping(self) -> None:
        await self._fetch("SELECT 1")

    async def scenarios(self, mode: Mode) -> list[Scenario]:
        if mode not in MODES:
            raise DatabaseError(f"unknown mode {mode!r}")
        rows = await self._fetch(_SELECT_SCENARIOS.replace("mode = ?", "mode = ?::learning_mode"), mode)
        links = await self._fetch(_SELECT_LINKS.replace("s.mode = ?", "s.mode = ?::learning_mode"), mode)
        return _to_scenarios(mode, rows, links)

    async def domains(self) -> list[Domain]:
        return _to_domains(await self._fetch(_SELECT_DOMAINS))

    async def ksa(self) -> list[KsaSection]:
        return _to_ksa(await self._fetch(_SELECT_KSA))

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()
